package customer

import (
	"context"
	"sync"
	"time"

	"refonte.ai/callbacks/pkg/environment"
)

// Cache keeps recently read profiles for a short time, so a worker does not read Redis for the
// same customer on every callback. Invalidate drops an entry at once (the gateway announces every
// profile change); the TTL bounds staleness if an announcement is missed.
type Cache struct {
	store *Store
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]cacheEntry
}

// cacheKey is one environment's profile: a customer's live and test profiles are cached apart.
type cacheKey struct {
	id  string
	env environment.Env
}

type cacheEntry struct {
	profile Profile
	expires time.Time
}

// maxCacheEntries bounds memory when a worker serves very many customers.
const maxCacheEntries = 100_000

// NewCache wraps store with a cache whose entries live for ttl.
func NewCache(store *Store, ttl time.Duration) *Cache {
	return &Cache{store: store, ttl: ttl, now: time.Now, entries: make(map[cacheKey]cacheEntry)}
}

// Get returns the profile from the cache, or from the store when absent or expired.
// Unknown customers are not cached: a customer created a moment later must work at once.
func (c *Cache) Get(ctx context.Context, id string, env environment.Env) (Profile, error) {
	now := c.now()
	key := cacheKey{id, env}
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.profile, nil
	}
	p, err := c.store.Get(ctx, id, env)
	if err != nil {
		return Profile{}, err
	}
	c.mu.Lock()
	if len(c.entries) >= maxCacheEntries {
		clear(c.entries)
	}
	c.entries[key] = cacheEntry{profile: p, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return p, nil
}

// Invalidate forgets one customer's profiles, both environments'.
func (c *Cache) Invalidate(id string) {
	c.mu.Lock()
	for _, env := range environment.All {
		delete(c.entries, cacheKey{id, env})
	}
	c.mu.Unlock()
}
