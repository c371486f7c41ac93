package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/pkg/status"
)

// newEmailHarness is a harness whose worker mails through a fresh sink playing the relay.
func newEmailHarness(t *testing.T, vars map[string]string) (*harness, *testenv.SMTPSink) {
	t.Helper()
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	all := map[string]string{"SMTP_ADDR": sink.Addr}
	for k, v := range vars {
		all[k] = v
	}
	return newHarness(t, all), sink
}

// callbackBody is what an HTTP receiver would get for this task: the reference for the mail.
func callbackBody(t *testing.T, customerID string, task map[string]any) []byte {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"customer_id": customerID, "task": task})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := event.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return ev.CallbackBody()
}

func succeeded(rec status.Record) bool {
	return rec.State == status.Succeeded && rec.Succeeded != nil && *rec.Succeeded
}

func TestEmail_callback_is_one_mail_carrying_the_callback_JSON(t *testing.T) {
	for _, form := range []string{"a@b.example", "mailto:a@b.example"} {
		t.Run(form, func(t *testing.T) {
			h, sink := newEmailHarness(t, nil)
			prof := h.newCustomer("c1", "")
			h.startWorker()
			tk := task("t1", form)
			tk["instruction"] = "Est-ce rouge ou bleu ? « tomate »"
			h.publish("c1", tk)

			rec := h.waitFinal("c1", "t1", 10*time.Second)
			if !succeeded(rec) || len(rec.Log) != 1 || rec.Log[0].StatusCode != 250 {
				t.Fatalf("state %q, flag %v, log %+v; want succeeded after one attempt answered 250", rec.State, rec.Succeeded, rec.Log)
			}
			msgs := sink.Messages()
			if len(msgs) != 1 {
				t.Fatalf("the relay got %d messages, want 1", len(msgs))
			}
			got := msgs[0]
			if got.From != "hello@refonte.ai" || len(got.To) != 1 || got.To[0] != "a@b.example" {
				t.Errorf("envelope from %q to %q; want hello@refonte.ai to a@b.example", got.From, got.To)
			}
			header, body, err := got.Parse()
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]string{
				"From":       "<hello@refonte.ai>",
				"To":         "<a@b.example>",
				"Subject":    "Refonte.AI task t1 completed",
				"Webhook-Id": "evt_c1_t1",
			} {
				if v := header.Get(name); v != want {
					t.Errorf("header %s = %q, want %q", name, v, want)
				}
			}
			if header.Get("Message-Id") == "" || header.Get("Date") == "" {
				t.Errorf("Message-ID %q, Date %q; want both", header.Get("Message-Id"), header.Get("Date"))
			}
			want := callbackBody(t, "c1", tk)
			if string(body) != string(want)+"\r\n" {
				t.Fatalf("body:\n got %q\nwant %q and the final CRLF", body, want)
			}
			// A mail pipeline can verify the mail as a webhook receiver would.
			wh, err := standardwebhooks.NewWebhook(prof.SigningSecret)
			if err != nil {
				t.Fatal(err)
			}
			if err := wh.Verify(want, http.Header(header)); err != nil {
				t.Errorf("Standard Webhooks verifier rejects the mail: %v", err)
			}
		})
	}
}

func TestEmail_relay_answering_451_twice_then_accepting_gives_3_attempts(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	sink.RejectData(451, 2)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", "a@b.example"))

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if !succeeded(rec) {
		t.Fatalf("state %q, flag %v; want succeeded, true", rec.State, rec.Succeeded)
	}
	if len(rec.Log) != 3 || rec.Attempts != 3 {
		t.Fatalf("attempt log %+v (count %d); want 3 attempts", rec.Log, rec.Attempts)
	}
	for i, want := range []int{451, 451, 250} {
		if rec.Log[i].StatusCode != want {
			t.Errorf("attempt %d: status %d, want %d", i+1, rec.Log[i].StatusCode, want)
		}
	}
	if e := rec.Log[0].Error; !strings.Contains(e, "SMTP 451") || !strings.Contains(e, "sink refuses message 1") {
		t.Errorf("attempt 1 error = %q, want the relay's reply", e)
	}
	if sink.DataCommands() != 3 || sink.Count() != 1 {
		t.Errorf("relay saw %d messages and kept %d; want 3 and 1", sink.DataCommands(), sink.Count())
	}
}

func TestEmail_relay_always_answering_554_gives_21_attempts_and_false(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	sink.RejectData(554, testenv.Always)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", "mailto:a@b.example"))

	rec := h.waitFinal("c1", "t1", 30*time.Second)
	if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded {
		t.Fatalf("state %q, flag %v; want failed, false", rec.State, rec.Succeeded)
	}
	if len(rec.Log) != 21 || rec.Attempts != 21 {
		t.Errorf("attempt log has %d entries, count %d; want 21", len(rec.Log), rec.Attempts)
	}
	for _, a := range rec.Log {
		if a.StatusCode != 554 || !strings.Contains(a.Error, "SMTP 554") {
			t.Errorf("attempt %d: status %d, error %q; want the relay's 554", a.Attempt, a.StatusCode, a.Error)
			break
		}
	}
	if sink.DataCommands() != 21 || sink.Count() != 0 {
		t.Errorf("relay saw %d messages and kept %d; want 21 and 0", sink.DataCommands(), sink.Count())
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "the exhausted message is ended")
}

func TestEmail_profile_default_address_is_used(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	h.newCustomer("c1", "mailto:ops@b.example")
	h.startWorker()
	h.publish("c1", task("t1", ""))

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if !succeeded(rec) || rec.Target != "mailto:ops@b.example" {
		t.Fatalf("state %q, flag %v, target %q; want the default address, succeeded", rec.State, rec.Succeeded, rec.Target)
	}
	msgs := sink.Messages()
	if len(msgs) != 1 || len(msgs[0].To) != 1 || msgs[0].To[0] != "ops@b.example" {
		t.Fatalf("relay got %d messages (%+v); want one to ops@b.example", len(msgs), msgs)
	}
	if _, body, err := msgs[0].Parse(); err != nil || string(body) != string(callbackBody(t, "c1", task("t1", "")))+"\r\n" {
		t.Errorf("body %q (%v); want the callback JSON", body, err)
	}
}

// A resend (what the gateway's send-callback publishes) mails the same callback again.
func TestEmail_resend_mails_the_callback_again(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	tk := task("t1", "a@b.example")
	h.publish("c1", tk)
	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if !succeeded(rec) {
		t.Fatalf("first delivery: state %q", rec.State)
	}

	ev, err := event.Decode(h.storedEvent(rec))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.pub.Resend(context.Background(), ev, rec.WebhookID, ""); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool {
		r, ok := h.record("c1", "t1")
		return sink.Count() == 2 && ok && r.Delivery == 2 && succeeded(r)
	}, "the resend is mailed and recorded (relay has %d messages)", sink.Count())
	msgs := sink.Messages()
	h1, b1, _ := msgs[0].Parse()
	h2, b2, _ := msgs[1].Parse()
	if string(b1) != string(b2) || h1.Get("Webhook-Id") != h2.Get("Webhook-Id") {
		t.Errorf("the resend differs: webhook-id %q vs %q, bodies equal %v", h1.Get("Webhook-Id"), h2.Get("Webhook-Id"), string(b1) == string(b2))
	}
	if h1.Get("Message-Id") == h2.Get("Message-Id") {
		t.Errorf("both mails have Message-ID %s; a mail system would drop the resend as a duplicate", h1.Get("Message-Id"))
	}
}

// storedEvent rebuilds the completion event from a status record and the stream message it
// names, as the gateway does.
func (h *harness) storedEvent(rec status.Record) []byte {
	h.t.Helper()
	raw, err := json.Marshal(map[string]any{"customer_id": rec.CustomerID, "task": h.original(rec).Task})
	if err != nil {
		h.t.Fatal(err)
	}
	return raw
}

func TestEmail_without_SMTP_ADDR_fails_at_once(t *testing.T) {
	h := newHarness(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	h.publish("c1", task("t1", "a@b.example"))

	rec := h.waitFinal("c1", "t1", 10*time.Second)
	if rec.State != status.Failed || rec.Succeeded == nil || *rec.Succeeded {
		t.Fatalf("state %q, flag %v; want failed, false", rec.State, rec.Succeeded)
	}
	if len(rec.Log) != 1 || rec.Attempts != 1 || !strings.Contains(rec.Log[0].Error, "email callbacks are not configured") {
		t.Errorf("attempt log %+v (count %d); want one attempt saying email is not configured", rec.Log, rec.Attempts)
	}
	testenv.Eventually(t, 5*time.Second, func() bool {
		info := h.consumerInfo()
		return info.NumAckPending == 0 && info.NumPending == 0
	}, "the message is ended, not parked for a retry")
}

func TestEmail_header_injection_display_names_and_lists_are_refused_unsent(t *testing.T) {
	h, sink := newEmailHarness(t, nil)
	h.newCustomer("c1", "")
	h.startWorker()
	targets := []string{
		"a@b.example\r\nBcc: x@y.example",
		"mailto:a@b.example\r\nBcc: x@y.example",
		"a@b.example\nBcc: x@y.example",
		"Bob <a@b.example>",
		`"Bob" <a@b.example>`,
		"mailto:Bob <a@b.example>",
		"a@b.example,c@d.example",
		"a@b.example, c@d.example",
		"a@b.example;c@d.example",
		"mailto:a@b.example,c@d.example",
		"mailto:a@b.example?bcc=x@y.example",
		"mailto:a@b.example%0D%0ABcc:x@y.example",
	}
	ids := make([]string, len(targets))
	for i, tg := range targets {
		ids[i] = "t" + string(rune('a'+i))
		h.publish("c1", task(ids[i], tg))
	}
	for i, id := range ids {
		rec := h.waitFinal("c1", id, 10*time.Second)
		if rec.State != status.Failed || len(rec.Log) != 1 || !strings.Contains(rec.Log[0].Error, "unusable") {
			t.Errorf("%q: state %q, log %+v; want failed once as unusable", targets[i], rec.State, rec.Log)
		}
	}
	if n := sink.Sessions(); n != 0 {
		t.Errorf("the relay was contacted %d times; want never", n)
	}
}
