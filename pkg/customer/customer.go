// Package customer keeps customer profiles in Redis: the default callback URL, the Live Callback
// Auth Key, the Standard Webhooks signing secret (and the previous one during a rotation) and the
// hash of the API key. The gateway writes profiles; workers read them through a Cache.
package customer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/signing"
)

var (
	ErrNotFound = errors.New("customer not found")
	ErrExists   = errors.New("customer already exists")
)

// SecretOverlap is how long callbacks stay signed with the previous signing secret as well as
// the new one after a rotation, so receivers can switch over without rejecting a callback.
const SecretOverlap = 24 * time.Hour

// Profile is one customer's callback settings. Secrets never appear in its JSON form except the
// callback auth key, which the contract's GET /v1/profile shows.
type Profile struct {
	ID                 string    `json:"customer_id"`
	DefaultCallbackURL string    `json:"default_callback_url"`
	CallbackAuthKey    string    `json:"callback_auth_key"`
	SigningSecret      string    `json:"-"`
	PreviousSecret     string    `json:"-"`
	PreviousSecretEnds time.Time `json:"-"`
	CreatedAt          time.Time `json:"created_at"`
	// Version grows with every change, so a cached copy can tell it is stale.
	Version    int64 `json:"-"`
	apiKeyHash string
	// keys are the secrets decoded and keyed once when the profile was read, so the copy a
	// worker caches signs every callback without setting up its HMACs again.
	keys *keyring
}

type keyring struct {
	secret, previous string // what was decoded, so a profile whose secrets changed decodes anew
	current, prev    signing.Key
	currentErr       error
	prevOK           bool
}

func newKeyring(p Profile) *keyring {
	k := &keyring{secret: p.SigningSecret, previous: p.PreviousSecret}
	k.current, k.currentErr = signing.ParseSecret(p.SigningSecret)
	if p.PreviousSecret != "" {
		var err error
		k.prev, err = signing.ParseSecret(p.PreviousSecret)
		k.prevOK = err == nil
	}
	return k
}

// SigningKeys are the keys that sign a callback at now: the current secret, and the previous one
// while its overlap lasts.
func (p Profile) SigningKeys(now time.Time) ([]signing.Key, error) {
	k := p.keys
	if k == nil || k.secret != p.SigningSecret || k.previous != p.PreviousSecret {
		k = newKeyring(p)
	}
	if k.currentErr != nil {
		return nil, fmt.Errorf("customer %s: %w", p.ID, k.currentErr)
	}
	if k.prevOK && now.Before(p.PreviousSecretEnds) {
		return []signing.Key{k.current, k.prev}, nil
	}
	return []signing.Key{k.current}, nil
}

// Store reads and writes profiles. Every key of one customer carries the hash tag {customer_id},
// so all of them live in one Redis Cluster slot alongside that customer's task status.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time

	// keyOwners remembers which customer an API key's hash points to, so that authenticating a
	// known key reads only the profile. It is safe to keep without expiry: a hash never comes to
	// point at another customer, and the profile, read on every request, still decides (a
	// rotated key fails its comparison at once, on every gateway).
	ownersMu  sync.Mutex
	keyOwners map[string]string
}

// maxKeyOwners bounds keyOwners; when full it starts again empty.
const maxKeyOwners = 100_000

// NewStore returns a Store whose keys start with prefix (e.g. "rc:").
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, now: time.Now}
}

func (s *Store) profileKey(id string) string  { return s.prefix + "{" + id + "}:profile" }
func (s *Store) apiKeyKey(hash string) string { return s.prefix + "apikey:" + hash }

// Credentials are the secrets handed out once, when a customer is created or a key rotated.
type Credentials struct {
	APIKey string
}

// Create makes a new customer with fresh secrets. The API key is returned once and only its hash
// is stored.
func (s *Store) Create(ctx context.Context, id, defaultURL string) (Profile, Credentials, error) {
	apiKey := newToken("rk_live_")
	hash := hashAPIKey(apiKey)
	now := s.now().UTC()
	p := Profile{
		ID:                 id,
		DefaultCallbackURL: defaultURL,
		CallbackAuthKey:    newToken("cbk_"),
		SigningSecret:      signing.NewSecret(),
		CreatedAt:          now,
		apiKeyHash:         hash,
	}
	// The key's index entry goes first: should the profile write then fail, the entry points
	// at no customer and authenticates nobody, and a retry of Create starts afresh. The other
	// order could leave a customer whose only API key was never indexed.
	if err := s.rdb.Set(ctx, s.apiKeyKey(hash), id, 0).Err(); err != nil {
		return Profile{}, Credentials{}, fmt.Errorf("create customer: index api key: %w", err)
	}
	created, err := createScript.Run(ctx, s.rdb, []string{s.profileKey(id)},
		"customer_id", id,
		"default_callback_url", defaultURL,
		"callback_auth_key", p.CallbackAuthKey,
		"signing_secret", p.SigningSecret,
		"api_key_hash", hash,
		"created_at", now.Format(time.RFC3339Nano),
		"version", 1,
	).Int()
	if err != nil || created == 0 {
		s.rdb.Del(ctx, s.apiKeyKey(hash))
	}
	if err != nil {
		return Profile{}, Credentials{}, fmt.Errorf("create customer: %w", err)
	}
	if created == 0 {
		return Profile{}, Credentials{}, ErrExists
	}
	p.Version = 1
	return p, Credentials{APIKey: apiKey}, nil
}

var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1`)

// Get returns a profile, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Profile, error) {
	m, err := s.rdb.HGetAll(ctx, s.profileKey(id)).Result()
	if err != nil {
		return Profile{}, fmt.Errorf("get customer: %w", err)
	}
	if len(m) == 0 {
		return Profile{}, ErrNotFound
	}
	p := Profile{
		ID:                 m["customer_id"],
		DefaultCallbackURL: m["default_callback_url"],
		CallbackAuthKey:    m["callback_auth_key"],
		SigningSecret:      m["signing_secret"],
		PreviousSecret:     m["previous_signing_secret"],
		apiKeyHash:         m["api_key_hash"],
	}
	p.CreatedAt, _ = time.Parse(time.RFC3339Nano, m["created_at"])
	p.Version, _ = strconv.ParseInt(m["version"], 10, 64)
	if ms, err := strconv.ParseInt(m["previous_secret_ends_ms"], 10, 64); err == nil {
		p.PreviousSecretEnds = time.UnixMilli(ms)
	}
	p.keys = newKeyring(p)
	return p, nil
}

// Authenticate finds the customer whose API key is apiKey. Unknown keys give ErrNotFound.
func (s *Store) Authenticate(ctx context.Context, apiKey string) (Profile, error) {
	if apiKey == "" {
		return Profile{}, ErrNotFound
	}
	hash := hashAPIKey(apiKey)
	s.ownersMu.Lock()
	id, known := s.keyOwners[hash]
	s.ownersMu.Unlock()
	if !known {
		var err error
		id, err = s.rdb.Get(ctx, s.apiKeyKey(hash)).Result()
		if errors.Is(err, redis.Nil) {
			return Profile{}, ErrNotFound
		}
		if err != nil {
			return Profile{}, fmt.Errorf("authenticate: %w", err)
		}
	}
	p, err := s.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		s.forgetOwner(hash)
	}
	if err != nil {
		return Profile{}, err
	}
	// The index is only a pointer; the profile's own hash is the authority (a rotated key's
	// index entry may outlive the rotation for a moment, and so may the remembered pointer).
	if subtle.ConstantTimeCompare([]byte(p.apiKeyHash), []byte(hash)) != 1 {
		s.forgetOwner(hash)
		return Profile{}, ErrNotFound
	}
	if !known {
		s.ownersMu.Lock()
		if s.keyOwners == nil || len(s.keyOwners) >= maxKeyOwners {
			s.keyOwners = make(map[string]string)
		}
		s.keyOwners[hash] = id
		s.ownersMu.Unlock()
	}
	return p, nil
}

func (s *Store) forgetOwner(hash string) {
	s.ownersMu.Lock()
	delete(s.keyOwners, hash)
	s.ownersMu.Unlock()
}

// SetDefaultCallbackURL changes (or, with "", clears) the default callback URL.
func (s *Store) SetDefaultCallbackURL(ctx context.Context, id, url string) (Profile, error) {
	if err := s.updateExisting(ctx, id, "default_callback_url", url); err != nil {
		return Profile{}, err
	}
	return s.Get(ctx, id)
}

// RotateCallbackAuthKey replaces the Live Callback Auth Key; callbacks carry the new one at once.
func (s *Store) RotateCallbackAuthKey(ctx context.Context, id string) (Profile, error) {
	if err := s.updateExisting(ctx, id, "callback_auth_key", newToken("cbk_")); err != nil {
		return Profile{}, err
	}
	return s.Get(ctx, id)
}

// RotateSigningSecret makes a new signing secret current. The one it replaces keeps signing
// callbacks, beside the new one, for SecretOverlap.
func (s *Store) RotateSigningSecret(ctx context.Context, id string) (Profile, error) {
	ends := s.now().Add(SecretOverlap).UnixMilli()
	n, err := rotateSecretScript.Run(ctx, s.rdb, []string{s.profileKey(id)},
		signing.NewSecret(), ends).Int()
	if err != nil {
		return Profile{}, fmt.Errorf("rotate signing secret: %w", err)
	}
	if n == 0 {
		return Profile{}, ErrNotFound
	}
	return s.Get(ctx, id)
}

var rotateSecretScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'signing_secret')
if not cur then return 0 end
redis.call('HSET', KEYS[1], 'previous_signing_secret', cur, 'previous_secret_ends_ms', ARGV[2],
  'signing_secret', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1`)

// RotateAPIKey issues a new API key; the old one stops working at once.
func (s *Store) RotateAPIKey(ctx context.Context, id string) (Credentials, error) {
	p, err := s.Get(ctx, id)
	if err != nil {
		return Credentials{}, err
	}
	apiKey := newToken("rk_live_")
	hash := hashAPIKey(apiKey)
	if err := s.rdb.Set(ctx, s.apiKeyKey(hash), id, 0).Err(); err != nil {
		return Credentials{}, fmt.Errorf("rotate api key: %w", err)
	}
	if err := s.updateExisting(ctx, id, "api_key_hash", hash); err != nil {
		return Credentials{}, err
	}
	if p.apiKeyHash != "" {
		s.rdb.Del(ctx, s.apiKeyKey(p.apiKeyHash)) // the profile no longer matches it either way
	}
	return Credentials{APIKey: apiKey}, nil
}

func (s *Store) updateExisting(ctx context.Context, id, field, value string) error {
	n, err := updateScript.Run(ctx, s.rdb, []string{s.profileKey(id)}, field, value).Int()
	if err != nil {
		return fmt.Errorf("update customer: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

var updateScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1`)

func newToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// hashAPIKey is a plain SHA-256: API keys are 256 random bits, so a slow password hash would add
// cost without adding safety.
func hashAPIKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}
