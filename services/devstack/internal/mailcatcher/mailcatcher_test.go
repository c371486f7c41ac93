package mailcatcher_test

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"strings"
	"testing"

	"refonte.ai/callbacks/services/devstack/internal/mailcatcher"
)

func TestMailcatcher_keeps_and_shows_a_message(t *testing.T) {
	c := mailcatcher.New(nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := c.SMTPServer(ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Error(err)
		}
	}()
	defer srv.Close()

	msg := "From: hello@refonte.ai\r\nTo: demo@example.com\r\n" +
		"Subject: =?utf-8?q?Refonte.AI_task_t1_completed?=\r\n" +
		"Content-Type: application/json\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"{\"task_id\":\"t1\",\"status\":\"compl=\r\neted\"}\r\n"
	if err := smtp.SendMail(ln.Addr().String(), nil, "hello@refonte.ai", []string{"demo@example.com"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := c.Messages()
	if len(got) != 1 {
		t.Fatalf("%d messages, want 1", len(got))
	}
	m := got[0]
	if m.From != "hello@refonte.ai" || len(m.To) != 1 || m.To[0] != "demo@example.com" {
		t.Fatalf("envelope %q → %q", m.From, m.To)
	}
	if m.Subject != "Refonte.AI task t1 completed" {
		t.Fatalf("subject %q", m.Subject)
	}
	if !strings.Contains(m.Body, `"status":"completed"`) {
		t.Fatalf("body %q not decoded", m.Body)
	}

	web := httptest.NewServer(c.Handler())
	defer web.Close()
	resp, err := http.Get(web.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("page: %d", resp.StatusCode)
	}
	resp, err = http.Get(web.URL + "/api/messages")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []mailcatcher.Message
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) != 1 {
		t.Fatalf("api: %v %d", err, len(list))
	}
}
