// Package signing signs callbacks the Standard Webhooks way (https://www.standardwebhooks.com):
// webhook-signature is "v1,<base64 HMAC-SHA256(id.timestamp.body)>", one entry per active secret.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash"
	"io"
	"strconv"
	"strings"
)

// SecretPrefix starts every signing secret, as in Standard Webhooks libraries.
const SecretPrefix = "whsec_"

// Key is a decoded signing secret with its HMAC keyed once: every signature starts from a copy
// of the keyed state instead of hashing the padded key again. A Key is safe for concurrent use.
type Key struct {
	keyed hash.Cloner // written to never; cloned for each signature
	raw   []byte
}

// ErrBadSecret is returned for a secret that is not "whsec_" followed by base64.
var ErrBadSecret = errors.New("signing secret must be whsec_ followed by base64")

// ParseSecret decodes a "whsec_…" secret.
func ParseSecret(secret string) (Key, error) {
	enc, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return Key{}, ErrBadSecret
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil || len(raw) < 16 {
		return Key{}, ErrBadSecret
	}
	mac := hmac.New(sha256.New, raw)
	// Reset keeps the hash states after the padded key, so later copies restore them cheaply.
	mac.Reset()
	k := Key{raw: raw}
	k.keyed, _ = mac.(hash.Cloner)
	return k, nil
}

func (k Key) mac() hash.Hash {
	if k.keyed != nil {
		if c, err := k.keyed.Clone(); err == nil {
			return c
		}
	}
	return hmac.New(sha256.New, k.raw)
}

// NewSecret returns a fresh "whsec_" secret of 32 random bytes.
func NewSecret() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	return SecretPrefix + base64.StdEncoding.EncodeToString(key)
}

var dot = []byte{'.'}

// Sign returns the webhook-signature header value for one attempt: a "v1," entry for each key,
// space-separated, newest key first.
func Sign(msgID string, timestamp int64, body []byte, keys ...Key) string {
	var b strings.Builder
	ts := strconv.FormatInt(timestamp, 10)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		mac := k.mac()
		_, _ = io.WriteString(mac, msgID)
		_, _ = mac.Write(dot)
		_, _ = io.WriteString(mac, ts)
		_, _ = mac.Write(dot)
		_, _ = mac.Write(body)
		var sum [sha256.Size]byte
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(sum[:0])))
	}
	return b.String()
}
