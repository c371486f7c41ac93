package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

type fuzzBody struct {
	CustomerID         string  `json:"customer_id"`
	DefaultCallbackURL *string `json:"default_callback_url"`
}

// What decodeStrict accepts, encoding/json reads the same way, and it accepts nothing
// encoding/json would read differently: no key twice, no key matched only by case-folding.
func FuzzDecodeStrict_agrees_with_encoding_json_on_what_it_accepts(f *testing.F) {
	for _, seed := range []string{
		`{"customer_id":"c","default_callback_url":"https://a.example/"}`,
		`{"customer_id":"c","customer_id":"d"}`,
		`{"CUSTOMER_ID":"c"}`,
		`{"default_callback_url":null}`,
		"{\"customer_id\":\"\xff\"}",
		`{"customer_id":"c"} x`,
		`[1]`, `null`, `{"customer_id":1}`, `{"other":{}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var strict fuzzBody
		if e := decodeStrict(body, &strict); e != nil {
			if e.code != 400 || e.msg == "" {
				t.Fatalf("refusal %+v: want a 400 with a message", e)
			}
			return
		}
		var loose fuzzBody
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&loose); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		if !reflect.DeepEqual(strict, loose) {
			t.Fatalf("accepted %q as %+v; encoding/json reads %+v", body, strict, loose)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatal(err)
		}
		for k := range fields {
			if k != "customer_id" && k != "default_callback_url" {
				t.Fatalf("accepted %q with key %q", body, k)
			}
		}
	})
}
