// Package endpoint keeps the health of each customer's callback endpoints and which of them are
// paused (docs/receiving.md, "When your endpoint fails"). An endpoint is where a target's
// callbacks go as one server sees them: an http(s) URL's scheme, host and port (the default
// port written out), or an email address's domain. Health is written by the workers beside each
// attempt's status (health.lua, in the same Redis round trip); pauses live in the customer's
// profile hash, so a worker learns them with the profile it already reads and caches.
package endpoint

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"refonte.ai/callbacks/pkg/target"
)

// ErrInvalid is returned by Parse for anything that names no endpoint.
var ErrInvalid = errors.New("invalid endpoint")

// MaxLength bounds an endpoint's name.
const MaxLength = 300

// Of is the endpoint a target's callbacks go to; "" for no target.
func Of(t target.Target) string {
	switch t.Kind {
	case target.HTTP:
		scheme := strings.ToLower(t.URL.Scheme)
		port := t.URL.Port()
		if port == "" {
			port = "80"
			if scheme == "https" {
				port = "443"
			}
		}
		return scheme + "://" + net.JoinHostPort(strings.ToLower(t.URL.Hostname()), port)
	case target.Email:
		return strings.ToLower(t.Address[strings.LastIndexByte(t.Address, '@')+1:])
	}
	return ""
}

// Parse reads an endpoint as a customer writes it, and gives it the form Of gives: an http(s)
// URL (only its scheme, host and port count), an email address or a mail domain.
func Parse(s string) (string, error) {
	if s == "" || len(s) > MaxLength {
		return "", fmt.Errorf("%w: want 1 to %d characters", ErrInvalid, MaxLength)
	}
	if !strings.Contains(s, "://") && !strings.Contains(s, "@") && !strings.HasPrefix(strings.ToLower(s), "mailto:") {
		if !validDomain(s) {
			return "", fmt.Errorf("%w: %q is neither an http(s) URL nor a mail domain", ErrInvalid, s)
		}
		return strings.ToLower(s), nil
	}
	t, err := target.Parse(s)
	if err != nil || t.Kind == target.None {
		return "", fmt.Errorf("%w: %q is neither an http(s) URL nor a mail domain", ErrInvalid, s)
	}
	return Of(t), nil
}

// validDomain accepts DNS names: labels of letters, digits and hyphens separated by dots.
func validDomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
