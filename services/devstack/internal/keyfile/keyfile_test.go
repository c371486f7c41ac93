package keyfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"refonte.ai/callbacks/services/devstack/internal/keyfile"
)

func TestKeyfile_round_trip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "demo.env")
	want := keyfile.Keys{CustomerID: "demo", APIKey: "rk_live_abc", CallbackAuthKey: "cbk_x",
		SigningSecret: "whsec_c2VjcmV0+/=", TestAPIKey: "rk_test_abc", TestCallbackAuthKey: "cbk_t",
		TestSigningSecret: "whsec_dGVzdA==", DefaultCallbackURL: "http://127.0.0.1:8090/callbacks"}
	if err := keyfile.Write(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := keyfile.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestKeyfile_incomplete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "demo.env")
	_ = os.WriteFile(path, []byte("DEMO_API_KEY=x\n"), 0o600)
	if _, err := keyfile.Read(path); !errors.Is(err, keyfile.ErrIncomplete) {
		t.Fatalf("err %v, want ErrIncomplete", err)
	}
}
