package testenv

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPOptions shape an SMTPSink.
type SMTPOptions struct {
	// STARTTLS makes the sink offer STARTTLS with a self-signed certificate; ClientTLS trusts it.
	STARTTLS bool
	// Username, when set, makes the sink offer AUTH PLAIN and refuse mail without it.
	Username string
	Password string
	// Delay is how long the sink waits before it answers MAIL, RCPT and the data: a slow relay.
	Delay time.Duration
}

// SMTPMessage is one message an SMTPSink accepted.
type SMTPMessage struct {
	At   time.Time
	From string   // envelope sender
	To   []string // envelope recipients
	Data []byte   // the message as received, headers and body
	TLS  bool     // the session had switched to TLS
	User string   // who authenticated, if anyone
}

// SMTPSink is an in-process SMTP server playing the mail relay a callback goes through: it
// records what it accepts and can be told to refuse or to stall.
type SMTPSink struct {
	// Addr is the host:port to send to.
	Addr string
	// ClientTLS trusts the sink's certificate (with STARTTLS).
	ClientTLS *tls.Config

	opts    SMTPOptions
	release chan struct{}

	mu         sync.Mutex
	messages   []SMTPMessage
	sessions   int
	ended      int
	datas      int
	rejectCode int
	rejectN    int
	hold       bool
}

// Always, as a count for RejectData, refuses every message.
const Always = -1

// NewSMTPSink starts a sink on a loopback port, closed at cleanup.
func NewSMTPSink(t testing.TB, opts SMTPOptions) *SMTPSink {
	t.Helper()
	sink := &SMTPSink{opts: opts, release: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(sink.newSession))
	srv.Domain = "sink.test"
	srv.AllowInsecureAuth = true // loopback only; STARTTLS is tested on its own
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.ErrorLog = log.New(io.Discard, "", 0)
	if opts.STARTTLS {
		srv.TLSConfig, sink.ClientTLS = selfSigned(t)
	}
	l, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	sink.Addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	// Runs before the server closes, so held sessions can end.
	t.Cleanup(func() { close(sink.release) })
	return sink
}

// RejectData makes the sink answer code (e.g. 451, 554) to the first n messages, counted from
// the start; n may be Always.
func (s *SMTPSink) RejectData(code, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejectCode, s.rejectN = code, n
}

// HoldData makes the sink take each message and never answer, until the test ends: a relay that
// hangs after the data.
func (s *SMTPSink) HoldData() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = true
}

// Messages returns a copy of what was accepted so far.
func (s *SMTPSink) Messages() []SMTPMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SMTPMessage(nil), s.messages...)
}

// Count is the number of messages accepted.
func (s *SMTPSink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.messages)
}

// DataCommands is the number of messages that reached the end of DATA, accepted or not.
func (s *SMTPSink) DataCommands() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.datas
}

// Sessions is the number of connections the sink has seen.
func (s *SMTPSink) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Ended is the number of connections that are over: once it equals Sessions, nothing in flight
// can still be accepted.
func (s *SMTPSink) Ended() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

func (s *SMTPSink) newSession(c *smtp.Conn) (smtp.Session, error) {
	s.mu.Lock()
	s.sessions++
	s.mu.Unlock()
	return &smtpSession{sink: s, conn: c}, nil
}

// receive decides on a complete message: hold it, refuse it or keep it.
func (s *SMTPSink) receive(m SMTPMessage) error {
	s.mu.Lock()
	s.datas++
	hold := s.hold
	var refuse error
	if s.rejectCode != 0 && (s.rejectN == Always || s.datas <= s.rejectN) {
		refuse = &smtp.SMTPError{Code: s.rejectCode, EnhancedCode: smtp.EnhancedCodeNotSet,
			Message: fmt.Sprintf("sink refuses message %d", s.datas)}
	} else if !hold {
		s.messages = append(s.messages, m)
	}
	s.mu.Unlock()
	if hold {
		<-s.release
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCodeNotSet, Message: "sink closing"}
	}
	return refuse
}

type smtpSession struct {
	sink *SMTPSink
	conn *smtp.Conn
	from string
	to   []string
	user string
}

var _ smtp.AuthSession = (*smtpSession)(nil)

func (ss *smtpSession) AuthMechanisms() []string {
	if ss.sink.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		if username != ss.sink.opts.Username || password != ss.sink.opts.Password {
			return smtp.ErrAuthFailed
		}
		ss.user = username
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	time.Sleep(ss.sink.opts.Delay)
	if ss.sink.opts.Username != "" && ss.user == "" {
		return smtp.ErrAuthRequired
	}
	ss.from = from
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	time.Sleep(ss.sink.opts.Delay)
	ss.to = append(ss.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(ss.sink.opts.Delay)
	_, isTLS := ss.conn.TLSConnectionState()
	return ss.sink.receive(SMTPMessage{At: time.Now(), From: ss.from, To: ss.to, Data: data,
		TLS: isTLS, User: ss.user})
}

func (ss *smtpSession) Reset() { ss.from, ss.to = "", nil }
func (ss *smtpSession) Logout() error {
	ss.sink.mu.Lock()
	ss.sink.ended++
	ss.sink.mu.Unlock()
	return nil
}

// Parse reads the message as a mail client would: its header, and its body with the transfer
// encoding undone.
func (m SMTPMessage) Parse() (mail.Header, []byte, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return nil, nil, err
	}
	var body io.Reader = msg.Body
	switch cte := strings.ToLower(msg.Header.Get("Content-Transfer-Encoding")); cte {
	case "", "7bit", "8bit", "binary":
	case "quoted-printable":
		body = quotedprintable.NewReader(msg.Body)
	default:
		return nil, nil, fmt.Errorf("unexpected Content-Transfer-Encoding %q", cte)
	}
	b, err := io.ReadAll(body)
	return msg.Header, b, err
}

// LongestLine is the length in octets of the message's longest line, without its line break.
func (m SMTPMessage) LongestLine() int {
	longest := 0
	for line := range bytes.SplitSeq(m.Data, []byte("\r\n")) {
		longest = max(longest, len(line))
	}
	return longest
}

// selfSigned makes a certificate for 127.0.0.1 and a client config that trusts it.
func selfSigned(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sink.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}},
		&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
