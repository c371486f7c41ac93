package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxDepth is how deeply objects and arrays may nest in an event. Deeper documents are refused
// before any other parser sees them, so a hostile event cannot exhaust a decoder's stack.
const MaxDepth = 64

// maxNumberLen bounds the text of one number: a thousand-digit number is legal JSON, but most
// receivers (JavaScript among them) cannot read it back, so it is refused at the door.
const maxNumberLen = 64

// CheckStrict walks data once and refuses what encoding/json would silently accept: invalid
// UTF-8, duplicate object keys, nesting beyond MaxDepth and numbers that do not fit a float64.
// It is also a full syntax check, so callers need no json.Valid. Every JSON document the
// services read from outside — events, and the gateway's request bodies — passes through it.
func CheckStrict(data []byte) error {
	_, err := scan(data)
	return err
}

// span is where one value lies in the event; end is 0 when the key is absent.
type span struct{ start, end int }

func (sp span) present() bool { return sp.end > 0 }

// fields are the spans of the values the contract names, found by exact key (encoding/json would
// match keys case-insensitively, where the schema does not).
type fields struct {
	customerID, environment, task             span
	taskID, status, callbackURL, taskResponse span
}

// scan checks data as checkStrict does and returns where the contract's fields are.
func scan(data []byte) (fields, error) {
	s := scanner{data: data}
	s.skipSpace()
	if err := s.value(0); err != nil {
		return fields{}, err
	}
	s.skipSpace()
	if s.pos != len(s.data) {
		return fields{}, s.errorf("unexpected data after the top-level value")
	}
	return s.found, nil
}

type scanner struct {
	data   []byte
	pos    int
	inTask bool // inside the value of the top-level "task" key
	found  fields
}

var errEnd = errors.New("unexpected end of JSON input")

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return errEnd
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth + 1)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
				s.pos += len(lit)
				return nil
			}
		}
		return s.errorf("invalid character %q looking for a value", c)
	}
}

// object scans one object: keys, duplicate detection and the event's known fields. It stays one
// function because it is the scanner's hot loop (every event passes through it): splitting it
// costs calls per key on the workers' decode path.
func (s *scanner) object(depth int) error {
	if depth > MaxDepth {
		return s.errorf("nesting deeper than %d levels", MaxDepth)
	}
	s.pos++ // '{'
	var keys []string
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEnd
		}
		if s.data[s.pos] != '"' {
			return s.errorf("object key must be a string")
		}
		keyStart := s.pos
		raw, escaped, err := s.str()
		if err != nil {
			return err
		}
		key := string(raw)
		if escaped {
			if err := json.Unmarshal(s.data[keyStart:s.pos], &key); err != nil {
				return s.errorf("invalid object key: %v", err)
			}
		}
		for _, k := range keys {
			if k == key {
				return s.errorf("duplicate object key %q", truncate(key, 64))
			}
		}
		keys = append(keys, key)
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEnd
		}
		if s.data[s.pos] != ':' {
			return s.errorf("expected ':' after object key")
		}
		s.pos++
		s.skipSpace()
		start := s.pos
		enteringTask := depth == 1 && key == "task"
		if enteringTask {
			s.inTask = true
		}
		if err := s.value(depth); err != nil {
			return err
		}
		if enteringTask {
			s.inTask = false
		}
		s.record(depth, key, span{start, s.pos})
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEnd
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.errorf("expected ',' or '}' in object")
		}
	}
}

func (s *scanner) record(depth int, key string, sp span) {
	switch {
	case depth == 1 && key == "customer_id":
		s.found.customerID = sp
	case depth == 1 && key == "task":
		s.found.task = sp
	case depth == 1 && key == "environment":
		s.found.environment = sp
	case depth == 2 && s.inTask:
		switch key {
		case "task_id":
			s.found.taskID = sp
		case "status":
			s.found.status = sp
		case "callback_url":
			s.found.callbackURL = sp
		case "response":
			s.found.taskResponse = sp
		}
	}
}

func (s *scanner) array(depth int) error {
	if depth > MaxDepth {
		return s.errorf("nesting deeper than %d levels", MaxDepth)
	}
	s.pos++ // '['
	s.skipSpace()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.skipSpace()
		if err := s.value(depth); err != nil {
			return err
		}
		s.skipSpace()
		if s.pos >= len(s.data) {
			return errEnd
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.errorf("expected ',' or ']' in array")
		}
	}
}

// str scans a string starting at its opening quote. It returns the raw bytes between the quotes
// and whether they contain escapes.
func (s *scanner) str() (raw []byte, escaped bool, err error) {
	s.pos++ // opening quote
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			raw = s.data[start:s.pos]
			s.pos++
			return raw, escaped, nil
		case c == '\\':
			escaped = true
			if s.pos+1 >= len(s.data) {
				return nil, false, errEnd
			}
			switch s.data[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if s.pos+6 > len(s.data) {
					return nil, false, errEnd
				}
				for _, h := range s.data[s.pos+2 : s.pos+6] {
					if !isHex(h) {
						return nil, false, s.errorf("invalid \\u escape")
					}
				}
				s.pos += 6
			default:
				return nil, false, s.errorf("invalid escape character %q", s.data[s.pos+1])
			}
		case c < 0x20:
			return nil, false, s.errorf("control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, false, s.errorf("invalid UTF-8 in string")
			}
			s.pos += size
		}
	}
	return nil, false, errEnd
}

func (s *scanner) number() error {
	start := s.pos
	if s.data[s.pos] == '-' {
		s.pos++
	}
	if s.pos >= len(s.data) {
		return errEnd
	}
	switch c := s.data[s.pos]; {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return s.errorf("invalid number")
	}
	if s.pos < len(s.data) && s.data[s.pos] == '.' {
		s.pos++
		if s.digits() == 0 {
			return s.errorf("invalid number: no digits after '.'")
		}
	}
	if s.pos < len(s.data) && (s.data[s.pos] == 'e' || s.data[s.pos] == 'E') {
		s.pos++
		if s.pos < len(s.data) && (s.data[s.pos] == '+' || s.data[s.pos] == '-') {
			s.pos++
		}
		if s.digits() == 0 {
			return s.errorf("invalid number: no digits in exponent")
		}
	}
	text := s.data[start:s.pos]
	if len(text) > maxNumberLen {
		return s.errorf("number longer than %d characters", maxNumberLen)
	}
	f, err := strconv.ParseFloat(string(text), 64)
	if err != nil || math.IsInf(f, 0) {
		return s.errorf("number %s is out of the range of a 64-bit float", text)
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
		n++
	}
	return n
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
