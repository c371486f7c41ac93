// Package mailcatcher is the local stack's stand-in for Mailpit (no Docker on a plain developer
// machine): an SMTP server that accepts every message and keeps the last few in memory, and a
// small web page that lists them with their decoded bodies.
package mailcatcher

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// MaxMessageBytes bounds one message: a callback's body of up to about 2 MiB (an event at the
// default EVENT_MAX_BYTES), quoted-printable, and its headers.
const MaxMessageBytes = 8 << 20

// keep is how many messages are remembered.
const keep = 200

// Message is one mail received.
type Message struct {
	ID         int       `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	// From and To are the SMTP envelope.
	From    string   `json:"from"`
	To      []string `json:"to"`
	Subject string   `json:"subject"`
	// Body is the decoded text of the message (every text part, for a multipart message).
	Body string `json:"body"`
	Raw  string `json:"raw"`
}

// Catcher stores received mail.
type Catcher struct {
	log *slog.Logger

	mu     sync.Mutex
	nextID int
	msgs   []Message
}

// New returns an empty Catcher; log may be nil.
func New(log *slog.Logger) *Catcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Catcher{log: log, nextID: 1}
}

// Messages returns the stored messages, oldest first.
func (c *Catcher) Messages() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Message(nil), c.msgs...)
}

func (c *Catcher) add(m Message) {
	c.mu.Lock()
	m.ID = c.nextID
	c.nextID++
	c.msgs = append(c.msgs, m)
	if len(c.msgs) > keep {
		c.msgs = append([]Message(nil), c.msgs[len(c.msgs)-keep:]...)
	}
	c.mu.Unlock()
	c.log.Info("mail received", "id", m.ID, "from", m.From, "to", strings.Join(m.To, ","), "subject", m.Subject,
		"bytes", len(m.Raw))
}

// SMTPServer returns an SMTP server that stores every message in c. It needs no TLS and
// accepts any AUTH PLAIN credentials: it is for one developer's loopback only.
func (c *Catcher) SMTPServer(addr string) *smtp.Server {
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &session{c: c}, nil
	}))
	s.Addr = addr
	s.Domain = "mailcatcher.local"
	s.MaxMessageBytes = MaxMessageBytes
	s.MaxRecipients = 50
	s.AllowInsecureAuth = true
	s.ReadTimeout = time.Minute
	s.WriteTimeout = time.Minute
	return s
}

type session struct {
	c    *Catcher
	from string
	to   []string
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(string, string, string) error { return nil }), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	subject, body := decode(raw)
	s.c.add(Message{ReceivedAt: time.Now().UTC(), From: s.from, To: append([]string(nil), s.to...),
		Subject: subject, Body: body, Raw: string(raw)})
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

// decode returns the subject and readable body of a raw RFC 5322 message. A message it cannot
// parse is shown raw.
func decode(raw []byte) (subject, body string) {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return "(unparsable message)", string(raw)
	}
	dec := new(mime.WordDecoder)
	subject = m.Header.Get("Subject")
	if s, err := dec.DecodeHeader(subject); err == nil {
		subject = s
	}
	b, err := part(m.Header.Get("Content-Type"), m.Header.Get("Content-Transfer-Encoding"), m.Body)
	if err != nil {
		return subject, string(raw)
	}
	return subject, b
}

func part(contentType, encoding string, r io.Reader) (string, error) {
	media, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		media = "text/plain"
	}
	if strings.HasPrefix(media, "multipart/") {
		mr := multipart.NewReader(r, params["boundary"])
		var out []string
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return "", err
			}
			s, err := part(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
			if err != nil {
				return "", err
			}
			if s != "" {
				out = append(out, s)
			}
		}
		return strings.Join(out, "\n\n----\n\n"), nil
	}
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, &newlineStripper{r: r})
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxMessageBytes))
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(media, "text/") && media != "application/json" {
		return fmt.Sprintf("[%s part, %d bytes]", media, len(b)), nil
	}
	return string(b), nil
}

// newlineStripper drops CR and LF so a base64 body wrapped at 76 columns decodes.
type newlineStripper struct{ r io.Reader }

func (n *newlineStripper) Read(p []byte) (int, error) {
	for {
		k, err := n.r.Read(p)
		j := 0
		for _, b := range p[:k] {
			if b != '\r' && b != '\n' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil {
			return j, err
		}
	}
}

// Handler serves the web page (GET /), the messages as JSON (GET /api/messages) and
// GET /healthz.
func (c *Catcher) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /api/messages", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		msgs := c.Messages()
		if msgs == nil {
			msgs = []Message{}
		}
		_ = json.NewEncoder(w).Encode(msgs)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		msgs := c.Messages()
		for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
			msgs[i], msgs[j] = msgs[j], msgs[i]
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, msgs); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Mail catcher — Refonte callbacks dev stack</title>
<meta http-equiv="refresh" content="5">
<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}
.m{border-bottom:1px solid #ccc;margin-bottom:1.5em}small{color:#666}</style></head>
<body><h1>Mail catcher</h1>
<p>{{len .}} message(s), newest first. Stand-in for Mailpit: everything sent to the local stack's SMTP relay lands here. Refreshes every 5 s.</p>
{{range .}}<div class="m"><h3>#{{.ID}} {{.Subject}}</h3>
<small>{{.ReceivedAt.Format "2006-01-02 15:04:05 MST"}} — from {{.From}} to {{range $i, $t := .To}}{{if $i}}, {{end}}{{$t}}{{end}}</small>
<pre>{{.Body}}</pre></div>
{{end}}</body></html>
`))
