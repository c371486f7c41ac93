package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The gateway reads request bodies with the rules the workers apply to events: what encoding/json
// would quietly accept (a key twice, a key in another case, invalid UTF-8, deep nesting) is a
// 400 that says what is wrong, and nothing is stored.
func TestRequestBodies_are_decoded_strictly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "https://first.example/hook")
	deep := strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70)
	for name, tc := range map[string]struct {
		method, path, body, wantMsg string
		admin                       bool
	}{
		"profile key twice":       {"PATCH", "/v1/profile", `{"default_callback_url":"https://a.example/","default_callback_url":"https://b.example/"}`, "duplicate", false},
		"profile key in caps":     {"PATCH", "/v1/profile", `{"Default_Callback_URL":"https://a.example/"}`, "unknown field", false},
		"profile invalid UTF-8":   {"PATCH", "/v1/profile", "{\"default_callback_url\":\"https://a.example/\xff\"}", "UTF-8", false},
		"profile too deep":        {"PATCH", "/v1/profile", deep, "nesting", false},
		"profile trailing data":   {"PATCH", "/v1/profile", `{"default_callback_url":""} {}`, "after", false},
		"profile not an object":   {"PATCH", "/v1/profile", `["https://a.example/"]`, "object", false},
		"profile wrong type":      {"PATCH", "/v1/profile", `{"default_callback_url":5}`, "default_callback_url", false},
		"admin customer_id twice": {"POST", "/admin/v1/customers", `{"customer_id":"cust_x","customer_id":"cust_y"}`, "duplicate", true},
		"admin empty body":        {"POST", "/admin/v1/customers", ``, "empty", true},
	} {
		t.Run(name, func(t *testing.T) {
			var res response
			if tc.admin {
				res = h.do(tc.method, tc.path, tc.body, bearer(h.adminToken))
			} else {
				res = h.as(c.APIKey, tc.method, tc.path, tc.body)
			}
			wantError(t, res, http.StatusBadRequest)
			if !strings.Contains(string(res.Body), tc.wantMsg) {
				t.Errorf("error %s does not say %q", res.Body, tc.wantMsg)
			}
		})
	}
	if res := h.as(c.APIKey, "GET", "/v1/profile", nil); !strings.Contains(string(res.Body), "https://first.example/hook") {
		t.Errorf("a refused PATCH changed the profile: %s", res.Body)
	}
	for _, id := range []string{"cust_x", "cust_y"} {
		if res := h.do("POST", "/admin/v1/customers", `{"customer_id":"`+id+`"}`, bearer(h.adminToken)); res.Code != http.StatusCreated {
			t.Errorf("%s was created by a refused request: %d %s", id, res.Code, res.Body)
		}
	}
	res := h.do("POST", "/admin/v1/customers", `{"customer_id":"cust_b","default_callback_url":"`+strings.Repeat("a", 70<<10)+`"}`, bearer(h.adminToken))
	wantError(t, res, http.StatusRequestEntityTooLarge)
}

// Every answer is JSON, also those net/http and ServeMux would write themselves.
func TestErrors_for_oversized_headers_and_unclean_paths_are_JSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	c := h.createCustomer("cust_a", "")

	req, _ := http.NewRequest("GET", h.srv.URL+"/v1/profile", nil)
	req.SetBasicAuth(c.APIKey, "")
	req.Header.Set("X-Padding", strings.Repeat("p", 40<<10))
	wantError(t, send(t, req), http.StatusRequestHeaderFieldsTooLarge)

	req, _ = http.NewRequest("GET", h.srv.URL+"/v1//profile?x=1", nil)
	req.SetBasicAuth(c.APIKey, "")
	res := send(t, req)
	wantError(t, res, http.StatusTemporaryRedirect)
	if loc := res.Header.Get("Location"); loc != "/v1/profile?x=1" {
		t.Errorf("Location %q, want the cleaned path with its query", loc)
	}
}

// send does req without following redirects.
func send(t *testing.T, req *http.Request) response {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{Code: res.StatusCode, Header: res.Header, Body: body}
}
