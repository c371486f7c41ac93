// Package event decodes and validates task completion events (docs/events.md,
// schemas/task-completed.schema.json) and builds the callback body that customers receive
// (docs/receiving.md, schemas/callback.schema.json). Decoding is strict: an event is either
// fully valid or refused with a Reason that operators can count and inspect.
package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"refonte.ai/callbacks/pkg/environment"
)

// DefaultMaxSize is the largest event accepted by default, in bytes: NATS's default payload
// limit (max_payload, 1 MiB). An event is kept in the stream only, never in Redis, so its size
// costs disk, not memory; a worker may lower or raise the limit (EVENT_MAX_BYTES), and the
// broker's own max_payload bounds what can be published at all.
const DefaultMaxSize = 1 << 20

// MaxSizeLimit is the largest EVENT_MAX_BYTES may be: NATS's hard upper bound on max_payload.
const MaxSizeLimit = 64 << 20

// Reason says why an event was refused. Values are stable: they label metrics and the
// invalid-event store.
type Reason string

const (
	ReasonTooLarge         Reason = "too_large"
	ReasonMalformed        Reason = "malformed_json"
	ReasonSchema           Reason = "schema_violation"
	ReasonSubjectMismatch  Reason = "subject_mismatch"
	ReasonUnknownCustomer  Reason = "unknown_customer"
	ReasonInvalidMessageID Reason = "invalid_message_id"
)

// Reasons lists every Reason, so metrics can be initialised at zero.
var Reasons = []Reason{ReasonTooLarge, ReasonMalformed, ReasonSchema, ReasonSubjectMismatch,
	ReasonUnknownCustomer, ReasonInvalidMessageID}

// InvalidError is returned for an event that must be refused, never retried.
type InvalidError struct {
	Reason Reason
	Detail string
}

func (e *InvalidError) Error() string { return string(e.Reason) + ": " + e.Detail }

// Invalid builds an *InvalidError.
func Invalid(reason Reason, format string, args ...any) error {
	return &InvalidError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// ReasonOf returns the Reason of an *InvalidError in err's chain, and false for any other error.
func ReasonOf(err error) (Reason, bool) {
	var inv *InvalidError
	if errors.As(err, &inv) {
		return inv.Reason, true
	}
	return "", false
}

// Event is a decoded, valid task completion.
type Event struct {
	CustomerID string
	// Environment is the customer's environment the task belongs to: live unless the event
	// says "environment": "test". It decides the task's keys, its status and its credentials.
	Environment environment.Env
	TaskID      string
	Status      string // "completed" or "error"
	CallbackURL string // empty: use the customer's default
	// Task is the task object as published, compacted; it is passed to the customer verbatim.
	Task json.RawMessage
	// Response is task.response, or null when the task has none.
	Response json.RawMessage
}

// validID is the schema's id pattern ^[A-Za-z0-9_-]{1,128}$ as a loop: every event checks two
// ids, and the regexp engine cost ~1% of a worker's CPU (TestValidID_matches_the_pattern holds
// the two together).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidWebhookID reports whether a message id may be a callback's webhook-id: 1 to 128
// printable ASCII characters without spaces (it goes into an HTTP header and into receivers'
// deduplication keys). The worker refuses messages whose id fails it; a replay replaces such ids.
func ValidWebhookID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// ValidCustomerID reports whether id may be a customer id (and so a NATS subject token).
func ValidCustomerID(id string) bool { return len(id) <= 64 && validID(id) }

// ValidTaskID reports whether id may be a task id.
func ValidTaskID(id string) bool { return validID(id) }

// Decode validates raw against the task completion schema (schemas/task-completed.schema.json)
// and the limits above. Every error it returns is an *InvalidError.
//
// It does not run the JSON Schema validator: one strict pass finds the few fields the schema
// constrains, by exact key, and checks them in code, several times faster than decoding the whole
// event into a generic document for the validator. FuzzDecodeAgreesWithSchema holds the two to
// the same verdict, so the schema stays the contract.
func Decode(raw []byte) (Event, error) { return DecodeLimit(raw, DefaultMaxSize) }

// DecodeLimit is Decode with a size limit of its own: an event over limit bytes is refused as
// too large.
func DecodeLimit(raw []byte, limit int) (Event, error) {
	if len(raw) > limit {
		return Event{}, Invalid(ReasonTooLarge, "event is %d bytes, the limit is %d (EVENT_MAX_BYTES)", len(raw), limit)
	}
	f, err := scan(raw)
	if err != nil {
		return Event{}, Invalid(ReasonMalformed, "%v", err)
	}
	if first(raw) != '{' {
		return Event{}, Invalid(ReasonSchema, "the event must be a JSON object")
	}
	var ev Event
	if ev.CustomerID, err = stringField(raw, f.customerID, "customer_id"); err != nil {
		return Event{}, err
	}
	if !ValidCustomerID(ev.CustomerID) {
		return Event{}, Invalid(ReasonSchema, "customer_id must be 1 to 64 of A-Z a-z 0-9 _ -")
	}
	ev.Environment = environment.Live
	if f.environment.present() {
		name, err := stringField(raw, f.environment, "environment")
		if err != nil {
			return Event{}, err
		}
		env, ok := environment.Parse(name)
		if !ok || name == "" {
			return Event{}, Invalid(ReasonSchema, "environment must be live or test")
		}
		ev.Environment = env
	}
	if !f.task.present() || raw[f.task.start] != '{' {
		return Event{}, Invalid(ReasonSchema, "task is required and must be an object")
	}
	if ev.TaskID, err = stringField(raw, f.taskID, "task.task_id"); err != nil {
		return Event{}, err
	}
	if !ValidTaskID(ev.TaskID) {
		return Event{}, Invalid(ReasonSchema, "task.task_id must be 1 to 128 of A-Z a-z 0-9 _ -")
	}
	if ev.Status, err = stringField(raw, f.status, "task.status"); err != nil {
		return Event{}, err
	}
	if ev.Status != "completed" && ev.Status != "error" {
		return Event{}, Invalid(ReasonSchema, "task.status must be completed or error")
	}
	if f.callbackURL.present() && raw[f.callbackURL.start] != 'n' { // null: no callback_url
		if ev.CallbackURL, err = stringField(raw, f.callbackURL, "task.callback_url"); err != nil {
			return Event{}, err
		}
		if utf8.RuneCountInString(ev.CallbackURL) > 2048 {
			return Event{}, Invalid(ReasonSchema, "task.callback_url is longer than 2048 characters")
		}
	}
	ev.Task = compact(raw[f.task.start:f.task.end])
	ev.Response = json.RawMessage("null")
	if f.taskResponse.present() {
		ev.Response = compact(raw[f.taskResponse.start:f.taskResponse.end])
	}
	return ev, nil
}

// stringField decodes a required string value.
func stringField(raw []byte, sp span, name string) (string, error) {
	if !sp.present() {
		return "", Invalid(ReasonSchema, "%s is required", name)
	}
	v := raw[sp.start:sp.end]
	if v[0] != '"' {
		return "", Invalid(ReasonSchema, "%s must be a string", name)
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil // no escapes: the bytes are the string
	}
	var out string
	if err := json.Unmarshal(v, &out); err != nil {
		return "", Invalid(ReasonMalformed, "%s: %v", name, err)
	}
	return out, nil
}

// compact removes insignificant white space; the input has passed the strict scan. Most
// publishers send compact JSON, which is returned as it is (sharing raw's memory, capacity
// capped so an append cannot write into it): encoding/json's Compact cost 3% of a worker's CPU.
func compact(v []byte) json.RawMessage {
	if !spaceOutsideStrings(v) {
		return v[:len(v):len(v)]
	}
	var b bytes.Buffer
	b.Grow(len(v))
	if err := json.Compact(&b, v); err != nil {
		return append(json.RawMessage(nil), v...) // cannot happen after scan
	}
	return b.Bytes()
}

// spaceOutsideStrings reports whether valid JSON v holds white space between its tokens.
func spaceOutsideStrings(v []byte) bool {
	inString := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case inString && c == '\\':
			i++ // the escaped character cannot end the string
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return true
		}
	}
	return false
}

func first(raw []byte) byte {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	return 0
}

// Marshal encodes the event as it travels on the stream; Decode(e.Marshal()) gives e back.
func (e Event) Marshal() []byte {
	b := make([]byte, 0, len(e.Task)+len(e.CustomerID)+56)
	b = append(b, `{"customer_id":"`...)
	b = append(b, e.CustomerID...) // validated: [A-Za-z0-9_-], nothing to escape
	if e.Environment == environment.Test {
		b = append(b, `","environment":"test`...)
	}
	b = append(b, `","task":`...)
	b = append(b, e.Task...)
	return append(b, '}')
}

// CallbackBody is the JSON body of the callback (schemas/callback.schema.json): the task as received, its
// response, task_id and status. It is byte-for-byte the same for every attempt and resend.
func (e Event) CallbackBody() []byte {
	b := make([]byte, 0, len(e.Task)+len(e.Response)+len(e.TaskID)+64)
	b = append(b, `{"task":`...)
	b = append(b, e.Task...)
	b = append(b, `,"response":`...)
	b = append(b, e.Response...)
	b = append(b, `,"task_id":"`...)
	b = append(b, e.TaskID...) // validated: nothing to escape
	b = append(b, `","status":"`...)
	b = append(b, e.Status...) // "completed" or "error"
	return append(b, `"}`...)
}

// DerivedWebhookID is the webhook-id of a completion published without a Nats-Msg-Id. It is
// derived from what identifies the completion — the customer, the environment, the task and
// when it completed — and from nothing else, so a copy of the same completion published again
// (a publisher's retry, a replay) carries the same webhook-id and receivers can deduplicate it,
// while a later completion of the same task gets another (docs/events.md). Callers pass the
// task's environment (Event.Environment: "live" for events that do not name one), so a test
// completion and a live one of the same task never share a webhook-id.
func DerivedWebhookID(customerID, environment, taskID, completedAt string) string {
	h := sha256.New()
	// Customer, environment and task ids cannot hold a newline, so the parts cannot run into
	// each other and two different completions cannot hash the same input.
	for _, part := range []string{customerID, environment, taskID} {
		h.Write([]byte(part))
		h.Write([]byte{'\n'})
	}
	h.Write([]byte(completedAt))
	return "evt_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// CompletedAt returns task.completed_at as published: the string's value, or the JSON text of
// a value that is not a string, or "" when the task has none. It is only read to derive a
// webhook-id, so it is looked up on demand instead of on every decode.
func (e Event) CompletedAt() string {
	var t struct {
		CompletedAt json.RawMessage `json:"completed_at"`
	}
	if err := json.Unmarshal(e.Task, &t); err != nil || len(t.CompletedAt) == 0 {
		return ""
	}
	var s string
	if err := json.Unmarshal(t.CompletedAt, &s); err == nil {
		return s
	}
	return string(t.CompletedAt)
}
