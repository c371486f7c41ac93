package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"refonte.ai/callbacks/internal/testenv"
)

// invalidEventView is GET /admin/v1/invalid-events/{id} (and, without headers and raw, an item
// of the list).
type invalidEventView struct {
	ID          string              `json:"id"`
	Subject     string              `json:"subject"`
	CustomerID  *string             `json:"customer_id"`
	Environment *string             `json:"environment"`
	Reason      string              `json:"reason"`
	Detail      string              `json:"detail"`
	ReceivedAt  time.Time           `json:"received_at"`
	RawBytes    int                 `json:"raw_bytes"`
	Truncated   bool                `json:"truncated"`
	Headers     map[string][]string `json:"headers"`
	RawEncoding string              `json:"raw_encoding"`
	Raw         *string             `json:"raw"`
}

type invalidEventList struct {
	Events     []invalidEventView `json:"events"`
	NextCursor *string            `json:"next_cursor"`
}

func (h *harness) admin(method, path string) response {
	h.t.Helper()
	return h.do(method, path, nil, bearer(h.adminToken))
}

func (h *harness) invalidEvents(query string) invalidEventList {
	h.t.Helper()
	res := h.admin("GET", "/admin/v1/invalid-events"+query)
	if res.Code != http.StatusOK {
		h.t.Fatalf("list invalid events%s: %d %s", query, res.Code, res.Body)
	}
	h.checkSchema("InvalidEventList", res.Body)
	var l invalidEventList
	unmarshal(h.t, res.Body, &l)
	return l
}

// publishRaw publishes bytes as an upstream service might, valid or not.
func (h *harness) publishRaw(subject, msgID string, data []byte) {
	h.t.Helper()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set("X-Upstream", "billing")
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		h.t.Fatal(err)
	}
}

func TestInvalidEvents_unknown_customer_is_kept_and_its_replay_is_delivered_once_the_customer_exists(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.startWorker()
	rc := testenv.NewReceiver(t, nil)

	body, _ := json.Marshal(map[string]any{"customer_id": "cust_new", "task": task("t1", rc.URL)})
	garbage := []byte{0xff, 0xfe, 'n', 'o', 't', 0x00, 'j', 's', 'o', 'n'}
	huge := bytes.Repeat([]byte("x"), 70<<10)
	var all invalidEventList
	// One at a time: a worker handles messages concurrently, and the list's order is the order
	// in which they were refused.
	for i, m := range []struct {
		subject, id string
		data        []byte
	}{
		{"tasks.completed.cust_new", "evt_new_1", body},
		{"tasks.completed.cust_x", "evt_bad_1", garbage},
		{"tasks.completed.cust_x", "evt_huge_1", huge},
	} {
		h.publishRaw(m.subject, m.id, m.data)
		testenv.Eventually(t, 10*time.Second, func() bool { all = h.invalidEvents(""); return len(all.Events) == i+1 },
			"refused event %s listed (last: %v)", m.id, latest(func() any { return all }))
	}
	if all.Events[0].RawBytes != 64<<10 || !all.Events[0].Truncated || all.Events[1].Reason != "malformed_json" ||
		all.Events[2].Reason != "unknown_customer" {
		t.Errorf("list, newest first: %+v", all.Events)
	}
	// The environment is shown when the bytes name one (an event without the field is live).
	if all.Events[0].Environment != nil || all.Events[1].Environment != nil ||
		all.Events[2].Environment == nil || *all.Events[2].Environment != "live" {
		t.Errorf("environments listed: %v %v %v; want null, null, live",
			all.Events[0].Environment, all.Events[1].Environment, all.Events[2].Environment)
	}
	unknown := h.invalidEvents("?reason=unknown_customer")
	if len(unknown.Events) != 1 || unknown.NextCursor != nil {
		t.Fatalf("reason=unknown_customer: %+v", unknown)
	}
	ev := unknown.Events[0]
	if ev.Subject != "tasks.completed.cust_new" || ev.CustomerID == nil || *ev.CustomerID != "cust_new" ||
		!strings.Contains(ev.Detail, "cust_new") || ev.RawBytes != len(body) || ev.Raw != nil {
		t.Errorf("unknown-customer event in the list: %+v", ev)
	}
	if since := h.invalidEvents("?since=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339)); len(since.Events) != 0 {
		t.Errorf("since an hour from now: %+v", since.Events)
	}

	// Paging, newest first.
	var paged []string
	cursor := ""
	for range 4 {
		p := h.invalidEvents("?limit=1" + cursor)
		for _, e := range p.Events {
			paged = append(paged, e.ID)
		}
		if p.NextCursor == nil {
			break
		}
		cursor = "&cursor=" + *p.NextCursor
	}
	if len(paged) != 3 || paged[0] != all.Events[0].ID || paged[2] != ev.ID {
		t.Errorf("paged one by one: %v, want %s, %s, %s", paged, all.Events[0].ID, all.Events[1].ID, ev.ID)
	}

	// The detail shows headers and the bytes: text when UTF-8, else base64.
	var detail invalidEventView
	res := h.admin("GET", "/admin/v1/invalid-events/"+ev.ID)
	h.checkSchema("InvalidEvent", res.Body)
	unmarshal(t, res.Body, &detail)
	if detail.RawEncoding != "utf8" || detail.Raw == nil || *detail.Raw != string(body) ||
		detail.Headers["Nats-Msg-Id"][0] != "evt_new_1" || detail.Headers["X-Upstream"][0] != "billing" {
		t.Errorf("detail: %+v", detail)
	}
	var bad invalidEventView
	unmarshal(t, h.admin("GET", "/admin/v1/invalid-events/"+all.Events[1].ID).Body, &bad)
	if raw, err := base64.StdEncoding.DecodeString(*bad.Raw); bad.RawEncoding != "base64" || err != nil || !bytes.Equal(raw, garbage) {
		t.Errorf("non-UTF-8 event shown as %s %q", bad.RawEncoding, *bad.Raw)
	}
	// Only the start of the huge event was kept; once the stream no longer holds it either, a
	// replay of those bytes would not be the event.
	st, err := h.js.Stream(context.Background(), h.cfg.Stream.Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	wantError(t, h.admin("POST", "/admin/v1/invalid-events/"+all.Events[0].ID+"/replay"), http.StatusConflict)

	// Once the customer exists, the replay is delivered, with the webhook-id the original would
	// have had.
	created := h.createCustomer("cust_new", "")
	res = h.admin("POST", "/admin/v1/invalid-events/"+ev.ID+"/replay")
	if res.Code != http.StatusAccepted {
		t.Fatalf("replay: %d %s", res.Code, res.Body)
	}
	h.checkSchema("InvalidEventReplayed", res.Body)
	if m := res.json(t); m["webhook_id"] != "evt_new_1" || m["subject"] != "callbacks.resend.cust_new" {
		t.Errorf("replay answer: %v", m)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return rc.Count() == 1 }, "the replayed event's callback arrives")
	got := rc.Requests()[0]
	if got.Header.Get("webhook-id") != "evt_new_1" || !bytes.Contains(got.Body, []byte(`"task_id":"t1"`)) {
		t.Errorf("replayed callback: webhook-id %q body %s", got.Header.Get("webhook-id"), got.Body)
	}
	if v := h.waitCallback(created.APIKey, "t1", 10*time.Second, "recorded", final); v.State != "succeeded" || v.WebhookID != "evt_new_1" {
		t.Errorf("the replayed task's status: %s, webhook_id %q", v.State, v.WebhookID)
	}

	// Deleted: gone for every route.
	del := h.admin("DELETE", "/admin/v1/invalid-events/"+ev.ID)
	if del.Code != http.StatusOK {
		t.Fatalf("delete: %d %s", del.Code, del.Body)
	}
	h.checkSchema("InvalidEventDeleted", del.Body)
	for _, r := range []struct{ method, path string }{
		{"GET", "/admin/v1/invalid-events/" + ev.ID},
		{"DELETE", "/admin/v1/invalid-events/" + ev.ID},
		{"POST", "/admin/v1/invalid-events/" + ev.ID + "/replay"},
		{"GET", "/admin/v1/invalid-events/not-an-id"},
	} {
		wantError(t, h.admin(r.method, r.path), http.StatusNotFound)
	}
	if l := h.invalidEvents("?reason=unknown_customer"); len(l.Events) != 0 {
		t.Errorf("after the delete: %+v", l.Events)
	}
	metrics := string(h.do("GET", "/metrics", nil, nil).Body)
	for _, want := range []string{
		"refonte_gateway_invalid_event_replays_total 1",
		"refonte_gateway_invalid_event_deletes_total 1",
		"refonte_gateway_invalid_events_stored 2",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestInvalidEvents_bad_queries_are_400(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	for _, q := range []string{"?since=yesterday", "?reason=bogus", "?limit=0", "?limit=501", "?cursor=abc",
		"?customer_id=cust_a", "?limit=1&limit=2"} {
		wantError(t, h.admin("GET", "/admin/v1/invalid-events"+q), http.StatusBadRequest)
	}
}

var invalidEventRoutes = []struct{ method, path string }{
	{"GET", "/admin/v1/invalid-events"},
	{"GET", "/admin/v1/invalid-events/1700000000000-0"},
	{"POST", "/admin/v1/invalid-events/1700000000000-0/replay"},
	{"DELETE", "/admin/v1/invalid-events/1700000000000-0"},
}

func TestInvalidEvents_need_the_admin_token(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")
	h.remember("wrong-admin-token-for-invalid-events")
	for _, r := range invalidEventRoutes {
		for name, auth := range map[string]func(*http.Request){
			"no token":     nil,
			"wrong token":  bearer("wrong-admin-token-for-invalid-events"),
			"customer key": basic(c.APIKey),
		} {
			res := h.do(r.method, r.path, nil, auth)
			if res.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: %d, want 401", r.method, r.path, name, res.Code)
				continue
			}
			wantError(t, res, http.StatusUnauthorized)
		}
	}
}

func TestInvalidEvents_are_off_without_ADMIN_TOKEN(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"ADMIN_TOKEN": ""})
	for _, r := range invalidEventRoutes {
		for _, auth := range []func(*http.Request){nil, bearer("")} {
			wantError(t, h.do(r.method, r.path, nil, auth), http.StatusNotFound)
		}
	}
}
