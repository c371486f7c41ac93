package webhook_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/target"
	"refonte.ai/callbacks/pkg/webhook"
)

// benchCallback is a callback body of the contract example's size.
var benchCallback = []byte(`{"task":{"task_id":"576c41bf13e36b0600b02b34","type":"categorization","status":"completed",` +
	`"instruction":"Is this object red or blue?","params":{"attachment_type":"text","attachment":"tomato",` +
	`"categories":["red","blue"]},"response":{"category":"red"},"metadata":{},` +
	`"callback_url":"http://www.example.com/callback","created_at":"2016-06-23T20:08:31.573Z",` +
	`"completed_at":"2016-06-23T21:54:44.904Z"},"response":{"category":"red"},` +
	`"task_id":"576c41bf13e36b0600b02b34","status":"completed"}`)

// BenchmarkDeliver is one attempt against a local receiver that reads the body and answers 200,
// over kept-alive connections: "sequential" one at a time, "parallel" 64 in flight (the
// receiver's cost is included in ns/op but not in allocs, which count the whole process).
func BenchmarkDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	tg, err := target.Parse(srv.URL + "/callback")
	if err != nil {
		b.Fatal(err)
	}
	s := webhook.New(webhook.Config{Timeout: 10 * time.Second, AllowPrivate: true,
		UserAgent: "Refonte-Callbacks/bench", MaxConnsPerHost: 64})
	m := delivery.Message{Target: tg, Body: benchCallback, CustomerID: "cust_123",
		TaskID: "576c41bf13e36b0600b02b34", Status: "completed", WebhookID: "evt_1", Timestamp: time.Now(),
		Signature: "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", AuthKey: "cbk_bench"}
	ctx := context.Background()
	one := func() {
		if res := s.Deliver(ctx, m); !res.OK() {
			b.Errorf("deliver: %v", res.Err)
		}
	}
	one() // open the first connection outside the measurement
	b.Run("sequential", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			one()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
	})
}
