// Package event decodes and validates task completion events (CONTRACT §1) and builds the
// callback body that customers receive (CONTRACT §2). Decoding is strict: an event is either
// fully valid or refused with a Reason that operators can count and inspect.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"refonte.ai/callbacks/schemas"
)

// MaxSize is the largest event accepted, in bytes. The event is stored with the task status and
// sent on in every attempt, so it is kept well below NATS's 1 MiB default payload limit.
const MaxSize = 256 << 10

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
	CustomerID  string
	TaskID      string
	Status      string // "completed" or "error"
	CallbackURL string // empty: use the customer's default
	// Task is the task object as published, compacted; it is passed to the customer verbatim.
	Task json.RawMessage
	// Response is task.response, or null when the task has none.
	Response json.RawMessage
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// ValidCustomerID reports whether id may be a customer id (and so a NATS subject token).
func ValidCustomerID(id string) bool { return len(id) <= 64 && idPattern.MatchString(id) }

// ValidTaskID reports whether id may be a task id.
func ValidTaskID(id string) bool { return idPattern.MatchString(id) }

// Decode validates raw against the task completion schema and the limits above.
// Every error it returns is an *InvalidError.
func Decode(raw []byte) (Event, error) {
	if len(raw) > MaxSize {
		return Event{}, Invalid(ReasonTooLarge, "event is %d bytes, the limit is %d", len(raw), MaxSize)
	}
	if err := checkStrict(raw); err != nil {
		return Event{}, Invalid(ReasonMalformed, "%v", err)
	}
	if err := schemas.ValidateTaskCompleted(raw); err != nil {
		return Event{}, Invalid(ReasonSchema, "%s", oneLine(err))
	}
	var outer struct {
		CustomerID string          `json:"customer_id"`
		Task       json.RawMessage `json:"task"`
	}
	if err := json.Unmarshal(raw, &outer); err != nil {
		return Event{}, Invalid(ReasonMalformed, "%v", err)
	}
	var task struct {
		TaskID      string          `json:"task_id"`
		Status      string          `json:"status"`
		CallbackURL *string         `json:"callback_url"`
		Response    json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(outer.Task, &task); err != nil {
		return Event{}, Invalid(ReasonSchema, "task: %v", err)
	}
	var compact bytes.Buffer
	compact.Grow(len(outer.Task))
	if err := json.Compact(&compact, outer.Task); err != nil {
		return Event{}, Invalid(ReasonMalformed, "task: %v", err)
	}
	ev := Event{
		CustomerID: outer.CustomerID,
		TaskID:     task.TaskID,
		Status:     task.Status,
		Task:       compact.Bytes(),
		Response:   json.RawMessage("null"),
	}
	if task.CallbackURL != nil {
		ev.CallbackURL = *task.CallbackURL
	}
	if len(task.Response) > 0 {
		var r bytes.Buffer
		if err := json.Compact(&r, task.Response); err != nil {
			return Event{}, Invalid(ReasonMalformed, "task.response: %v", err)
		}
		ev.Response = r.Bytes()
	}
	return ev, nil
}

// Marshal encodes the event as it travels on the stream; Decode(e.Marshal()) gives e back.
func (e Event) Marshal() []byte {
	b := make([]byte, 0, len(e.Task)+len(e.CustomerID)+32)
	b = append(b, `{"customer_id":"`...)
	b = append(b, e.CustomerID...) // validated: [A-Za-z0-9_-], nothing to escape
	b = append(b, `","task":`...)
	b = append(b, e.Task...)
	return append(b, '}')
}

// CallbackBody is the JSON body of the callback (CONTRACT §2): the task as received, its
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

func oneLine(err error) string {
	s := err.Error()
	s = string(bytes.ReplaceAll([]byte(s), []byte("\n"), []byte("; ")))
	return truncate(s, 512)
}
