package event_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/schemas"
)

// FuzzDecode: no input crashes the decoder, every refusal carries a Reason, and whatever is
// accepted yields a callback body that is valid JSON, valid UTF-8 and passes its schema.
func FuzzDecode(f *testing.F) {
	example, _ := schemas.Files.ReadFile("examples/task-completed.json")
	f.Add(example)
	f.Add([]byte(`{"customer_id":"c1","task":{"task_id":"t","status":"error","response":null}}`))
	f.Add([]byte(`{"customer_id":"c1","task":{"task_id":"t","status":"completed","a":{"a":{"a":[1,-0.5e3,true,null]}}}}`))
	f.Add([]byte(`{"customer_id":"c1","customer_id":"c1","task":{}}`))
	f.Add([]byte("{\"customer_id\":\"c1\",\"task\":{\"task_id\":\"t\",\"status\":\"completed\",\"x\":\"\\ud800\"}}"))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	f.Add([]byte(`{"customer_id":"c1","task":{"task_id":"t","status":"completed","n":1e308}}`))
	f.Add([]byte(`{"customer_id":"c1","environment":"test","task":{"task_id":"t","status":"completed"}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := event.Decode(raw)
		if err != nil {
			if _, ok := event.ReasonOf(err); !ok {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		var compacted bytes.Buffer
		if err := json.Compact(&compacted, ev.Task); err != nil || !bytes.Equal(compacted.Bytes(), ev.Task) {
			t.Fatalf("task is not compact JSON: %q", ev.Task)
		}
		if again, err := event.Decode(ev.Marshal()); err != nil || again.Environment != ev.Environment {
			t.Fatalf("Marshal/Decode round trip lost the environment %q: %v", ev.Environment, err)
		}
		body := ev.CallbackBody()
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("callback body is not valid JSON: %q", body)
		}
		if err := schemas.ValidateCallback(body); err != nil {
			t.Fatalf("callback body fails its schema: %v\n%s", err, body)
		}
		if !event.ValidCustomerID(ev.CustomerID) || !event.ValidTaskID(ev.TaskID) {
			t.Fatalf("accepted ids %q %q", ev.CustomerID, ev.TaskID)
		}
	})
}

// FuzzStrictAgreesWithEncodingJSON: the strict checker never accepts what encoding/json rejects.
func FuzzStrictAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `"a"`, `1`, `-0.0e+1`, `{"a":[1,{"b":null}]}`, `"\u00e9\n"`, `01`, `[1,]`, `{"a" 1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if event.CheckStrict(raw) == nil && !json.Valid(raw) {
			t.Fatalf("strict check accepts invalid JSON %q", raw)
		}
	})
}

// FuzzDecodeAgreesWithSchema: Decode checks the schema's constraints in code; for every
// syntactically acceptable event it must reach the schema validator's verdict.
func FuzzDecodeAgreesWithSchema(f *testing.F) {
	example, _ := schemas.Files.ReadFile("examples/task-completed.json")
	for _, s := range []string{string(example),
		`{"customer_id":"c1","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","task":{"task_id":"t","status":"error","callback_url":null}}`,
		`{"customer_id":"c1","task":{"task_id":"t","status":"done"}}`,
		`{"Customer_id":"c1","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c\u0031","task":{"task_id":"t\u002a","status":"error"}}`,
		`{"customer_id":"c1","task":{"task_id":"t","status":"error","callback_url":5}}`,
		`{"customer_id":"c1","task":[{"task_id":"t","status":"error"}]}`,
		`{"customer_id":"c1","task":{"x":{"task_id":"t","status":"error"}}}`,
		`["customer_id"]`, `null`, `{"customer_id":1,"task":{}}`,
		`{"customer_id":"c1","environment":"test","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","environment":"live","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","environment":"Test","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","environment":"","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","environment":null,"task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","environment":"t\u0065st","task":{"task_id":"t","status":"error"}}`,
		`{"customer_id":"c1","task":{"task_id":"t","status":"error","environment":"bogus"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > event.DefaultMaxSize || event.CheckStrict(raw) != nil {
			return
		}
		_, err := event.Decode(raw)
		schemaErr := schemas.ValidateTaskCompleted(raw)
		if (err == nil) != (schemaErr == nil) {
			t.Fatalf("Decode says %v, the schema says %v, for %s", err, schemaErr, raw)
		}
	})
}
