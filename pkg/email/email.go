// Package email is the SMTP transport: when a callback target is an email address, each attempt
// sends one message through the operator's relay (SMTP_ADDR) carrying the same JSON an HTTP
// receiver would get (docs/receiving.md).
//
// # Body encoding
//
// Once its transfer encoding is undone, the body is the callback JSON byte for byte, followed by
// the line break that ends every mail (CRLF): a parser reads it as is, and a signature verifier
// strips that final line break. The encoding is chosen per message:
//
//   - 8bit, the JSON exactly as it is, when the relay announces 8BITMIME and the body is one
//     line of at most 998 octets of UTF-8;
//   - quoted-printable otherwise.
//
// The body is a single line (compact JSON), and a task with a long instruction or response
// makes it longer than the 998 octets RFC 5321 and RFC 5322 allow on a line. Relays reject such
// a message or break the line, and a break inside a JSON string corrupts it. Quoted-printable
// keeps every line short with soft line breaks that vanish on decoding, so every mail client and
// MIME parser returns the exact bytes and the signature still verifies; the raw source stays
// legible text, which base64 would not. Spreading the JSON over several lines instead would keep
// it valid but change the bytes the signature covers. Plain 7bit is never used: go-mail v0.8.1
// labels such a body 7bit but writes it quoted-printable.
//
// # Headers
//
// Beside From (SMTP_FROM), To, Subject "Refonte.AI task <task_id> <status>", Date and a
// Message-ID of its own (mailboxes drop a second message with the same one, and a resend must
// arrive), the message carries webhook-id, webhook-timestamp and webhook-signature as the HTTP
// callback does, so a mail pipeline can deduplicate and verify it with any Standard Webhooks
// library (mail can be slow: allow for it in the timestamp tolerance). The callback auth key is
// not sent: mail is stored and forwarded where the customer's endpoint never is. Auto-Submitted
// keeps vacation replies away from SMTP_FROM.
//
// # Relay
//
// The relay is the operator's own infrastructure, so it is not subject to the address filter
// that guards the URLs customers choose. STARTTLS is used whenever the relay offers it, and its
// certificate must verify: a failed handshake is a failed attempt, never a silent fallback to
// plain text. Credentials, when set, go by AUTH PLAIN or LOGIN, which go-mail sends only over
// TLS or to a loopback relay, else by the strongest other mechanism the relay offers. Every
// attempt, from the dial to the final reply, is bounded by the timeout.
//
// The relay accepting the message (250 after the data) is success; any other reply, a refused
// connection or a timeout is a failed attempt, retried like an HTTP one. A bounce the relay
// sends later goes to SMTP_FROM and does not change the outcome.
package email

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	netmail "net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"refonte.ai/callbacks/pkg/delivery"
	"refonte.ai/callbacks/pkg/target"
)

// Config of the SMTP transport.
type Config struct {
	// Addr is the relay's host:port.
	Addr string
	// From is the sender, in the From header and as the envelope sender (where bounces go).
	From string
	// Username and Password enable SMTP AUTH when Username is set.
	Username string
	Password string
	// Timeout bounds a whole attempt: connect, greeting, STARTTLS, AUTH, the transaction, QUIT.
	Timeout time.Duration
	// TLSConfig checks the relay's certificate on STARTTLS; nil means the system roots and the
	// host of Addr.
	TLSConfig *tls.Config
	// UserAgent is sent as User-Agent and X-Mailer.
	UserAgent string
}

// DefaultTimeout applies when Config.Timeout is not set.
const DefaultTimeout = 30 * time.Second

// maxLine is the longest line RFC 5322 allows, without its CRLF.
const maxLine = 998

// Sender mails callbacks. It is safe for concurrent use: every attempt has its own connection.
type Sender struct {
	cfg    Config
	host   string
	port   int
	from   *netmail.Address
	domain string // of From, for Message-IDs
	tls    *tls.Config
	dialer net.Dialer
}

// New checks the configuration and builds a Sender.
func New(cfg Config) (*Sender, error) {
	host, portText, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("email: SMTP_ADDR %q is not host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("email: SMTP_ADDR %q has no valid port", cfg.Addr)
	}
	from, err := netmail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("email: SMTP_FROM %q: %v", cfg.From, err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tlsConfig = cfg.TLSConfig.Clone()
	}
	if tlsConfig.ServerName == "" {
		tlsConfig.ServerName = host
	}
	return &Sender{
		cfg:    cfg,
		host:   host,
		port:   port,
		from:   from,
		domain: from.Address[strings.LastIndexByte(from.Address, '@')+1:],
		tls:    tlsConfig,
	}, nil
}

// Deliver makes one attempt.
func (s *Sender) Deliver(ctx context.Context, m delivery.Message) delivery.Result {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res := s.send(ctx, m)
	res.Duration = time.Since(start)
	return res
}

func (s *Sender) send(ctx context.Context, m delivery.Message) delivery.Result {
	if m.Target.Kind != target.Email || m.Target.Address == "" {
		return delivery.Result{Err: errors.New("not an email target"), Permanent: true}
	}
	return s.transact(ctx, m.Target.Address, func(eightBit bool) *mail.Msg {
		return s.compose(m, eightBit && fitsAsIs(m.Body))
	})
}

// Notify mails a notice of the service's own (an endpoint alert) to one address through the
// relay: plain text, From SMTP_FROM, no webhook headers. It is not a callback and has no
// attempts of its own; the error says why the relay did not take it.
func (s *Sender) Notify(ctx context.Context, to, subject, text string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	res := s.transact(ctx, to, func(bool) *mail.Msg {
		msg := mail.NewMsg(mail.WithEncoding(mail.EncodingQP), mail.WithCharset(mail.CharsetUTF8),
			mail.WithNoDefaultUserAgent())
		msg.FromMailAddress(s.from)
		msg.ToMailAddress(&netmail.Address{Address: to})
		msg.Subject(subject)
		msg.SetDate()
		msg.SetMessageIDWithValue(rand.Text() + "@" + s.domain)
		msg.SetGenHeader("Auto-Submitted", "auto-generated")
		if s.cfg.UserAgent != "" {
			msg.SetUserAgent(s.cfg.UserAgent)
		}
		msg.SetBodyString(mail.TypeTextPlain, text)
		return msg
	})
	return res.Err
}

// transact runs one SMTP session delivering the message compose builds (told whether the relay
// takes 8bit) to one recipient.
func (s *Sender) transact(ctx context.Context, to string, compose func(eightBit bool) *mail.Msg) delivery.Result {
	opts := []mail.Option{
		mail.WithPort(s.port),
		// The deadline go-mail puts on the connection once it is up; dial adds ctx's.
		mail.WithTimeout(s.cfg.Timeout),
		mail.WithTLSPolicy(mail.TLSOpportunistic),
		mail.WithTLSConfig(s.tls),
		mail.WithDialContextFunc(s.dial(ctx)),
	}
	if s.cfg.Username != "" {
		opts = append(opts, mail.WithUsername(s.cfg.Username), mail.WithPassword(s.cfg.Password),
			mail.WithOpportunisticSMTPAuth(mail.SMTPAuthPlain, mail.SMTPAuthLogin))
	}
	client, err := mail.NewClient(s.host, opts...)
	if err != nil {
		return delivery.Result{Err: fmt.Errorf("email transport: %v", err), Permanent: true}
	}
	conn, err := client.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return s.failure(ctx, "session setup", err)
	}
	// QUIT is a courtesy: the outcome is settled by the reply to the data.
	defer func() { _ = client.CloseWithSMTPClient(conn) }()

	eightBit, _ := conn.Extension("8BITMIME")
	msg := compose(eightBit)
	if err := conn.Mail(s.from.Address); err != nil {
		return s.failure(ctx, "MAIL FROM", err)
	}
	if err := conn.Rcpt(to); err != nil {
		return s.failure(ctx, "RCPT TO", err)
	}
	w, err := conn.Data()
	if err != nil {
		return s.failure(ctx, "DATA", err)
	}
	if _, err := msg.WriteTo(w); err != nil {
		return s.failure(ctx, "sending the message", err)
	}
	if err := w.Close(); err != nil {
		return s.failure(ctx, "end of data", err)
	}
	reply := "250"
	if dc, ok := w.(*smtp.DataCloser); ok && dc.ServerResponse() != "" {
		reply += " " + dc.ServerResponse()
	}
	return delivery.Result{StatusCode: 250, Excerpt: excerpt(reply)}
}

// dial connects to the relay and closes the connection when ctx ends (at the latest when Deliver
// returns): go-mail's own deadline only starts once the dial is done, and it knows nothing of
// ctx being cancelled.
func (s *Sender) dial(ctx context.Context) mail.DialContextFunc {
	return func(dialCtx context.Context, network, addr string) (net.Conn, error) {
		conn, err := s.dialer.DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { _ = conn.Close() })
		return conn, nil
	}
}

func (s *Sender) compose(m delivery.Message, asIs bool) *mail.Msg {
	encoding := mail.EncodingQP
	if asIs {
		encoding = mail.NoEncoding
	}
	msg := mail.NewMsg(mail.WithEncoding(encoding), mail.WithCharset(mail.CharsetUTF8),
		mail.WithNoDefaultUserAgent())
	msg.FromMailAddress(s.from)
	msg.ToMailAddress(&netmail.Address{Address: m.Target.Address})
	// go-mail encodes header values with control characters as RFC 2047 words, so no value can
	// start a header of its own.
	msg.Subject(fmt.Sprintf("Refonte.AI task %s %s", m.TaskID, m.Status))
	at := m.Timestamp
	if at.IsZero() {
		at = time.Now()
	}
	msg.SetDateWithValue(at)
	msg.SetMessageIDWithValue(rand.Text() + "@" + s.domain)
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader("webhook-id", m.WebhookID)
	msg.SetGenHeader("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	msg.SetGenHeader("webhook-signature", m.Signature)
	if s.cfg.UserAgent != "" {
		msg.SetUserAgent(s.cfg.UserAgent)
	}
	msg.SetBodyString(mail.TypeTextPlain, string(m.Body))
	return msg
}

// fitsAsIs reports whether body may travel as 8bit: one line, short enough, UTF-8, no NUL.
func fitsAsIs(body []byte) bool {
	return len(body) <= maxLine && utf8.Valid(body) && !bytes.ContainsAny(body, "\x00\r\n")
}

// failure turns what went wrong into a retryable result whose error reads well in the
// customer's attempt log. The relay's address is left out: it is the operator's business.
func (s *Sender) failure(ctx context.Context, step string, err error) delivery.Result {
	var (
		reply *textproto.Error
		opErr *net.OpError
	)
	switch {
	case errors.As(err, &reply):
		text := strings.Join(strings.Fields(reply.Msg), " ")
		return delivery.Result{
			StatusCode: reply.Code,
			Err:        fmt.Errorf("%s: SMTP %d %s", step, reply.Code, text),
			Excerpt:    excerpt(fmt.Sprintf("%d %s", reply.Code, text)),
		}
	case errors.Is(ctx.Err(), context.Canceled):
		return delivery.Result{Err: fmt.Errorf("cancelled before the mail relay answered (%s)", step)}
	case ctx.Err() != nil || isTimeout(err):
		return delivery.Result{Err: fmt.Errorf("timeout: the mail relay did not finish within %s (%s)", s.cfg.Timeout, step)}
	case errors.As(err, &opErr) && opErr.Op == "dial":
		return delivery.Result{Err: fmt.Errorf("mail relay unreachable: %v", opErr.Err)}
	default:
		return delivery.Result{Err: fmt.Errorf("%s failed: %v", step, err)}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func excerpt(s string) string {
	if len(s) > delivery.ExcerptLimit {
		s = s[:delivery.ExcerptLimit]
	}
	return strings.ToValidUTF8(s, "")
}
