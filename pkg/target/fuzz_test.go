package target_test

import (
	"errors"
	"strings"
	"testing"

	"refonte.ai/callbacks/pkg/target"
)

// FuzzParse: nothing crashes the parser, every refusal is ErrUnusable, and nothing accepted can
// smuggle a header or a second recipient into a request or a mail.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"https://example.com/hook", "http://a:b@example.com:8080/x?y#z",
		"a@b.example", "mailto:a@b.example", "Bob <a@b.example>", "a@b.example\r\nBcc: x@y.example",
		"a@b.example,c@d.example", "\"quoted local\"@example.com", "mailto:a@b.example?subject=x",
		"ftp://x", "", "@", "a@", "http://[::1]:80/", "http://%41.example/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := target.Parse(s)
		if err != nil {
			if !errors.Is(err, target.ErrUnusable) {
				t.Fatalf("Parse(%q): error %v is not ErrUnusable", s, err)
			}
			return
		}
		switch tg.Kind {
		case target.None:
			if s != "" {
				t.Fatalf("Parse(%q) = None", s)
			}
		case target.HTTP:
			if tg.URL == nil || (tg.URL.Scheme != "http" && tg.URL.Scheme != "https") || tg.URL.Hostname() == "" {
				t.Fatalf("Parse(%q) accepted URL %v", s, tg.URL)
			}
			if strings.ContainsAny(tg.URL.String(), "\r\n") {
				t.Fatalf("URL with a line break: %q", tg.URL.String())
			}
		case target.Email:
			if strings.ContainsAny(tg.Address, "\r\n<>,; ") || strings.Count(tg.Address, "@") < 1 {
				t.Fatalf("Parse(%q) accepted mailbox %q", s, tg.Address)
			}
		}
	})
}
