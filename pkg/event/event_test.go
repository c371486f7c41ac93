package event_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/event"
	"refonte.ai/callbacks/schemas"
)

func TestDecode_contract_example(t *testing.T) {
	raw, err := schemas.Files.ReadFile("examples/task-completed.json")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := event.Decode(raw)
	if err != nil {
		t.Fatalf("the contract's example is refused: %v", err)
	}
	if ev.CustomerID != "cust_123" || ev.TaskID != "576c41bf13e36b0600b02b34" || ev.Status != "completed" ||
		ev.CallbackURL != "http://www.example.com/callback" || string(ev.Response) != `{"category":"red"}` {
		t.Errorf("decoded %+v", ev)
	}
	// The callback body is the contract's example callback, field for field.
	wantRaw, _ := schemas.Files.ReadFile("examples/callback.json")
	var got, want any
	if err := json.Unmarshal(ev.CallbackBody(), &got); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(wantRaw, &want)
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Errorf("callback body\n got %s\nwant %s", gb, wb)
	}
	if err := schemas.ValidateCallback(ev.CallbackBody()); err != nil {
		t.Errorf("callback body fails its schema: %v", err)
	}
	if err := schemas.ValidateCallback(wantRaw); err != nil {
		t.Errorf("contract's callback example fails the schema: %v", err)
	}
	// Round trip through the stream encoding.
	again, err := event.Decode(ev.Marshal())
	if err != nil || !bytes.Equal(again.CallbackBody(), ev.CallbackBody()) {
		t.Errorf("Marshal/Decode round trip: %v", err)
	}
}

func TestDecode_unknown_fields_pass_through_verbatim(t *testing.T) {
	raw := `{"customer_id":"c1","task":{"task_id":"t1","status":"error","x_custom":{"deep":[1,2.5,"é"]},"response":null}}`
	ev, err := event.Decode([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ev.CallbackBody()), `"x_custom":{"deep":[1,2.5,"é"]}`) {
		t.Errorf("unknown field lost: %s", ev.CallbackBody())
	}
	if string(ev.Response) != "null" || ev.Status != "error" {
		t.Errorf("response %s status %s", ev.Response, ev.Status)
	}
}

func TestDecode_refusals(t *testing.T) {
	big := `{"customer_id":"c1","task":{"task_id":"t1","status":"completed","pad":"` + strings.Repeat("a", event.DefaultMaxSize) + `"}}`
	deep := `{"customer_id":"c1","task":{"task_id":"t1","status":"completed","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}}`
	cases := []struct {
		name   string
		raw    string
		reason event.Reason
	}{
		{"not json", `hello`, event.ReasonMalformed},
		{"truncated", `{"customer_id":"c1","task":{`, event.ReasonMalformed},
		{"trailing data", `{"customer_id":"c1","task":{"task_id":"t","status":"completed"}} {}`, event.ReasonMalformed},
		{"invalid utf-8", "{\"customer_id\":\"c1\",\"task\":{\"task_id\":\"t\",\"status\":\"completed\",\"x\":\"\xff\"}}", event.ReasonMalformed},
		{"duplicate key", `{"customer_id":"c1","task":{"task_id":"t","status":"completed","status":"error"}}`, event.ReasonMalformed},
		{"duplicate key with escapes", `{"customer_id":"c1","customer\u005fid":"c2","task":{"task_id":"t","status":"completed"}}`, event.ReasonMalformed},
		{"deep nesting", deep, event.ReasonMalformed},
		{"huge number", `{"customer_id":"c1","task":{"task_id":"t","status":"completed","n":1e999}}`, event.ReasonMalformed},
		{"long number", `{"customer_id":"c1","task":{"task_id":"t","status":"completed","n":` + strings.Repeat("9", 100) + `}}`, event.ReasonMalformed},
		{"over the size limit", big, event.ReasonTooLarge},
		{"missing task", `{"customer_id":"c1"}`, event.ReasonSchema},
		{"missing task_id", `{"customer_id":"c1","task":{"status":"completed"}}`, event.ReasonSchema},
		{"bad status", `{"customer_id":"c1","task":{"task_id":"t","status":"done"}}`, event.ReasonSchema},
		{"task_id with path characters", `{"customer_id":"c1","task":{"task_id":"../../etc","status":"completed"}}`, event.ReasonSchema},
		{"task_id with glob characters", `{"customer_id":"c1","task":{"task_id":"t*","status":"completed"}}`, event.ReasonSchema},
		{"customer id not a subject token", `{"customer_id":"c.1>","task":{"task_id":"t","status":"completed"}}`, event.ReasonSchema},
		{"customer id too long", `{"customer_id":"` + strings.Repeat("c", 65) + `","task":{"task_id":"t","status":"completed"}}`, event.ReasonSchema},
		{"callback_url not a string", `{"customer_id":"c1","task":{"task_id":"t","status":"completed","callback_url":5}}`, event.ReasonSchema},
		{"task not an object", `{"customer_id":"c1","task":[]}`, event.ReasonSchema},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := event.Decode([]byte(c.raw))
			reason, ok := event.ReasonOf(err)
			if !ok || reason != c.reason {
				t.Errorf("got %v, want reason %s", err, c.reason)
			}
		})
	}
}

func TestDecode_at_the_size_limit_is_accepted(t *testing.T) {
	head := `{"customer_id":"c1","task":{"task_id":"t1","status":"completed","pad":"`
	tail := `"}}`
	raw := head + strings.Repeat("a", event.DefaultMaxSize-len(head)-len(tail)) + tail
	if len(raw) != event.DefaultMaxSize {
		t.Fatalf("built %d bytes", len(raw))
	}
	if _, err := event.Decode([]byte(raw)); err != nil {
		t.Errorf("an event of exactly MaxSize bytes is refused: %v", err)
	}
}

// The task is passed on compact: white space between tokens goes, white space inside strings
// (after escaped quotes and backslashes too) stays, and an already compact task comes out as is.
func TestDecode_task_is_compacted(t *testing.T) {
	// The only white space between tokens comes after escapes, where a scan that lost track of
	// strings would take it for string content.
	compact := `{"task_id":"t1","status":"completed","note":"a\"b\\","x":[1,2]}`
	spaced := `{"task_id":"t1","status":"completed","note":"a\"b\\","x": [1,` + "\n\t" + `2]}`
	for _, tc := range []struct{ name, task string }{{"compact", compact}, {"spaced", spaced}} {
		ev, err := event.Decode([]byte(`{"customer_id":"c1","task":` + tc.task + `}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if string(ev.Task) != compact {
			t.Errorf("%s: task %s, want %s", tc.name, ev.Task, compact)
		}
	}
}

// The hand-written id check accepts exactly what the schema's pattern accepts.
func TestValidID_matches_the_pattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
	cases := []string{"", "a", "task_1-B", strings.Repeat("x", 128), strings.Repeat("x", 129), "a b", "a.b",
		"a/b", "é", "a\x00", "*", ">", "Z9", "-", "_"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09_-.* \x00\xff/é"
	for range 5000 {
		b := make([]byte, rng.IntN(12))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		if got, want := event.ValidID(c), pattern.MatchString(c); got != want {
			t.Errorf("validID(%q) = %v, the pattern says %v", c, got, want)
		}
	}
}

// A webhook-id goes into an HTTP header and receivers' deduplication keys: 1 to 128 printable
// ASCII characters without spaces.
func TestValidWebhookID(t *testing.T) {
	for id, want := range map[string]bool{
		"evt_1": true, "a:b/c=d": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a b": false, "a\tb": false, "é": false, "a\x7f": false,
	} {
		if got := event.ValidWebhookID(id); got != want {
			t.Errorf("ValidWebhookID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestDecode_environment(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		want        environment.Env
		ok          bool
	}{
		{"absent is live", ``, environment.Live, true},
		{"live", `"environment":"live",`, environment.Live, true},
		{"test", `"environment":"test",`, environment.Test, true},
		{"escaped test", `"environment":"t\u0065st",`, environment.Test, true},
		{"empty", `"environment":"",`, "", false},
		{"other name", `"environment":"staging",`, "", false},
		{"case matters", `"environment":"Test",`, "", false},
		{"null", `"environment":null,`, "", false},
		{"not a string", `"environment":1,`, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := []byte(`{"customer_id":"c1",` + tc.field + `"task":{"task_id":"t1","status":"completed"}}`)
			ev, err := event.Decode(raw)
			if schemaErr := schemas.ValidateTaskCompleted(raw); (schemaErr == nil) != tc.ok {
				t.Fatalf("schema says %v, want ok=%v", schemaErr, tc.ok)
			}
			if !tc.ok {
				if r, _ := event.ReasonOf(err); r != event.ReasonSchema {
					t.Fatalf("Decode = %v, want a schema violation", err)
				}
				return
			}
			if err != nil || ev.Environment != tc.want {
				t.Fatalf("Decode = %q, %v; want %q", ev.Environment, err, tc.want)
			}
			again, err := event.Decode(ev.Marshal())
			if err != nil || again.Environment != tc.want || !bytes.Equal(again.CallbackBody(), ev.CallbackBody()) {
				t.Fatalf("round trip gave %q, %v", again.Environment, err)
			}
		})
	}
}

// A task field named environment is the customer's own data, not the task's environment.
func TestDecode_environment_inside_task_is_passed_through(t *testing.T) {
	ev, err := event.Decode([]byte(`{"customer_id":"c1","task":{"task_id":"t1","status":"completed","environment":"test"}}`))
	if err != nil || ev.Environment != environment.Live {
		t.Fatalf("Decode = %q, %v; want live", ev.Environment, err)
	}
	if !strings.Contains(string(ev.CallbackBody()), `"environment":"test"`) {
		t.Errorf("task field lost: %s", ev.CallbackBody())
	}
}
