package api

import (
	"encoding/json"
	"testing"
)

func TestTaskWithFlag_keeps_the_stored_bytes_and_owns_the_field(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name, task string
		flag       *bool
		want       string
	}{
		{"unknown", `{"task_id":"t1","x":{"a":[1,2]}}`, nil, `{"task_id":"t1","x":{"a":[1,2]}}`},
		{"true", `{"task_id":"t1","x":"é\u2028"}`, &yes, `{"task_id":"t1","x":"é\u2028","callback_succeeded":true}`},
		{"false", `{"task_id":"t1"}`, &no, `{"task_id":"t1","callback_succeeded":false}`},
		{"empty object", `{}`, &yes, `{"callback_succeeded":true}`},
		{"task carries its own", `{"callback_succeeded":"yes","task_id":"t1","m":{"callback_succeeded":1}}`, &no,
			`{"task_id":"t1","m":{"callback_succeeded":1},"callback_succeeded":false}`},
		{"task carries its own, flag unknown", `{"task_id":"t1","callback_succeeded":true}`, nil, `{"task_id":"t1"}`},
	} {
		got, err := taskWithFlag(json.RawMessage(tc.task), tc.flag)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %s (%v), want %s", tc.name, got, err, tc.want)
		}
		if err == nil && !json.Valid(got) {
			t.Errorf("%s: invalid JSON %s", tc.name, got)
		}
	}
	if _, err := taskWithFlag(json.RawMessage(`[1]`), &yes); err == nil {
		t.Error("a non-object task was accepted")
	}
}
