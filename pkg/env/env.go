// Package env reads service configuration from environment variables. Each reader records the
// first problem it meets, so a service can read its whole Config and then report every bad
// variable at once.
package env

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Reader reads variables through lookup (os.LookupEnv by default) and collects errors.
type Reader struct {
	lookup func(string) (string, bool)
	errs   []error
}

// New reads the process environment.
func New() *Reader { return &Reader{lookup: os.LookupEnv} }

// FromMap reads a map, for tests.
func FromMap(m map[string]string) *Reader {
	return &Reader{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Err returns every problem met so far, joined.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Fail records a problem found while checking values.
func (r *Reader) Fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf(format, args...))
}

func (r *Reader) get(name string) (string, bool) {
	v, ok := r.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

// String returns the variable or def.
func (r *Reader) String(name, def string) string {
	if v, ok := r.get(name); ok {
		return v
	}
	return def
}

// Int returns the variable as an int, or def.
func (r *Reader) Int(name string, def int) int {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		r.Fail("%s=%q: not a whole number", name, v)
		return def
	}
	return n
}

// Bool returns the variable as a bool, or def.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Fail("%s=%q: not true or false", name, v)
		return def
	}
	return b
}

// Duration returns the variable as a Go duration, or def.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		r.Fail("%s=%q: not a duration (e.g. 30s, 5m)", name, v)
		return def
	}
	return d
}

// List returns the comma-separated variable, or def.
func (r *Reader) List(name string, def []string) []string {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Prefixes returns the comma-separated list of CIDR ranges (masked to their network), or nil.
func (r *Reader) Prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range r.List(name, nil) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			r.Fail("%s: %q: %v", name, s, err)
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

// Ports returns the comma-separated list of TCP ports (1-65535), or nil.
func (r *Reader) Ports(name string) []uint16 {
	var out []uint16
	for _, s := range r.List(name, nil) {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			r.Fail("%s: %q is not a port", name, s)
			continue
		}
		out = append(out, uint16(p))
	}
	return out
}
