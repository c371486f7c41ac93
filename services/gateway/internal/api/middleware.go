package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"go.uber.org/zap"

	"refonte.ai/callbacks/pkg/environment"
)

// requestInfo collects, for the request's log line, what only inner handlers learn.
type requestInfo struct {
	customerID  string
	environment environment.Env
}

type infoKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(infoKey{}).(*requestInfo)
	return info
}

// observe logs one line per request and feeds the metrics. The line names the route pattern,
// never the query, headers or body: those are where secrets travel.
func (a *API) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.Log.Error("handler panicked", zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
				if !sw.wroteHeader {
					writeError(sw, http.StatusInternalServerError, "internal error")
				}
			}
			route := r.Pattern // set by the mux on this very request
			if route == "" || route == "/" {
				route = "unmatched"
			}
			elapsed := time.Since(start)
			a.metrics.observe(route, sw.code(), elapsed)
			level := zap.InfoLevel
			if probeRoutes[route] && sw.code() < 400 {
				level = zap.DebugLevel // scraped every few seconds: noise at info
			}
			a.Log.Log(level, "request",
				zap.String("method", r.Method),
				zap.String("route", route),
				zap.Int("status", sw.code()),
				zap.Duration("duration", elapsed),
				zap.String("customer_id", info.customerID),
				zap.String("environment", string(info.environment)),
				zap.String("remote", r.RemoteAddr))
		}()
		next.ServeHTTP(sw, r)
	})
}

var probeRoutes = map[string]bool{"GET /healthz": true, "GET /readyz": true, "GET /metrics": true}

type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) code() int {
	if !s.wroteHeader {
		return http.StatusOK
	}
	return s.status
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// securityHeaders are set on every answer: nothing here is meant to be rendered, framed,
// sniffed or cached (answers carry keys and customer data).
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

// maxHeaderBytes bounds a request's line and headers. The server itself allows more
// (serverMaxHeaderBytes) so that this check, not net/http's plain-text answer, refuses them.
const maxHeaderBytes = 32 << 10

// limitHeaders answers 431 in the API's error shape when the request line and headers exceed
// maxHeaderBytes.
func limitHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if headerBytes(r) > maxHeaderBytes {
			writeError(w, http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("request headers are larger than %d bytes", maxHeaderBytes))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headerBytes is the size of the request line and headers as they came on the wire (HTTP/1.1).
func headerBytes(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len(r.Proto) + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// canonicalPaths redirects a path with "//", "." or ".." segments to its cleaned form, as
// http.ServeMux would, but answers in the API's error shape instead of ServeMux's HTML.
func canonicalPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clean := cleanPath(r.URL.Path)
		if clean == r.URL.Path || r.Method == http.MethodConnect {
			next.ServeHTTP(w, r)
			return
		}
		u := url.URL{Path: clean, RawQuery: r.URL.RawQuery}
		w.Header().Set("Location", u.String())
		writeError(w, http.StatusTemporaryRedirect, "the path is not in canonical form: use "+clean)
	})
}

// cleanPath is path.Clean keeping a trailing slash, as http.ServeMux cleans request paths.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}
