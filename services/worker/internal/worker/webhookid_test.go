package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/stream"
)

// publishBare publishes a completion the way any NATS client can: no Nats-Msg-Id, no other
// header, so the stream keeps every copy and the worker has to find the webhook-id itself.
func (h *harness) publishBare(customerID string, task map[string]any) {
	h.t.Helper()
	raw, err := json.Marshal(map[string]any{"customer_id": customerID, "task": task})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.js.Publish(context.Background(), stream.CompletedSubject(customerID), raw); err != nil {
		h.t.Fatal(err)
	}
}

// waitRequests waits until the receiver has n requests and returns their webhook-ids.
func waitRequests(t *testing.T, rc *testenv.Receiver, n int) []string {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() >= n },
		"the receiver gets %d callbacks", n)
	var ids []string
	for _, r := range rc.Requests() {
		ids = append(ids, r.Header.Get("webhook-id"))
	}
	return ids
}

func TestWebhookID_without_msg_id_is_the_same_for_a_republished_completion(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("cust_wid", rc.URL+"/hook")
	h.startWorker()

	first := task("t_republished", "")
	first["completed_at"] = "2016-06-23T21:54:44.904Z"
	h.publishBare("cust_wid", first)
	waitRequests(t, rc, 1)
	h.waitFinal("cust_wid", "t_republished", 10*time.Second)

	// The same completion published again, e.g. by a publisher retrying after a lost ack.
	h.publishBare("cust_wid", first)
	ids := waitRequests(t, rc, 2)
	if ids[0] == "" || ids[0] != ids[1] {
		t.Fatalf("webhook-ids of two copies of one completion: %q; want one non-empty id twice", ids)
	}

	// Completed again later: another completion, another id.
	later := task("t_republished", "")
	later["completed_at"] = "2016-06-24T08:00:00.000Z"
	h.publishBare("cust_wid", later)
	ids = waitRequests(t, rc, 3)
	if ids[2] == "" || ids[2] == ids[0] {
		t.Fatalf("webhook-id of a later completion of the task: %q, the earlier one's: %q; want a new id", ids[2], ids[0])
	}
}

func TestWebhookID_a_replay_keeps_the_id_derived_for_the_original(t *testing.T) {
	h := newHarness(t, nil)
	rc := testenv.NewReceiver(t, nil)
	h.newCustomer("cust_rep", rc.URL+"/hook")
	h.startWorker()

	tk := task("t_replayed", "")
	tk["completed_at"] = "2016-06-23T21:54:44.904Z"
	h.publishBare("cust_rep", tk)
	ids := waitRequests(t, rc, 1)
	h.waitFinal("cust_rep", "t_replayed", 10*time.Second)

	// An operator replays the same bytes, kept without a Nats-Msg-Id (as a refused event is).
	raw, _ := json.Marshal(map[string]any{"customer_id": "cust_rep", "task": tk})
	rep, err := h.pub.Replay(context.Background(), stream.CompletedSubject("cust_rep"), nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	if rep.WebhookID != ids[0] {
		t.Errorf("the replay announces webhook-id %q; the original's callback had %q", rep.WebhookID, ids[0])
	}
	ids = waitRequests(t, rc, 2)
	if ids[1] != ids[0] {
		t.Fatalf("webhook-id of the replayed callback %q; the original's %q", ids[1], ids[0])
	}
}
