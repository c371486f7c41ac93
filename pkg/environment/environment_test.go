package environment_test

import (
	"testing"

	"refonte.ai/callbacks/pkg/environment"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]environment.Env{"": environment.Live, "live": environment.Live, "test": environment.Test} {
		if got, ok := environment.Parse(in); !ok || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{"Test", "LIVE", "staging", " test"} {
		if _, ok := environment.Parse(in); ok {
			t.Errorf("Parse(%q) accepted", in)
		}
	}
}

// Live keys keep the form they had before environments existed; test keys never look like a
// live one.
func TestKeyScope(t *testing.T) {
	if environment.Live.KeyScope() != "" || environment.Env("").KeyScope() != "" {
		t.Error("live data moved to new keys")
	}
	if environment.Test.KeyScope() != "test:" {
		t.Errorf("test scope %q", environment.Test.KeyScope())
	}
}
