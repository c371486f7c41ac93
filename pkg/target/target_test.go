package target_test

import (
	"errors"
	"strings"
	"testing"

	"refonte.ai/callbacks/pkg/target"
)

func TestParse_http_targets(t *testing.T) {
	for _, s := range []string{
		"http://www.example.com/callback",
		"https://hooks.example.com:8443/a?b=c",
		"HTTPS://EXAMPLE.COM/",
		"https://user:secret@example.com/hook",
	} {
		tg, err := target.Parse(s)
		if err != nil || tg.Kind != target.HTTP {
			t.Errorf("Parse(%q) = %v, %v; want an HTTP target", s, tg.Kind, err)
		}
	}
	tg, _ := target.Parse("https://user:secret@example.com/hook#frag")
	if strings.Contains(tg.Redacted(), "secret") {
		t.Errorf("Redacted() leaks the password: %s", tg.Redacted())
	}
	if tg.URL.Fragment != "" {
		t.Errorf("fragment kept: %s", tg.URL)
	}
}

func TestParse_unusable_targets(t *testing.T) {
	for _, s := range []string{
		"ftp://files.example/drop",
		"javascript:alert(1)",
		"file:///etc/passwd",
		"http://",
		"https:///path-only",
		"not a url",
		"http://exa mple.com/",
		"http://example.com/\r\nX-Injected: 1",
		"https://" + strings.Repeat("a", target.MaxLength) + ".com",
		"gopher://example.com:70/",
	} {
		if _, err := target.Parse(s); !errors.Is(err, target.ErrUnusable) {
			t.Errorf("Parse(%q) = %v; want ErrUnusable", s, err)
		}
	}
}

func TestResolve_prefers_the_task_then_the_default(t *testing.T) {
	tg, _ := target.Resolve("https://task.example/", "https://default.example/")
	if tg.Host() != "task.example" {
		t.Errorf("task URL not preferred: %s", tg.Raw)
	}
	tg, _ = target.Resolve("", "https://default.example/")
	if tg.Host() != "default.example" {
		t.Errorf("default not used: %s", tg.Raw)
	}
	tg, err := target.Resolve("", "")
	if err != nil || tg.Kind != target.None {
		t.Errorf("no target: %v %v", tg.Kind, err)
	}
}
