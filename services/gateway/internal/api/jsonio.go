package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"refonte.ai/callbacks/pkg/event"
)

// errorBody is the contract's error shape.
type errorBody struct {
	StatusCode int    `json:"status_code"`
	Error      string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeRaw(w, code, b)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(errorBody{StatusCode: code, Error: msg})
	writeRaw(w, code, b)
}

// unavailable answers a failure of Redis or NATS: the client may simply try again.
func unavailable(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "temporarily unavailable, try again")
}

// requestError is a request the client must fix.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) *requestError {
	return &requestError{code: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// decodeJSON reads exactly one JSON object into v (a pointer to a struct of plain fields) with
// the rules the workers apply to events (pkg/event's CheckStrict): no duplicate keys, valid
// UTF-8 only, bounded nesting, numbers a float64 can hold, nothing after the object. Keys must
// match v's field names exactly — encoding/json alone would take "Customer_ID" for
// "customer_id" — and none may be unknown. Bodies over limit bytes get 413.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) *requestError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &requestError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)}
	case err != nil:
		return badRequest("request body could not be read")
	case len(bytes.TrimSpace(body)) == 0:
		return badRequest("request body is empty; want a JSON object")
	}
	return decodeStrict(body, v)
}

// decodeStrict is decodeJSON once the body is read.
func decodeStrict(body []byte, v any) *requestError {
	if err := event.CheckStrict(body); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	if bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
		return badRequest("invalid JSON body: want a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return badRequest("invalid JSON body: want a JSON object")
	}
	known := jsonNames(v)
	for key := range fields {
		if !slices.Contains(known, key) {
			return badRequest("unknown field %q (want %s)", key, strings.Join(known, ", "))
		}
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return badRequest("field %q: want a %s", typeErr.Field, typeErr.Type)
		}
		return badRequest("invalid JSON body: %v", err)
	}
	return nil
}

// jsonNames lists the JSON names of the fields of the struct v points to.
func jsonNames(v any) []string {
	t := reflect.TypeOf(v).Elem()
	names := make([]string, 0, t.NumField())
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" {
			name = f.Name
		}
		if name != "-" && f.IsExported() {
			names = append(names, name)
		}
	}
	return names
}

// query returns the request's query parameters, refusing any not in allowed and any given
// twice: a typo (or a customer_id someone hoped would be honoured) is an error, not ignored.
func query(r *http.Request, allowed ...string) (map[string]string, *requestError) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("malformed query string")
	}
	out := make(map[string]string, len(vals))
	for k, v := range vals {
		if !slices.Contains(allowed, k) {
			return nil, badRequest("unknown query parameter %q (want %s)", k, strings.Join(allowed, ", "))
		}
		if len(v) > 1 {
			return nil, badRequest("query parameter %q given more than once", k)
		}
		out[k] = v[0]
	}
	return out, nil
}
