// Package customer keeps customer profiles in Redis: the default callback URL, the callback auth
// key, the Standard Webhooks signing secret (and the previous one during a rotation) and the hash
// of the API key. Each customer has one profile per environment (live and test, package
// environment), each with its own keys; nothing of one is ever used for the other. The gateway
// writes profiles; workers read them through a Cache.
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
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"refonte.ai/callbacks/pkg/endpoint"
	"refonte.ai/callbacks/pkg/environment"
	"refonte.ai/callbacks/pkg/signing"
)

var (
	ErrNotFound = errors.New("customer not found")
	ErrExists   = errors.New("customer already exists")
)

// SecretOverlap is how long callbacks stay signed with the previous signing secret as well as
// the new one after a rotation, so receivers can switch over without rejecting a callback.
const SecretOverlap = 24 * time.Hour

// Profile is one customer's callback settings in one environment. Secrets never appear in its
// JSON form except the callback auth key, which GET /v1/profile shows.
type Profile struct {
	ID                 string          `json:"customer_id"`
	Env                environment.Env `json:"environment"`
	DefaultCallbackURL string          `json:"default_callback_url"`
	CallbackAuthKey    string          `json:"callback_auth_key"`
	// AlertEmail receives the failure alerts of the environment's endpoints; "" for none.
	AlertEmail string `json:"alert_email"`
	// AutoPause lets the workers pause an endpoint after long uninterrupted failure.
	AutoPause bool `json:"auto_pause"`
	// Paused are the endpoints whose callbacks are held, by endpoint (package endpoint).
	Paused             map[string]endpoint.Pause `json:"-"`
	SigningSecret      string                    `json:"-"`
	PreviousSecret     string                    `json:"-"`
	PreviousSecretEnds time.Time                 `json:"-"`
	CreatedAt          time.Time                 `json:"created_at"`
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
	// rotated key fails its comparison at once, on every gateway). A key authenticates only in
	// the environment its prefix names, against that environment's hash.
	ownersMu  sync.Mutex
	keyOwners map[string]string
}

// maxKeyOwners bounds keyOwners; when full it starts again empty.
const maxKeyOwners = 100_000

// NewStore returns a Store whose keys start with prefix (e.g. "rc:").
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	return &Store{rdb: rdb, prefix: prefix, now: time.Now}
}

// profileKey is the profile of one environment. The live profile keeps the key every profile
// had before test environments existed, so a customer stored then is live as it stands.
func (s *Store) profileKey(id string, env environment.Env) string {
	return s.prefix + "{" + id + "}:" + env.KeyScope() + "profile"
}

// apiKeyKey points an API key's hash at its customer; the key's own prefix names the
// environment (apiKeyPrefix), and the environment's profile holds the hash that decides.
func (s *Store) apiKeyKey(hash string) string { return s.prefix + "apikey:" + hash }

// apiKeyPrefix starts every API key of an environment, so a key says where it belongs.
func apiKeyPrefix(env environment.Env) string { return "rk_" + env.String() + "_" }

// envOfAPIKey is the environment an API key belongs to. Keys issued before test environments
// existed are all live ones.
func envOfAPIKey(key string) environment.Env {
	if strings.HasPrefix(key, apiKeyPrefix(environment.Test)) {
		return environment.Test
	}
	return environment.Live
}

// Credentials are the secrets handed out once, when a customer is created or a key rotated.
type Credentials struct {
	APIKey string
}

// Created is what Create hands out: both environments' profiles and API keys.
type Created struct {
	Live, Test             Profile
	LiveAPIKey, TestAPIKey string
}

// CreatedAnswer is the body of the answer to POST /admin/v1/customers: the live credentials
// under the names they always had, and the test environment's beside them. The gateway writes
// it and clients of the admin API (the dev stack's demo, the gateway's tests) read it, so the
// field names live in one place.
type CreatedAnswer struct {
	CustomerID          string `json:"customer_id"`
	APIKey              string `json:"api_key"`
	CallbackAuthKey     string `json:"callback_auth_key"`
	SigningSecret       string `json:"signing_secret"`
	TestAPIKey          string `json:"test_api_key"`
	TestCallbackAuthKey string `json:"test_callback_auth_key"`
	TestSigningSecret   string `json:"test_signing_secret"`
	DefaultCallbackURL  string `json:"default_callback_url"`
}

// Answer is what the admin API shows of a customer it has just created; the secrets in it are
// shown this once.
func (c Created) Answer() CreatedAnswer {
	return CreatedAnswer{
		CustomerID:          c.Live.ID,
		APIKey:              c.LiveAPIKey,
		CallbackAuthKey:     c.Live.CallbackAuthKey,
		SigningSecret:       c.Live.SigningSecret,
		TestAPIKey:          c.TestAPIKey,
		TestCallbackAuthKey: c.Test.CallbackAuthKey,
		TestSigningSecret:   c.Test.SigningSecret,
		DefaultCallbackURL:  c.Live.DefaultCallbackURL,
	}
}

// newProfile is a fresh profile of one environment with its own secrets.
func newProfile(id string, env environment.Env, defaultURL string, now time.Time) (Profile, string) {
	apiKey := newToken(apiKeyPrefix(env))
	return Profile{
		ID:                 id,
		Env:                env,
		DefaultCallbackURL: defaultURL,
		CallbackAuthKey:    newToken("cbk_"),
		SigningSecret:      signing.NewSecret(),
		CreatedAt:          now,
		Version:            1,
		apiKeyHash:         hashAPIKey(apiKey),
	}, apiKey
}

// fields are a new profile's hash fields, as HSET arguments.
func (p Profile) fields() []any {
	return []any{
		"customer_id", p.ID,
		"default_callback_url", p.DefaultCallbackURL,
		"callback_auth_key", p.CallbackAuthKey,
		"signing_secret", p.SigningSecret,
		"api_key_hash", p.apiKeyHash,
		"created_at", p.CreatedAt.Format(time.RFC3339Nano),
		"version", p.Version,
	}
}

// Create makes a new customer with fresh secrets in both environments, both profiles starting
// with defaultURL. The API keys are returned once and only their hashes are stored.
func (s *Store) Create(ctx context.Context, id, defaultURL string) (Created, error) {
	now := s.now().UTC()
	live, liveKey := newProfile(id, environment.Live, defaultURL, now)
	test, testKey := newProfile(id, environment.Test, defaultURL, now)
	// The keys' index entries go first: should the profile write then fail, the entries point
	// at no customer and authenticate nobody, and a retry of Create starts afresh. The other
	// order could leave a customer whose only API key was never indexed.
	indexed := []string{s.apiKeyKey(live.apiKeyHash), s.apiKeyKey(test.apiKeyHash)}
	pipe := s.rdb.Pipeline()
	for _, k := range indexed {
		pipe.Set(ctx, k, id, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return Created{}, fmt.Errorf("create customer: index api keys: %w", err)
	}
	args := append([]any{len(live.fields())}, live.fields()...)
	args = append(args, test.fields()...)
	created, err := createScript.Run(ctx, s.rdb,
		[]string{s.profileKey(id, environment.Live), s.profileKey(id, environment.Test)}, args...).Int()
	if err != nil || created == 0 {
		s.rdb.Del(ctx, indexed...)
	}
	if err != nil {
		return Created{}, fmt.Errorf("create customer: %w", err)
	}
	if created == 0 {
		return Created{}, ErrExists
	}
	return Created{Live: live, Test: test, LiveAPIKey: liveKey, TestAPIKey: testKey}, nil
}

// createScript writes both profiles, or neither when the customer exists. ARGV[1] is how many
// of the arguments after it are the live profile's fields; the rest are the test profile's.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2, n + 1))
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, n + 2))
return 1`)

// Get returns a customer's profile in env, or ErrNotFound. A customer stored before test
// environments existed has only its live profile: the first Get of its test profile creates one
// (fresh callback auth key and signing secret, the live default callback URL, no API key until
// EnableTest issues one) and leaves the live profile as it is.
func (s *Store) Get(ctx context.Context, id string, env environment.Env) (Profile, error) {
	p, err := s.read(ctx, id, env)
	if !errors.Is(err, ErrNotFound) || env != environment.Test {
		return p, err
	}
	fresh, _ := newProfile(id, environment.Test, "", s.now().UTC())
	fresh.apiKeyHash = ""
	if _, err := ensureTestScript.Run(ctx, s.rdb,
		[]string{s.profileKey(id, environment.Live), s.profileKey(id, environment.Test)},
		fresh.fields()...).Result(); err != nil {
		return Profile{}, fmt.Errorf("create test environment: %w", err)
	}
	return s.read(ctx, id, env)
}

// ensureTestScript creates the test profile of a customer that has a live one and no test one;
// the default callback URL is copied from the live profile.
var ensureTestScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV))
local url = redis.call('HGET', KEYS[1], 'default_callback_url')
if url then redis.call('HSET', KEYS[2], 'default_callback_url', url) end
return 1`)

// EnableTest gives a customer its test environment if it has none yet, and issues a new test
// API key (the one-off step for customers stored before test environments existed; run again,
// it replaces the test API key and leaves everything else as it is).
func (s *Store) EnableTest(ctx context.Context, id string) (Profile, Credentials, error) {
	if _, err := s.Get(ctx, id, environment.Test); err != nil {
		return Profile{}, Credentials{}, err
	}
	creds, err := s.RotateAPIKey(ctx, id, environment.Test)
	if err != nil {
		return Profile{}, Credentials{}, err
	}
	p, err := s.read(ctx, id, environment.Test)
	return p, creds, err
}

func (s *Store) read(ctx context.Context, id string, env environment.Env) (Profile, error) {
	m, err := s.rdb.HGetAll(ctx, s.profileKey(id, env)).Result()
	if err != nil {
		return Profile{}, fmt.Errorf("get customer: %w", err)
	}
	if len(m) == 0 {
		return Profile{}, ErrNotFound
	}
	p := Profile{
		Env:                env,
		ID:                 m["customer_id"],
		DefaultCallbackURL: m["default_callback_url"],
		CallbackAuthKey:    m["callback_auth_key"],
		SigningSecret:      m["signing_secret"],
		PreviousSecret:     m["previous_signing_secret"],
		apiKeyHash:         m["api_key_hash"],
		AlertEmail:         m["alert_email"],
		AutoPause:          m["auto_pause"] == "1",
	}
	for f, v := range m {
		if ep, ok := strings.CutPrefix(f, endpoint.PausedField); ok {
			if pause, ok := endpoint.ParsePause(v); ok {
				if p.Paused == nil {
					p.Paused = make(map[string]endpoint.Pause)
				}
				p.Paused[ep] = pause
			}
		}
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
	env := envOfAPIKey(apiKey)
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
	p, err := s.read(ctx, id, env)
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

// SetDefaultCallbackURL changes (or, with "", clears) env's default callback URL.
func (s *Store) SetDefaultCallbackURL(ctx context.Context, id string, env environment.Env, url string) (Profile, error) {
	if err := s.updateExisting(ctx, id, env, "default_callback_url", url); err != nil {
		return Profile{}, err
	}
	return s.read(ctx, id, env)
}

// SetAlerts changes env's alert settings: where failure alerts go ("" for nowhere) and whether
// failing endpoints may be paused automatically. A nil argument leaves that setting as it is.
func (s *Store) SetAlerts(ctx context.Context, id string, env environment.Env, alertEmail *string, autoPause *bool) (Profile, error) {
	if alertEmail != nil {
		if err := s.updateExisting(ctx, id, env, "alert_email", *alertEmail); err != nil {
			return Profile{}, err
		}
	}
	if autoPause != nil {
		v := "0"
		if *autoPause {
			v = "1"
		}
		if err := s.updateExisting(ctx, id, env, "auto_pause", v); err != nil {
			return Profile{}, err
		}
	}
	return s.read(ctx, id, env)
}

// RotateCallbackAuthKey replaces env's callback auth key; callbacks carry the new one at once.
func (s *Store) RotateCallbackAuthKey(ctx context.Context, id string, env environment.Env) (Profile, error) {
	if err := s.updateExisting(ctx, id, env, "callback_auth_key", newToken("cbk_")); err != nil {
		return Profile{}, err
	}
	return s.read(ctx, id, env)
}

// RotateSigningSecret makes a new signing secret current in env. The one it replaces keeps
// signing that environment's callbacks, beside the new one, for SecretOverlap; the other
// environment's secret is not touched.
func (s *Store) RotateSigningSecret(ctx context.Context, id string, env environment.Env) (Profile, error) {
	ends := s.now().Add(SecretOverlap).UnixMilli()
	n, err := rotateSecretScript.Run(ctx, s.rdb, []string{s.profileKey(id, env)},
		signing.NewSecret(), ends).Int()
	if err != nil {
		return Profile{}, fmt.Errorf("rotate signing secret: %w", err)
	}
	if n == 0 {
		return Profile{}, ErrNotFound
	}
	return s.read(ctx, id, env)
}

var rotateSecretScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'signing_secret')
if not cur then return 0 end
redis.call('HSET', KEYS[1], 'previous_signing_secret', cur, 'previous_secret_ends_ms', ARGV[2],
  'signing_secret', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1`)

// RotateAPIKey issues a new API key for env; the old one stops working at once.
func (s *Store) RotateAPIKey(ctx context.Context, id string, env environment.Env) (Credentials, error) {
	p, err := s.read(ctx, id, env)
	if err != nil {
		return Credentials{}, err
	}
	apiKey := newToken(apiKeyPrefix(env))
	hash := hashAPIKey(apiKey)
	if err := s.rdb.Set(ctx, s.apiKeyKey(hash), id, 0).Err(); err != nil {
		return Credentials{}, fmt.Errorf("rotate api key: %w", err)
	}
	if err := s.updateExisting(ctx, id, env, "api_key_hash", hash); err != nil {
		return Credentials{}, err
	}
	if p.apiKeyHash != "" {
		s.rdb.Del(ctx, s.apiKeyKey(p.apiKeyHash)) // the profile no longer matches it either way
	}
	return Credentials{APIKey: apiKey}, nil
}

func (s *Store) updateExisting(ctx context.Context, id string, env environment.Env, field, value string) error {
	n, err := updateScript.Run(ctx, s.rdb, []string{s.profileKey(id, env)}, field, value).Int()
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
