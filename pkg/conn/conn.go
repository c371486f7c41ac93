// Package conn opens the connections every service needs, with the reconnection behaviour a
// long-running service wants: NATS retries forever, Redis is one UniversalClient.
package conn

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// NATS connects to the comma-separated servers in url and keeps reconnecting forever: a broker
// restart must never need a service restart.
func NATS(url, name string, log *zap.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(strings.ReplaceAll(url, " ", ""),
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(8<<20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", zap.String("server", c.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			log.Warn("nats async error", zap.String("subject", subj), zap.Error(err))
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	return nc, nil
}

// ClusterStateReload is how often a Redis Cluster client reads the slot map again while it is
// busy: one CLUSTER SLOTS a second per process, the bound on how long it keeps writing to a
// master that died.
const ClusterStateReload = time.Second

// Redis builds a client from REDIS_URL. Three forms:
//
//	redis://[user:pass@]host:port/db             one server (rediss:// for TLS)
//	redis-cluster://host1:port?addr=host2:port&addr=host3:port   Redis Cluster
//	redis-sentinel://host1:26379?addr=host2:26379&master=NAME&db=0  Sentinel-managed primary
//
// Every key a script touches carries the customer's hash tag, so the scripts run unchanged on a
// cluster. Short timeouts: a status write that hangs holds a delivery slot, and a failed one is
// retried by the caller.
func Redis(rawURL string, poolSize int) (redis.UniversalClient, error) {
	const timeout = 2 * time.Second
	switch {
	case strings.HasPrefix(rawURL, "redis-cluster://"):
		opt, err := redis.ParseClusterURL("redis://" + strings.TrimPrefix(rawURL, "redis-cluster://"))
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = timeout, timeout, timeout
		// A killed master answers nothing, so no MOVED tells the client its replica took over:
		// only this reload does. go-redis's default (60 s) kept every write to that master's
		// slots failing for a minute after the cluster itself had recovered (in 3 to 4 s).
		opt.ClusterStateReloadInterval = ClusterStateReload
		if poolSize > 0 {
			opt.PoolSize = poolSize
		}
		return redis.NewClusterClient(opt), nil
	case strings.HasPrefix(rawURL, "redis-sentinel://"):
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		q := u.Query()
		if q.Get("master") == "" {
			return nil, fmt.Errorf("REDIS_URL: a sentinel URL needs ?master=NAME")
		}
		db, _ := strconv.Atoi(q.Get("db"))
		pass, _ := u.User.Password()
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:    q.Get("master"),
			SentinelAddrs: append([]string{u.Host}, q["addr"]...),
			Username:      u.User.Username(),
			Password:      pass,
			DB:            db,
			DialTimeout:   timeout, ReadTimeout: timeout, WriteTimeout: timeout,
			PoolSize: poolSize,
		}), nil
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = timeout, timeout, timeout
	if poolSize > 0 {
		opt.PoolSize = poolSize
	}
	return redis.NewClient(opt), nil
}
