package signing_test

import (
	"testing"
	"time"

	"refonte.ai/callbacks/pkg/signing"
)

// benchBody is a callback body of the contract example's size.
var benchBody = []byte(`{"task":{"task_id":"576c41bf13e36b0600b02b34","type":"categorization","status":"completed",` +
	`"instruction":"Is this object red or blue?","params":{"attachment_type":"text","attachment":"tomato",` +
	`"categories":["red","blue"]},"response":{"category":"red"},"metadata":{},` +
	`"callback_url":"http://www.example.com/callback","created_at":"2016-06-23T20:08:31.573Z",` +
	`"completed_at":"2016-06-23T21:54:44.904Z"},"response":{"category":"red"},` +
	`"task_id":"576c41bf13e36b0600b02b34","status":"completed"}`)

// BenchmarkSign signs one attempt, with the current secret alone and with two secrets during a
// rotation.
func BenchmarkSign(b *testing.B) {
	k1, err := signing.ParseSecret(signing.NewSecret())
	if err != nil {
		b.Fatal(err)
	}
	k2, _ := signing.ParseSecret(signing.NewSecret())
	ts := time.Now().Unix()
	for _, bc := range []struct {
		name string
		keys []signing.Key
	}{{"one_key", []signing.Key{k1}}, {"two_keys", []signing.Key{k1, k2}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(benchBody)))
			b.ReportAllocs()
			for b.Loop() {
				_ = signing.Sign("evt_576c41bf13e36b0600b02b34", ts, benchBody, bc.keys...)
			}
		})
	}
}

// BenchmarkParseSecret is the key set-up a profile does once when it is read (decode + keyed HMAC).
func BenchmarkParseSecret(b *testing.B) {
	secret := signing.NewSecret()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signing.ParseSecret(secret); err != nil {
			b.Fatal(err)
		}
	}
}
