// Package signing signs callbacks the Standard Webhooks way (https://www.standardwebhooks.com):
// webhook-signature is "v1,<base64 HMAC-SHA256(id.timestamp.body)>", one entry per active secret.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
)

// SecretPrefix starts every signing secret, as in Standard Webhooks libraries.
const SecretPrefix = "whsec_"

// Key is a decoded signing secret.
type Key []byte

// ErrBadSecret is returned for a secret that is not "whsec_" followed by base64.
var ErrBadSecret = errors.New("signing secret must be whsec_ followed by base64")

// ParseSecret decodes a "whsec_…" secret.
func ParseSecret(secret string) (Key, error) {
	enc, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, ErrBadSecret
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(key) < 16 {
		return nil, ErrBadSecret
	}
	return key, nil
}

// NewSecret returns a fresh "whsec_" secret of 32 random bytes.
func NewSecret() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

// Sign returns the webhook-signature header value for one attempt: a "v1," entry for each key,
// space-separated, newest key first.
func Sign(msgID string, timestamp int64, body []byte, keys ...Key) string {
	var b strings.Builder
	ts := strconv.FormatInt(timestamp, 10)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(msgID))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}
