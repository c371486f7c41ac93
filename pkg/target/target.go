// Package target parses where a callback goes: an http(s) URL or a single email mailbox
// (docs/events.md). Anything else is an unusable target, refused before any delivery.
package target

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// MaxLength bounds a callback URL or address.
const MaxLength = 2048

// Kind is the transport a target needs.
type Kind int

const (
	None Kind = iota
	HTTP
	Email
)

func (k Kind) String() string {
	switch k {
	case HTTP:
		return "http"
	case Email:
		return "email"
	default:
		return "none"
	}
}

// Target is a parsed callback destination.
type Target struct {
	Kind Kind
	// Raw is the target as the customer wrote it; it is what the status record shows.
	Raw string
	// URL is set for HTTP targets.
	URL *url.URL
	// Address is the bare mailbox (local@domain) for Email targets.
	Address string
}

// ErrUnusable wraps every parse failure, so callers can tell "bad target" from other errors.
var ErrUnusable = errors.New("unusable callback target")

// Host is what per-endpoint limits are keyed on: the URL's host:port, or the mail domain.
func (t Target) Host() string {
	switch t.Kind {
	case HTTP:
		return t.URL.Host
	case Email:
		return t.Address[strings.LastIndexByte(t.Address, '@')+1:]
	}
	return ""
}

// Redacted is the target with any URL password removed, for logs.
func (t Target) Redacted() string {
	if t.Kind == HTTP {
		return t.URL.Redacted()
	}
	return t.Raw
}

// Parse parses a callback_url or default_callback_url. An empty string is the None target.
func Parse(s string) (Target, error) {
	if s == "" {
		return Target{Kind: None}, nil
	}
	if len(s) > MaxLength {
		return Target{}, fmt.Errorf("%w: longer than %d characters", ErrUnusable, MaxLength)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return Target{}, fmt.Errorf("%w: contains a control character", ErrUnusable)
		}
	}
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "https://"):
		return parseURL(s)
	case strings.HasPrefix(lower, "mailto:"):
		return parseMailbox(s, s[len("mailto:"):])
	case !strings.Contains(s, ":") || (strings.Contains(s, "@") && !strings.Contains(s, "/")):
		return parseMailbox(s, s)
	default:
		return Target{}, fmt.Errorf("%w: not an http or https URL nor an email address", ErrUnusable)
	}
}

func parseURL(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("%w: %v", ErrUnusable, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Target{}, fmt.Errorf("%w: scheme %q is not http or https", ErrUnusable, u.Scheme)
	}
	if u.Hostname() == "" {
		return Target{}, fmt.Errorf("%w: URL has no host", ErrUnusable)
	}
	if u.Opaque != "" {
		return Target{}, fmt.Errorf("%w: URL is not absolute", ErrUnusable)
	}
	u.Fragment, u.RawFragment = "", ""
	return Target{Kind: HTTP, Raw: s, URL: u}, nil
}

// parseMailbox accepts exactly one RFC 5322 addr-spec: no display name, no group, no list,
// no comments, so nothing a customer writes can add a header or a recipient.
func parseMailbox(raw, addr string) (Target, error) {
	if addr == "" || strings.ContainsAny(addr, " <>,;()\"?%\\") {
		return Target{}, fmt.Errorf("%w: %q is not a single email address", ErrUnusable, addr)
	}
	parsed, err := mail.ParseAddress(addr)
	if err != nil {
		return Target{}, fmt.Errorf("%w: not a valid email address: %v", ErrUnusable, err)
	}
	if parsed.Name != "" || parsed.Address != addr {
		return Target{}, fmt.Errorf("%w: %q is not a bare email address", ErrUnusable, addr)
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return Target{}, fmt.Errorf("%w: %q has no domain", ErrUnusable, addr)
	}
	return Target{Kind: Email, Raw: raw, Address: addr}, nil
}

// Resolve picks the task's own callback_url, else the customer's default (docs/events.md).
func Resolve(taskURL, defaultURL string) (Target, error) {
	if taskURL != "" {
		return Parse(taskURL)
	}
	return Parse(defaultURL)
}
