// Package delivery holds what every transport (HTTP, email) shares: the message one attempt
// sends and the result it reports. The worker decides from a Result whether to ack, retry or
// give up; transports only describe what happened.
package delivery

import (
	"time"

	"refonte.ai/callbacks/pkg/target"
)

// Message is everything one attempt sends.
type Message struct {
	Target     target.Target
	Body       []byte
	CustomerID string
	TaskID     string
	Status     string
	WebhookID  string
	Timestamp  time.Time
	Signature  string // webhook-signature header value
	AuthKey    string // refonte-ai--callback-auth header value
	// Header holds extra headers to send as they are (trace context).
	Header map[string]string
}

// Result is what an attempt came to.
type Result struct {
	// StatusCode is the HTTP status, or the SMTP reply code; 0 when there was no answer.
	StatusCode int
	// Err is nil exactly when the attempt succeeded.
	Err error
	// Permanent marks a failure that no retry can mend (email not configured): the delivery
	// ends at once instead of burning its remaining attempts.
	Permanent bool
	// RetryAfter is the wait the receiver asked for (429/503 Retry-After), or 0.
	RetryAfter time.Duration
	Duration   time.Duration
	// Excerpt is the first bytes of the answer, for the attempt log.
	Excerpt string
}

// OK reports whether the attempt succeeded.
func (r Result) OK() bool { return r.Err == nil }

// ExcerptLimit is how many bytes of an answer the attempt log keeps.
const ExcerptLimit = 256
