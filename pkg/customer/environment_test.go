package customer_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/signing"
)

// Each environment has its own keys: an API key authenticates in its own environment only, and
// rotating one environment's secrets leaves the other's as they were.
func TestEnvironments_have_their_own_keys(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := customer.NewStore(rdb, prefix)
	c, err := s.Create(ctx, "c1", "https://hooks.example/")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.LiveAPIKey, "rk_live_") || !strings.HasPrefix(c.TestAPIKey, "rk_test_") {
		t.Fatalf("API keys %q %q", c.LiveAPIKey, c.TestAPIKey)
	}
	if c.Live.CallbackAuthKey == c.Test.CallbackAuthKey || c.Live.SigningSecret == c.Test.SigningSecret {
		t.Fatal("the environments share a key")
	}
	if c.Test.DefaultCallbackURL != "https://hooks.example/" || c.Test.Env != environment.Test {
		t.Fatalf("test profile %+v", c.Test)
	}
	for key, want := range map[string]customer.Profile{c.LiveAPIKey: c.Live, c.TestAPIKey: c.Test} {
		p, err := s.Authenticate(ctx, key)
		if err != nil || p.Env != want.Env || p.CallbackAuthKey != want.CallbackAuthKey || p.SigningSecret != want.SigningSecret {
			t.Fatalf("Authenticate(%s…) = %+v, %v; want the %s profile", key[:8], p, err, want.Env)
		}
	}
	// The live key's random part with the test prefix is not a test key.
	forged := "rk_test_" + strings.TrimPrefix(c.LiveAPIKey, "rk_live_")
	if _, err := s.Authenticate(ctx, forged); !errors.Is(err, customer.ErrNotFound) {
		t.Errorf("a live key relabelled test authenticates: %v", err)
	}

	rotated, err := s.RotateSigningSecret(ctx, "c1", environment.Test)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PreviousSecret != c.Test.SigningSecret || rotated.SigningSecret == c.Test.SigningSecret {
		t.Fatalf("test rotation %+v", rotated)
	}
	if keys, _ := rotated.SigningKeys(time.Now()); len(keys) != 2 {
		t.Errorf("%d test signing keys during the overlap, want 2", len(keys))
	}
	live, err := s.Get(ctx, "c1", environment.Live)
	if err != nil || live.SigningSecret != c.Live.SigningSecret || live.PreviousSecret != "" || live.Version != 1 {
		t.Fatalf("rotating the test secret changed the live profile: %+v %v", live, err)
	}
	if _, err := s.RotateCallbackAuthKey(ctx, "c1", environment.Live); err != nil {
		t.Fatal(err)
	}
	test, _ := s.Get(ctx, "c1", environment.Test)
	if test.CallbackAuthKey != c.Test.CallbackAuthKey {
		t.Error("rotating the live auth key changed the test one")
	}
	if _, err := s.RotateAPIKey(ctx, "c1", environment.Test); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, c.LiveAPIKey); err != nil {
		t.Errorf("rotating the test API key stopped the live one: %v", err)
	}
	if _, err := s.Authenticate(ctx, c.TestAPIKey); !errors.Is(err, customer.ErrNotFound) {
		t.Errorf("the rotated test API key still works: %v", err)
	}
}

// A customer stored before test environments existed (one profile hash, one live API key) keeps
// everything live and gets a test environment the first time one is asked for.
func TestEnvironments_old_customer_gets_a_test_environment(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := customer.NewStore(rdb, prefix)
	liveKey := "rk_live_oldcustomerkey"
	secret := signing.NewSecret()
	old := map[string]any{
		"customer_id": "old1", "default_callback_url": "https://old.example/hook",
		"callback_auth_key": "cbk_old", "signing_secret": secret,
		"api_key_hash": sha256hex(liveKey), "created_at": "2025-01-02T03:04:05Z", "version": "7",
	}
	if err := rdb.HSet(ctx, prefix+"{old1}:profile", old).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, prefix+"apikey:"+sha256hex(liveKey), "old1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	before, _ := rdb.HGetAll(ctx, prefix+"{old1}:profile").Result()

	p, err := s.Authenticate(ctx, liveKey)
	if err != nil || p.Env != environment.Live || p.CallbackAuthKey != "cbk_old" || p.SigningSecret != secret || p.Version != 7 {
		t.Fatalf("the old key: %+v %v", p, err)
	}
	test, err := s.Get(ctx, "old1", environment.Test)
	if err != nil {
		t.Fatal(err)
	}
	if test.Env != environment.Test || test.DefaultCallbackURL != "https://old.example/hook" ||
		test.CallbackAuthKey == "" || test.CallbackAuthKey == "cbk_old" || test.SigningSecret == secret {
		t.Fatalf("test environment %+v", test)
	}
	if _, err := signing.ParseSecret(test.SigningSecret); err != nil {
		t.Fatalf("test signing secret: %v", err)
	}
	again, _ := s.Get(ctx, "old1", environment.Test)
	if again.CallbackAuthKey != test.CallbackAuthKey || again.SigningSecret != test.SigningSecret {
		t.Error("a second read made another test environment")
	}
	// The one-off step issues a test API key, which opens the test environment only.
	enabled, creds, err := s.EnableTest(ctx, "old1")
	if err != nil || !strings.HasPrefix(creds.APIKey, "rk_test_") || enabled.SigningSecret != test.SigningSecret {
		t.Fatalf("EnableTest: %+v %+v %v", enabled, creds, err)
	}
	if p, err := s.Authenticate(ctx, creds.APIKey); err != nil || p.Env != environment.Test || p.ID != "old1" {
		t.Fatalf("test key: %+v %v", p, err)
	}
	after, _ := rdb.HGetAll(ctx, prefix+"{old1}:profile").Result()
	if len(after) != len(before) {
		t.Fatalf("live profile changed: %v -> %v", before, after)
	}
	for k, v := range before {
		if after[k] != v {
			t.Errorf("live profile field %s changed: %q -> %q", k, v, after[k])
		}
	}
	if p, err := s.Authenticate(ctx, liveKey); err != nil || p.Env != environment.Live {
		t.Errorf("the old live key after the test environment came: %v", err)
	}
	// No customer, no test environment.
	if _, err := s.Get(ctx, "nobody", environment.Test); !errors.Is(err, customer.ErrNotFound) {
		t.Errorf("Get(nobody, test) = %v", err)
	}
	if n, _ := rdb.Exists(ctx, prefix+"{nobody}:test:profile").Result(); n != 0 {
		t.Error("a test profile was made for an unknown customer")
	}
}

// The workers' cache keeps each environment's profile apart, and Invalidate drops both.
func TestCache_per_environment(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := customer.NewStore(rdb, prefix)
	c, err := s.Create(ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	cache := customer.NewCache(s, time.Hour)
	for _, want := range []customer.Profile{c.Live, c.Test} {
		got, err := cache.Get(ctx, "c1", want.Env)
		if err != nil || got.CallbackAuthKey != want.CallbackAuthKey || got.Env != want.Env {
			t.Fatalf("cache.Get(%s) = %+v, %v", want.Env, got, err)
		}
	}
	liveRotated, _ := s.RotateCallbackAuthKey(ctx, "c1", environment.Live)
	testRotated, _ := s.RotateCallbackAuthKey(ctx, "c1", environment.Test)
	if got, _ := cache.Get(ctx, "c1", environment.Test); got.CallbackAuthKey != c.Test.CallbackAuthKey {
		t.Fatal("the cache did not keep the test profile")
	}
	cache.Invalidate("c1")
	if got, _ := cache.Get(ctx, "c1", environment.Live); got.CallbackAuthKey != liveRotated.CallbackAuthKey {
		t.Error("Invalidate kept the live profile")
	}
	if got, _ := cache.Get(ctx, "c1", environment.Test); got.CallbackAuthKey != testRotated.CallbackAuthKey {
		t.Error("Invalidate kept the test profile")
	}
}
