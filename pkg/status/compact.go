package status

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// compact is a task's record as record.lua keeps it: one JSON object with one-letter names, no
// field for an empty value, numbers as numbers (record.lua's header describes each). Numbers are
// read as float64 because Lua's cjson writes large ones in exponent form.
type compact struct {
	Chain     float64         `json:"c"`
	Delivery  float64         `json:"n"`
	WebhookID string          `json:"w"`
	State     string          `json:"s"`
	Succeeded *float64        `json:"k"`
	Attempts  float64         `json:"a"`
	Next      float64         `json:"x"`
	Last      float64         `json:"z"`
	Target    string          `json:"g"`
	Log       json.RawMessage `json:"l"`
}

var stateNames = map[string]State{"p": Pending, "r": Retrying, "s": Succeeded, "f": Failed, "n": NoCallback}

func decodeCompact(raw []byte) (compact, error) {
	var c compact
	if err := json.Unmarshal(raw, &c); err != nil {
		return compact{}, fmt.Errorf("unreadable status record: %w", err)
	}
	return c, nil
}

// record is c as the gateway shows it, with the newest logN entries of its log.
func (c compact) record(customerID, taskID string, logN int) Record {
	r := Record{
		CustomerID: customerID, TaskID: taskID, WebhookID: c.WebhookID, Target: c.Target,
		State: stateNames[c.State], Attempts: int(c.Attempts), Delivery: int(c.Delivery),
		Chain: uint64(c.Chain), NextAttemptAt: msPtr(c.Next), LastAttemptAt: msPtr(c.Last),
	}
	if c.Succeeded != nil {
		r.Succeeded = ptr(*c.Succeeded == 1)
	}
	r.Log = c.entries(logN)
	return r
}

// entries decodes the newest n entries of the log, oldest first. An empty log is written by
// cjson as {} (an empty table), and reads as none.
func (c compact) entries(n int) []AttemptLog {
	if len(c.Log) == 0 || c.Log[0] != '[' {
		return nil
	}
	var raw [][]any
	if json.Unmarshal(c.Log, &raw) != nil {
		return nil
	}
	raw = raw[max(0, len(raw)-n):]
	out := make([]AttemptLog, 0, len(raw))
	for _, e := range raw {
		if entry, ok := entryOf(e); ok {
			out = append(out, entry)
		}
	}
	return out
}

// entryOf reads one log entry: [attempt, delivery, at ms, status code, duration ms, error,
// response excerpt], the trailing empty values left out.
func entryOf(e []any) (AttemptLog, bool) {
	if len(e) < 3 {
		return AttemptLog{}, false
	}
	num := func(i int) int64 {
		if i >= len(e) {
			return 0
		}
		f, _ := e[i].(float64)
		return int64(f)
	}
	str := func(i int) string {
		if i >= len(e) {
			return ""
		}
		s, _ := e[i].(string)
		// An older entry's error is cut to a byte count, possibly inside a character.
		return strings.ToValidUTF8(s, "")
	}
	return AttemptLog{
		Attempt: int(num(0)), Delivery: int(num(1)), At: time.UnixMilli(num(2)).UTC(),
		StatusCode: int(num(3)), DurationMS: num(4), Error: str(5), ResponseExcerpt: str(6),
	}, true
}

// encodeLog is one entry as record.lua stores it.
func encodeLog(e AttemptLog) ([]byte, error) {
	v := []any{e.Attempt, e.Delivery, e.At.UnixMilli(), e.StatusCode, e.DurationMS, e.Error, e.ResponseExcerpt}
	switch {
	case e.ResponseExcerpt != "":
	case e.Error != "":
		v = v[:6]
	default:
		v = v[:5]
	}
	return json.Marshal(v)
}

func msPtr(ms float64) *time.Time {
	if ms <= 0 || ms > math.MaxInt64 {
		return nil
	}
	t := time.UnixMilli(int64(ms)).UTC()
	return &t
}

// summary is c as a list shows it.
func (c compact) summary(taskID string, lastAttemptAt *time.Time) *Summary {
	sum := &Summary{
		TaskID: taskID, State: stateNames[c.State], Target: c.Target, Attempts: int(c.Attempts),
		Delivery: int(c.Delivery), LastAttemptAt: lastAttemptAt, NextAttemptAt: msPtr(c.Next),
	}
	if c.Succeeded != nil {
		sum.Succeeded = ptr(*c.Succeeded == 1)
	}
	if last := c.entries(1); len(last) == 1 {
		sum.Last = &last[0]
	}
	return sum
}

// legacyLog is an attempt log entry of the old form (JSON with long names).
type legacyLog struct {
	Attempt         int    `json:"attempt"`
	Delivery        int    `json:"delivery"`
	AtMS            int64  `json:"at_ms"`
	StatusCode      int    `json:"status_code,omitempty"`
	Error           string `json:"error,omitempty"`
	DurationMS      int64  `json:"duration_ms"`
	ResponseExcerpt string `json:"response_excerpt,omitempty"`
}

func decodeLegacyLog(raw string) (AttemptLog, bool) {
	if raw == "" {
		return AttemptLog{}, false
	}
	var e legacyLog
	if json.Unmarshal([]byte(raw), &e) != nil {
		return AttemptLog{}, false
	}
	return AttemptLog{
		Attempt: e.Attempt, Delivery: e.Delivery, At: time.UnixMilli(e.AtMS).UTC(),
		StatusCode: e.StatusCode, Error: e.Error, DurationMS: e.DurationMS,
		ResponseExcerpt: e.ResponseExcerpt,
	}, true
}
