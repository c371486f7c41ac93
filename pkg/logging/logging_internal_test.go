package logging

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// logTo builds the logger of format as New does, writing to a file, logs one warning as the
// worker does for a refused event and returns what was written.
func logTo(t *testing.T, format string, colour bool) string {
	t.Helper()
	cfg, err := config(format, "info", colour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "service.log")
	cfg.OutputPaths = []string{path}
	log, err := cfg.Build()
	if err != nil {
		t.Fatal(err)
	}
	log.Warn("event refused", zap.String("reason", "schema_violation"))
	_ = log.Sync()
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestConsole_without_colour_writes_no_escape_codes(t *testing.T) {
	if out := logTo(t, "console", false); strings.Contains(out, "\x1b[") || !strings.Contains(out, "WARN") {
		t.Errorf("console log without colour: %q; want WARN and no escape codes", out)
	}
	if out := logTo(t, "console", true); !strings.Contains(out, "\x1b[") {
		t.Errorf("console log with colour: %q; want escape codes", out)
	}
}

func TestWarnings_carry_no_stack_trace(t *testing.T) {
	for _, format := range []string{"console", "json"} {
		out := logTo(t, format, false)
		// A stack trace is a key of its own in JSON, and further lines on the console.
		if strings.Count(strings.TrimSpace(out), "\n") != 0 || strings.Contains(out, `"stacktrace"`) {
			t.Errorf("%s warning carries a stack trace:\n%s", format, out)
		}
	}
}

func TestIsTerminal_is_false_for_a_file(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Error("a regular file was taken for a terminal")
	}
}
