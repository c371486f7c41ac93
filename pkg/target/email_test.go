package target_test

import (
	"errors"
	"strings"
	"testing"

	"refonte.ai/callbacks/pkg/target"
)

func TestParse_email_targets_give_the_bare_mailbox(t *testing.T) {
	for _, c := range []struct{ in, address, host string }{
		{"a@b.example", "a@b.example", "b.example"},
		{"mailto:a@b.example", "a@b.example", "b.example"},
		{"MAILTO:a@b.example", "a@b.example", "b.example"},
		{"first.last+tag@sub.b.example", "first.last+tag@sub.b.example", "sub.b.example"},
		{"mailto:o'brien@b.example", "o'brien@b.example", "b.example"},
		{"ops@localhost", "ops@localhost", "localhost"},
	} {
		tg, err := target.Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if tg.Kind != target.Email || tg.Address != c.address || tg.Host() != c.host || tg.Raw != c.in {
			t.Errorf("Parse(%q) = kind %v, address %q, host %q, raw %q; want email %q at %q",
				c.in, tg.Kind, tg.Address, tg.Host(), tg.Raw, c.address, c.host)
		}
		if tg.Redacted() != c.in {
			t.Errorf("Parse(%q).Redacted() = %q, want it as written", c.in, tg.Redacted())
		}
	}
}

// Only one bare mailbox is accepted: nothing a customer writes may add a header, a recipient or
// a display name to the mail.
func TestParse_email_targets_that_are_not_one_bare_mailbox_are_unusable(t *testing.T) {
	for _, in := range []string{
		// header injection
		"a@b.example\r\nBcc: x@y.example",
		"a@b.example\nBcc: x@y.example",
		"a@b.example\rBcc: x@y.example",
		"mailto:a@b.example\r\nBcc: x@y.example",
		"a@b.example\x00",
		"mailto:a@b.example%0D%0ABcc:x@y.example",
		// display names and comments
		"Bob <a@b.example>",
		`"Bob" <a@b.example>`,
		"<a@b.example>",
		"mailto:Bob <a@b.example>",
		"a@b.example (Bob)",
		// several addresses, groups, mailto headers
		"a@b.example,c@d.example",
		"a@b.example, c@d.example",
		"a@b.example;c@d.example",
		"mailto:a@b.example,c@d.example",
		"undisclosed-recipients:;",
		"team: a@b.example, c@d.example;",
		"mailto:a@b.example?cc=x@y.example",
		"mailto:a@b.example?subject=hi",
		// not a mailbox at all
		"mailto:",
		"a@",
		"@b.example",
		"a",
		"a@@b.example",
		"a b@example.com",
		`"a b"@example.com`,
		`a\@b@example.com`,
		"a@b.example" + strings.Repeat("x", target.MaxLength),
	} {
		tg, err := target.Parse(in)
		if !errors.Is(err, target.ErrUnusable) {
			t.Errorf("Parse(%q) = kind %v, address %q, %v; want ErrUnusable", in, tg.Kind, tg.Address, err)
		}
	}
}

func TestResolve_email_default_applies_when_the_task_has_none(t *testing.T) {
	tg, err := target.Resolve("", "mailto:ops@b.example")
	if err != nil || tg.Kind != target.Email || tg.Address != "ops@b.example" {
		t.Errorf("Resolve(\"\", mailto default) = %v %q, %v; want the default mailbox", tg.Kind, tg.Address, err)
	}
	tg, err = target.Resolve("a@b.example", "https://default.example/")
	if err != nil || tg.Kind != target.Email || tg.Address != "a@b.example" {
		t.Errorf("the task's address was not preferred: %v %q, %v", tg.Kind, tg.Address, err)
	}
}
