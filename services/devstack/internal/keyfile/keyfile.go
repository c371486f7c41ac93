// Package keyfile reads and writes the demo customer's credentials: a small KEY=value file
// (.stack/demo.env) that the demo writes once the gateway has created the customer, that the
// sample receiver reads to check callbacks, and that a shell can source.
package keyfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Keys are one customer's credentials as the admin API hands them out (docs/api.md): the live
// environment's, and the test environment's (docs/environments.md).
type Keys struct {
	CustomerID          string
	APIKey              string
	CallbackAuthKey     string
	SigningSecret       string
	TestAPIKey          string
	TestCallbackAuthKey string
	TestSigningSecret   string
	DefaultCallbackURL  string
}

// ErrIncomplete: the file is there but lacks the keys a receiver needs.
var ErrIncomplete = errors.New("key file is incomplete")

const (
	varCustomerID  = "DEMO_CUSTOMER_ID"
	varAPIKey      = "DEMO_API_KEY"
	varAuthKey     = "DEMO_CALLBACK_AUTH_KEY"
	varSecret      = "DEMO_SIGNING_SECRET"
	varDefaultURL  = "DEMO_DEFAULT_CALLBACK_URL"
	varTestAPIKey  = "DEMO_TEST_API_KEY"
	varTestAuthKey = "DEMO_TEST_CALLBACK_AUTH_KEY"
	varTestSecret  = "DEMO_TEST_SIGNING_SECRET"
	fileHeaderNote = "# Demo customer of the local stack, written by `devstack demo`. Secrets: do not commit.\n"
)

// Write stores k at path (mode 0600), atomically.
func Write(path string, k Keys) error {
	var b bytes.Buffer
	b.WriteString(fileHeaderNote)
	for _, kv := range [][2]string{
		{varCustomerID, k.CustomerID}, {varAPIKey, k.APIKey}, {varAuthKey, k.CallbackAuthKey},
		{varSecret, k.SigningSecret}, {varTestAPIKey, k.TestAPIKey}, {varTestAuthKey, k.TestCallbackAuthKey},
		{varTestSecret, k.TestSigningSecret}, {varDefaultURL, k.DefaultCallbackURL},
	} {
		fmt.Fprintf(&b, "%s='%s'\n", kv[0], strings.ReplaceAll(kv[1], "'", ""))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Read loads the keys at path. A missing file is an error that os.IsNotExist recognises.
func Read(path string) (Keys, error) {
	f, err := os.Open(path)
	if err != nil {
		return Keys{}, err
	}
	defer f.Close()
	vals := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vals[strings.TrimSpace(name)] = strings.Trim(strings.TrimSpace(val), `'"`)
	}
	if err := sc.Err(); err != nil {
		return Keys{}, err
	}
	k := Keys{
		CustomerID: vals[varCustomerID], APIKey: vals[varAPIKey], CallbackAuthKey: vals[varAuthKey],
		SigningSecret: vals[varSecret], DefaultCallbackURL: vals[varDefaultURL],
		// Absent from a file written before test environments: the receiver then checks live
		// callbacks only.
		TestAPIKey: vals[varTestAPIKey], TestCallbackAuthKey: vals[varTestAuthKey], TestSigningSecret: vals[varTestSecret],
	}
	if k.CallbackAuthKey == "" || k.SigningSecret == "" {
		return Keys{}, fmt.Errorf("%s: %w (want %s and %s)", path, ErrIncomplete, varAuthKey, varSecret)
	}
	return k, nil
}
