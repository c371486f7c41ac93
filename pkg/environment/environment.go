// Package environment names a customer's two environments. Like Stripe's test mode, every
// customer has a live and a test environment, each with its own API key, callback auth key,
// signing secret, profile and tasks, so that an integration can be built and tried without
// touching live data (docs/environments.md).
package environment

// Env is live or test. The zero value is not an environment; Parse("") gives Live, since an
// event without the field is a live one.
type Env string

const (
	Live Env = "live"
	Test Env = "test"
)

// All lists the environments, live first, so metrics can be initialised for each.
var All = []Env{Live, Test}

// Parse reads an environment's name; "" is Live.
func Parse(s string) (Env, bool) {
	switch s {
	case "", string(Live):
		return Live, true
	case string(Test):
		return Test, true
	}
	return "", false
}

// KeyScope is what an environment adds to a customer's Redis keys, after the customer's hash
// tag: nothing for live, so every key written before test environments existed is the live
// environment's as it stands (no rewrite, and workers of both versions agree during an upgrade),
// and "test:" for test, which no live key begins with.
func (e Env) KeyScope() string {
	if e == Test {
		return "test:"
	}
	return ""
}

// String is the name; an Env that is not set reads as live.
func (e Env) String() string {
	if e == Test {
		return string(Test)
	}
	return string(Live)
}
