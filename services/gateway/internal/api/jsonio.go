package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
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

// decodeJSON reads exactly one JSON object into v: no unknown fields, nothing after it, at most
// limit bytes.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) *requestError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, tokErr := dec.Token(); tokErr != io.EOF {
			err = errTrailing
			if tokErr != nil {
				err = tokErr
			}
		}
	}
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooLarge):
		return &requestError{code: http.StatusRequestEntityTooLarge,
			msg: fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)}
	case errors.Is(err, io.EOF):
		return badRequest("request body is empty; want a JSON object")
	case errors.Is(err, errTrailing):
		return badRequest("unexpected data after the JSON object")
	default:
		return badRequest("invalid JSON body: %v", err)
	}
}

var errTrailing = errors.New("trailing data")

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
