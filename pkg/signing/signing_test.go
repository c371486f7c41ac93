package signing_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"refonte.ai/callbacks/pkg/signing"
)

// The reference Standard Webhooks verifier accepts our signatures, for each secret while two
// are active.
func TestSign_verifies_with_the_reference_library(t *testing.T) {
	oldSecret, newSecret := signing.NewSecret(), signing.NewSecret()
	oldKey, err := signing.ParseSecret(oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	newKey, _ := signing.ParseSecret(newSecret)
	body := []byte(`{"task":{"task_id":"t1","status":"completed"},"response":null,"task_id":"t1","status":"completed"}`)
	now := time.Now()
	sig := signing.Sign("msg_1", now.Unix(), body, newKey, oldKey)
	if n := len(strings.Fields(sig)); n != 2 {
		t.Fatalf("signature has %d entries, want 2: %s", n, sig)
	}
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", sig)
	for _, secret := range []string{oldSecret, newSecret} {
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := wh.Verify(body, h); err != nil {
			t.Errorf("verifier rejects with one of the active secrets: %v", err)
		}
	}
	other, _ := standardwebhooks.NewWebhook(signing.NewSecret())
	if other.Verify(body, h) == nil {
		t.Error("an unrelated secret verifies the signature")
	}
	h.Set("webhook-id", "msg_2")
	wh, _ := standardwebhooks.NewWebhook(newSecret)
	if wh.Verify(body, h) == nil {
		t.Error("the signature does not cover the webhook id")
	}
}

func TestParseSecret_refuses_malformed_secrets(t *testing.T) {
	for _, s := range []string{"", "whsec_", "whsec_not base64!", "abc", "whsec_AAAA"} {
		if _, err := signing.ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) accepted", s)
		}
	}
}

// One Key signs from many goroutines at once (a worker's deliveries share a cached profile): the
// keyed state is only copied, never written, so every signature is the one a fresh key gives.
func TestSign_one_key_shared_by_concurrent_signers(t *testing.T) {
	secret := signing.NewSecret()
	shared, err := signing.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id, body := fmt.Sprintf("msg_%d_%d", g, i), []byte(fmt.Sprintf(`{"n":%d}`, i))
				fresh, _ := signing.ParseSecret(secret)
				if got, want := signing.Sign(id, 1700000000, body, shared), signing.Sign(id, 1700000000, body, fresh); got != want {
					errs <- fmt.Sprintf("%s: shared key signed %s, fresh key %s", id, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
