package event_test

import (
	"testing"

	"refonte.ai/callbacks/pkg/event"
)

func TestDerivedWebhookID_depends_on_the_completion_only(t *testing.T) {
	base := event.DerivedWebhookID("cust_123", "live", "task_1", "2016-06-23T21:54:44.904Z")
	if base != event.DerivedWebhookID("cust_123", "live", "task_1", "2016-06-23T21:54:44.904Z") {
		t.Fatal("the same completion gave two ids")
	}
	if !event.ValidWebhookID(base) {
		t.Fatalf("derived id %q is not a valid webhook-id", base)
	}
	others := map[string]string{
		"customer":     event.DerivedWebhookID("cust_124", "live", "task_1", "2016-06-23T21:54:44.904Z"),
		"environment":  event.DerivedWebhookID("cust_123", "test", "task_1", "2016-06-23T21:54:44.904Z"),
		"task":         event.DerivedWebhookID("cust_123", "live", "task_2", "2016-06-23T21:54:44.904Z"),
		"completed_at": event.DerivedWebhookID("cust_123", "live", "task_1", "2016-06-23T21:54:45.904Z"),
		// The parts cannot be shifted into each other.
		"shifted": event.DerivedWebhookID("cust_123", "live", "task_", "12016-06-23T21:54:44.904Z"),
	}
	for name, id := range others {
		if id == base {
			t.Errorf("another %s gave the same id %q", name, id)
		}
	}
}

func TestCompletedAt_reads_the_task_field(t *testing.T) {
	for _, tc := range []struct{ event, want string }{
		{`{"customer_id":"c","task":{"task_id":"t","status":"completed","completed_at":"2016-06-23T21:54:44.904Z"}}`, "2016-06-23T21:54:44.904Z"},
		{`{"customer_id":"c","task":{"task_id":"t","status":"completed","completed_at":1466718884}}`, "1466718884"},
		{`{"customer_id":"c","task":{"task_id":"t","status":"completed"}}`, ""},
	} {
		ev, err := event.Decode([]byte(tc.event))
		if err != nil {
			t.Fatal(err)
		}
		if got := ev.CompletedAt(); got != tc.want {
			t.Errorf("CompletedAt of %s = %q, want %q", tc.event, got, tc.want)
		}
	}
}
