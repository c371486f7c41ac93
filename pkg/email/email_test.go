package email_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/email"
	"refonte.ai/callbacks/pkg/target"
)

func newSender(t *testing.T, cfg email.Config) *email.Sender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "hello@refonte.ai"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	s, err := email.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func message(t *testing.T, to string, body []byte) delivery.Message {
	t.Helper()
	tg, err := target.Parse(to)
	if err != nil {
		t.Fatal(err)
	}
	return delivery.Message{
		Target:     tg,
		Body:       body,
		CustomerID: "c1",
		TaskID:     "576c41bf13e36b0600b02b34",
		Status:     "completed",
		WebhookID:  "evt_c1_576c41bf13e36b0600b02b34",
		Timestamp:  time.Unix(1466718884, 0),
		Signature:  "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
		AuthKey:    "cbk_secret",
	}
}

// onlyMessage is the sink's single message, parsed; the test fails on any other count.
func onlyMessage(t *testing.T, sink *testenv.SMTPSink) (testenv.SMTPMessage, mail.Header, []byte) {
	t.Helper()
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("the relay holds %d messages, want 1", len(msgs))
	}
	h, body, err := msgs[0].Parse()
	if err != nil {
		t.Fatalf("the message does not parse: %v\n%s", err, msgs[0].Data)
	}
	return msgs[0], h, body
}

const shortBody = `{"task":{"task_id":"576c41bf13e36b0600b02b34","status":"completed","instruction":"Est-ce rouge ou bleu ? « tomate » = 🍅","callback_url":"mailto:a@b.example"},"response":{"category":"red"},"task_id":"576c41bf13e36b0600b02b34","status":"completed"}`

func TestDeliver_one_message_with_the_contract_headers_and_the_JSON_as_is(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	s := newSender(t, email.Config{Addr: sink.Addr, UserAgent: "Refonte-Callbacks/test"})
	m := message(t, "mailto:a@b.example", []byte(shortBody))

	res := s.Deliver(context.Background(), m)
	if !res.OK() || res.StatusCode != 250 || !strings.HasPrefix(res.Excerpt, "250") {
		t.Fatalf("result = %+v, want success with 250", res)
	}
	got, h, body := onlyMessage(t, sink)
	if got.From != "hello@refonte.ai" || len(got.To) != 1 || got.To[0] != "a@b.example" {
		t.Errorf("envelope from %q to %q, want hello@refonte.ai to [a@b.example]", got.From, got.To)
	}
	for name, want := range map[string]string{
		"From":                      "<hello@refonte.ai>",
		"To":                        "<a@b.example>",
		"Subject":                   "Refonte.AI task 576c41bf13e36b0600b02b34 completed",
		"Content-Type":              "text/plain; charset=UTF-8",
		"Content-Transfer-Encoding": "8bit",
		"Webhook-Id":                m.WebhookID,
		"Webhook-Timestamp":         "1466718884",
		"Webhook-Signature":         m.Signature,
		"Auto-Submitted":            "auto-generated",
		"User-Agent":                "Refonte-Callbacks/test",
		"Refonte-Ai--Callback-Auth": "",
	} {
		if v := h.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
	if date, err := h.Date(); err != nil || !date.Equal(m.Timestamp) {
		t.Errorf("Date = %q (%v), want the attempt's timestamp", h.Get("Date"), err)
	}
	if id := h.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@refonte.ai>") {
		t.Errorf("Message-ID = %q, want <…@refonte.ai>", id)
	}
	// 8bit: the JSON travels untouched, so even the raw message holds it verbatim.
	if string(body) != shortBody+"\r\n" || !bytes.Contains(got.Data, []byte("\r\n\r\n"+shortBody+"\r\n")) {
		t.Errorf("body:\n got %q\nwant %q", body, shortBody+"\r\n")
	}
}

func TestDeliver_a_body_longer_than_a_mail_line_is_quoted_printable_and_exact(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	s := newSender(t, email.Config{Addr: sink.Addr})
	long := `{"task":{"instruction":"` + strings.Repeat("a=b & c≠d, ", 500) + `"},"response":null,"task_id":"t1","status":"error"}`

	if res := s.Deliver(context.Background(), message(t, "a@b.example", []byte(long))); !res.OK() {
		t.Fatalf("result = %+v, want success", res)
	}
	got, h, body := onlyMessage(t, sink)
	if cte := h.Get("Content-Transfer-Encoding"); cte != "quoted-printable" {
		t.Errorf("Content-Transfer-Encoding = %q, want quoted-printable for a %d-byte line", cte, len(long))
	}
	if n := got.LongestLine(); n > 998 {
		t.Errorf("the message has a %d-octet line; RFC 5322 allows 998", n)
	}
	if string(body) != long+"\r\n" {
		t.Errorf("decoded body differs from the JSON and its final CRLF:\n got %q\nwant %q", body, long+"\r\n")
	}
}

func TestDeliver_relay_refusals_are_retryable_failures_with_the_reply(t *testing.T) {
	for _, code := range []int{451, 554} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
			sink.RejectData(code, 1)
			s := newSender(t, email.Config{Addr: sink.Addr})
			m := message(t, "a@b.example", []byte(shortBody))

			res := s.Deliver(context.Background(), m)
			if res.OK() || res.Permanent || res.StatusCode != code {
				t.Fatalf("result = %+v, want a retryable failure with status %d", res, code)
			}
			want := "end of data: SMTP " + strconv.Itoa(code) + " "
			if !strings.Contains(res.Err.Error(), want) || !strings.Contains(res.Err.Error(), "sink refuses message 1") {
				t.Errorf("error = %q, want it to hold %q and the relay's text", res.Err, want)
			}
			if sink.Count() != 0 {
				t.Errorf("the relay kept a refused message")
			}
			if res := s.Deliver(context.Background(), m); !res.OK() || sink.Count() != 1 {
				t.Errorf("the next attempt: %+v, %d messages; want it accepted", res, sink.Count())
			}
		})
	}
}

func TestDeliver_refused_connection_is_a_retryable_failure(t *testing.T) {
	s := newSender(t, email.Config{Addr: testenv.FreeAddr(t)})
	res := s.Deliver(context.Background(), message(t, "a@b.example", []byte(shortBody)))
	if res.OK() || res.Permanent || res.StatusCode != 0 || !strings.Contains(res.Err.Error(), "mail relay unreachable") {
		t.Fatalf("result = %+v, want a retryable 'unreachable' failure", res)
	}
	if strings.Contains(res.Err.Error(), "127.0.0.1") {
		t.Errorf("error %q shows the relay's address to the customer", res.Err)
	}
}

func TestDeliver_timeout_bounds_a_relay_that_never_greets(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			// Say nothing; the connection ends when the sender gives up.
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	assertTimesOut(t, l.Addr().String())
}

func TestDeliver_timeout_bounds_a_relay_that_hangs_after_the_data(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	sink.HoldData()
	assertTimesOut(t, sink.Addr)
	if sink.DataCommands() != 1 {
		t.Errorf("the relay saw %d messages, want the one that hung", sink.DataCommands())
	}
}

// Each step answers within the timeout; the attempt as a whole must not.
func TestDeliver_timeout_bounds_the_whole_attempt_not_each_step(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{Delay: 150 * time.Millisecond})
	assertTimesOut(t, sink.Addr)
	// The relay's session may still be sleeping through a step: only once it is over can no
	// late acceptance follow.
	testenv.Eventually(t, 10*time.Second, func() bool { return sink.Sessions() >= 1 && sink.Ended() == sink.Sessions() },
		"the relay's session ends after the sender gave up")
	if sink.Count() != 0 {
		t.Errorf("the relay accepted the message after the attempt had given up")
	}
}

func TestDeliver_gives_up_when_its_context_is_cancelled(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	sink.HoldData()
	s := newSender(t, email.Config{Addr: sink.Addr, Timeout: time.Minute})
	m := message(t, "a@b.example", []byte(shortBody))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan delivery.Result, 1)
	go func() { done <- s.Deliver(ctx, m) }()
	testenv.Eventually(t, 5*time.Second, func() bool { return sink.DataCommands() == 1 }, "the message reaches the relay")
	cancel()
	select {
	case res := <-done:
		if res.OK() || !strings.Contains(res.Err.Error(), "cancelled") {
			t.Errorf("result = %+v, want a cancelled attempt", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Deliver kept waiting for the relay after its context was cancelled")
	}
}

func assertTimesOut(t *testing.T, addr string) {
	t.Helper()
	const timeout = 300 * time.Millisecond
	s := newSender(t, email.Config{Addr: addr, Timeout: timeout})
	res := s.Deliver(context.Background(), message(t, "a@b.example", []byte(shortBody)))
	if res.OK() || res.Permanent || !strings.Contains(res.Err.Error(), "timeout") {
		t.Fatalf("result = %+v, want a retryable timeout", res)
	}
	if res.Duration > 3*timeout {
		t.Errorf("the attempt took %s with a %s timeout", res.Duration, timeout)
	}
}

func TestDeliver_STARTTLS_is_used_when_offered_and_the_certificate_is_checked(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{STARTTLS: true})

	res := newSender(t, email.Config{Addr: sink.Addr}).Deliver(context.Background(), message(t, "a@b.example", []byte(shortBody)))
	if res.OK() || !strings.Contains(res.Err.Error(), "certificate") {
		t.Errorf("with an untrusted certificate: %+v; want a failed attempt naming the certificate", res)
	}
	if sink.Count() != 0 {
		t.Fatalf("the message went out in the clear after a failed handshake")
	}

	res = newSender(t, email.Config{Addr: sink.Addr, TLSConfig: sink.ClientTLS}).Deliver(context.Background(), message(t, "a@b.example", []byte(shortBody)))
	if !res.OK() {
		t.Fatalf("result = %+v, want success", res)
	}
	if got, _, _ := onlyMessage(t, sink); !got.TLS {
		t.Errorf("the relay offered STARTTLS but the message came in the clear")
	}
}

func TestDeliver_SMTP_AUTH_with_the_configured_credentials(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{Username: "relay-user", Password: "s3cret"})
	m := message(t, "a@b.example", []byte(shortBody))

	res := newSender(t, email.Config{Addr: sink.Addr, Username: "relay-user", Password: "wrong"}).Deliver(context.Background(), m)
	if res.OK() || res.StatusCode != 535 {
		t.Errorf("with a wrong password: %+v; want a failure with 535", res)
	}
	res = newSender(t, email.Config{Addr: sink.Addr}).Deliver(context.Background(), m)
	if res.OK() || sink.Count() != 0 {
		t.Errorf("without credentials: %+v; want the relay to refuse", res)
	}

	res = newSender(t, email.Config{Addr: sink.Addr, Username: "relay-user", Password: "s3cret"}).Deliver(context.Background(), m)
	if !res.OK() {
		t.Fatalf("result = %+v, want success", res)
	}
	if got, _, _ := onlyMessage(t, sink); got.User != "relay-user" {
		t.Errorf("authenticated as %q, want relay-user", got.User)
	}
}

// Task ids and statuses are validated long before this point; the transport still must not let
// a line break in a value start a header of its own.
func TestDeliver_a_line_break_in_a_value_cannot_add_a_header(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	m := message(t, "a@b.example", []byte(shortBody))
	m.TaskID = "t1\r\nBcc: x@y.example"
	m.Status = "completed\r\n\r\nforged body"

	if res := newSender(t, email.Config{Addr: sink.Addr}).Deliver(context.Background(), m); !res.OK() {
		t.Fatalf("result = %+v", res)
	}
	got, h, body := onlyMessage(t, sink)
	if h.Get("Bcc") != "" || len(got.To) != 1 || string(body) != shortBody+"\r\n" {
		t.Errorf("header Bcc %q, recipients %q, body %q: a value escaped its header", h.Get("Bcc"), got.To, body)
	}
}

func TestDeliver_refuses_a_target_that_is_not_an_email(t *testing.T) {
	sink := testenv.NewSMTPSink(t, testenv.SMTPOptions{})
	res := newSender(t, email.Config{Addr: sink.Addr}).Deliver(context.Background(), message(t, "https://example.com/hook", nil))
	if res.OK() || !res.Permanent || sink.Sessions() != 0 {
		t.Errorf("result = %+v, %d sessions; want a permanent failure without a connection", res, sink.Sessions())
	}
}

func TestNew_refuses_a_bad_configuration(t *testing.T) {
	for _, cfg := range []email.Config{
		{Addr: "smtp.example", From: "hello@refonte.ai"},
		{Addr: "smtp.example:0", From: "hello@refonte.ai"},
		{Addr: ":25", From: "hello@refonte.ai"},
		{Addr: "smtp.example:25", From: "not an address"},
		{Addr: "smtp.example:25", From: ""},
	} {
		if _, err := email.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
	if _, err := email.New(email.Config{Addr: "smtp.example:587", From: "Refonte.AI <hello@refonte.ai>"}); err != nil {
		t.Errorf("a From with a display name: %v", err)
	}
}
