package customer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"refonte.ai/callbacks/internal/testenv"
	"refonte.ai/callbacks/pkg/customer"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/signing"
)

var ctx = context.Background()

func TestCreate_authenticate_and_rotate(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := customer.NewStore(rdb, prefix)
	c, err := s.Create(ctx, "c1", "https://hooks.example/")
	if err != nil {
		t.Fatal(err)
	}
	p, creds := c.Live, customer.Credentials{APIKey: c.LiveAPIKey}
	if !strings.HasPrefix(p.SigningSecret, "whsec_") || p.CallbackAuthKey == "" || creds.APIKey == "" || p.Version != 1 {
		t.Fatalf("created %+v", p)
	}
	if _, err := s.Create(ctx, "c1", ""); !errors.Is(err, customer.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	// Only a hash of the API key is stored.
	keys, _ := rdb.Keys(ctx, prefix+"*").Result()
	for _, k := range keys {
		if strings.Contains(k, creds.APIKey) {
			t.Errorf("API key in a key name: %s", k)
		}
		if v, _ := rdb.HGetAll(ctx, k).Result(); strings.Contains(strings.Join(values(v), " "), creds.APIKey) {
			t.Errorf("API key stored in %s", k)
		}
	}
	got, err := s.Authenticate(ctx, creds.APIKey)
	if err != nil || got.ID != "c1" {
		t.Fatalf("authenticate: %v %v", got.ID, err)
	}
	for _, bad := range []string{"", creds.APIKey + "x", "rk_live_nope"} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, customer.ErrNotFound) {
			t.Errorf("Authenticate(%q) = %v", bad, err)
		}
	}

	rotated, err := s.RotateSigningSecret(ctx, "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PreviousSecret != p.SigningSecret || rotated.SigningSecret == p.SigningSecret {
		t.Error("rotation did not keep the previous secret")
	}
	if keys, _ := rotated.SigningKeys(time.Now()); len(keys) != 2 {
		t.Errorf("%d signing keys during the overlap, want 2", len(keys))
	}
	if keys, _ := rotated.SigningKeys(time.Now().Add(customer.SecretOverlap + time.Minute)); len(keys) != 1 {
		t.Errorf("%d signing keys after the overlap, want 1", len(keys))
	}
	newCreds, err := s.RotateAPIKey(ctx, "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, creds.APIKey); !errors.Is(err, customer.ErrNotFound) {
		t.Error("the old API key still works after rotation")
	}
	if _, err := s.Authenticate(ctx, newCreds.APIKey); err != nil {
		t.Errorf("the new API key does not work: %v", err)
	}
	final, _ := s.Get(ctx, "c1", environment.Live)
	if final.Version != 3 {
		t.Errorf("version %d after two changes, want 3", final.Version)
	}
}

// Gateways remember which customer a known API key belongs to, so authenticating it reads only
// the profile. A key rotated through one gateway must still stop working at once on another that
// has just authenticated it, and the new key must work there.
func TestAuthenticate_rotated_key_fails_at_once_on_every_gateway(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	gatewayA, gatewayB := customer.NewStore(rdb, prefix), customer.NewStore(rdb, prefix)
	c, err := gatewayA.Create(ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	creds := customer.Credentials{APIKey: c.LiveAPIKey}
	for range 3 {
		if p, err := gatewayB.Authenticate(ctx, creds.APIKey); err != nil || p.ID != "c1" {
			t.Fatalf("authenticate on B: %v %v", p.ID, err)
		}
	}
	// B no longer needs the key's index entry to find the customer ...
	if err := rdb.Del(ctx, prefix+"apikey:"+sha256hex(creds.APIKey)).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := gatewayB.Authenticate(ctx, creds.APIKey); err != nil {
		t.Fatalf("a known key needed the index entry: %v", err)
	}
	// ... but the profile still decides.
	fresh, err := gatewayA.RotateAPIKey(ctx, "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gatewayB.Authenticate(ctx, creds.APIKey); !errors.Is(err, customer.ErrNotFound) {
		t.Errorf("the rotated key still works on the other gateway: %v", err)
	}
	if p, err := gatewayB.Authenticate(ctx, fresh.APIKey); err != nil || p.ID != "c1" {
		t.Errorf("the new key on the other gateway: %v %v", p.ID, err)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// The keys a profile decodes once when it is read sign exactly as freshly decoded secrets do, and
// a copy whose secret was replaced does not keep signing with the old one.
func TestSigningKeysDecodedOnceFollowTheSecret(t *testing.T) {
	rdb, prefix := testenv.Redis(t)
	s := customer.NewStore(rdb, prefix)
	if _, err := s.Create(ctx, "c1", ""); err != nil {
		t.Fatal(err)
	}
	p, err := s.Get(ctx, "c1", environment.Live)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"task_id":"t1"}`)
	signsWith := func(p customer.Profile, secret string) bool {
		t.Helper()
		keys, err := p.SigningKeys(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		want, err := signing.ParseSecret(secret)
		if err != nil {
			t.Fatal(err)
		}
		return signing.Sign("msg_1", 1700000000, body, keys...) == signing.Sign("msg_1", 1700000000, body, want)
	}
	if !signsWith(p, p.SigningSecret) {
		t.Error("the profile read from Redis does not sign with its secret")
	}
	changed := p
	changed.SigningSecret = signing.NewSecret()
	if !signsWith(changed, changed.SigningSecret) {
		t.Error("a profile whose secret changed still signs with the secret it was read with")
	}
	changed.SigningSecret = "whsec_not base64"
	if _, err := changed.SigningKeys(time.Now()); err == nil {
		t.Error("an unusable secret gave signing keys")
	}
}
