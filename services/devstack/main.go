// Command devstack holds the pieces of the local stack (`go tool task up`) that are not the
// product itself:
//
//	devstack receiver     the sample customer endpoint: checks the auth header and signature
//	devstack mailcatcher  an SMTP server with a web page, standing in for Mailpit
//	devstack demo         creates the demo customer, publishes three tasks, follows them
//	devstack wait URL...  waits until http(s):// URLs answer 2xx and tcp:// addresses accept
//	devstack reset        deletes the stack's keys (REDIS_PREFIX) from REDIS_URL
//	devstack claim -owner ID   deletes them unless the stack ID wrote them, then records ID
//
// Flags default to the environment variables the stack script sets (scripts/stack.env).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"refonte.ai/callbacks/pkg/config"
	"refonte.ai/callbacks/pkg/env"
	"refonte.ai/callbacks/services/devstack/internal/demo"
	"refonte.ai/callbacks/services/devstack/internal/keyfile"
	"refonte.ai/callbacks/services/devstack/internal/mailcatcher"
	"refonte.ai/callbacks/services/devstack/internal/receiver"
	"refonte.ai/callbacks/services/devstack/internal/reset"
	"refonte.ai/callbacks/services/devstack/internal/wait"
)

const usage = `usage: devstack <receiver|mailcatcher|demo|wait|reset|claim> [flags]
run "devstack <command> -h" for the flags of one command`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func(context.Context, []string) error{
		"receiver": runReceiver, "mailcatcher": runMailcatcher, "demo": runDemo, "wait": runWait, "reset": runReset,
		"claim": runClaim,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := cmd(ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "devstack %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func getenv(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

func logger(service string) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", service)
}

func runReceiver(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("receiver", flag.ExitOnError)
	addr := fs.String("addr", getenv("RECEIVER_ADDR", "127.0.0.1:8090"), "listen address")
	keysFile := fs.String("keys", getenv("DEMO_KEYS_FILE", ".stack/demo.env"), "file with the customer's keys, read on every callback (written by devstack demo)")
	flaky := fs.Int("flaky-failures", 2, `503 answers before a task whose id contains "flaky" is accepted, per webhook-id`)
	_ = fs.Parse(args)

	// RECEIVER_CALLBACK_AUTH_KEY and RECEIVER_SIGNING_SECRET, when both set, replace the file.
	keys := func() (keyfile.Keys, error) { return keyfile.Read(*keysFile) }
	if a, s := os.Getenv("RECEIVER_CALLBACK_AUTH_KEY"), os.Getenv("RECEIVER_SIGNING_SECRET"); a != "" && s != "" {
		keys = func() (keyfile.Keys, error) { return keyfile.Keys{CallbackAuthKey: a, SigningSecret: s}, nil }
	}
	log := logger("receiver")
	r, err := receiver.New(receiver.Config{Keys: keys, FlakyFailures: *flaky, Log: log})
	if err != nil {
		return fmt.Errorf("receiver: %w", err)
	}
	log.Info("receiver listening", "addr", *addr, "keys", *keysFile)
	return serveHTTP(ctx, *addr, r.Handler())
}

func runMailcatcher(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mailcatcher", flag.ExitOnError)
	smtpAddr := fs.String("smtp", getenv("MAILCATCHER_SMTP_ADDR", "127.0.0.1:1025"), "SMTP listen address")
	httpAddr := fs.String("http", getenv("MAILCATCHER_HTTP_ADDR", "127.0.0.1:8025"), "web page listen address")
	_ = fs.Parse(args)

	log := logger("mailcatcher")
	c := mailcatcher.New(log)
	srv := c.SMTPServer(*smtpAddr)
	ln, err := net.Listen("tcp", *smtpAddr)
	if err != nil {
		return fmt.Errorf("mail catcher: %w", err)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
			log.Error("smtp server stopped", "err", err)
		}
	}()
	defer srv.Close()
	log.Info("mail catcher listening", "smtp", *smtpAddr, "http", *httpAddr)
	return serveHTTP(ctx, *httpAddr, c.Handler())
}

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	cfg := demo.Config{}
	fs.StringVar(&cfg.GatewayURL, "gateway", getenv("GATEWAY_URL", "http://127.0.0.1:8080"), "gateway base URL")
	fs.StringVar(&cfg.NATSURL, "nats", getenv("NATS_URL", "nats://127.0.0.1:4222"), "NATS URL to publish on")
	fs.StringVar(&cfg.CustomerID, "customer", getenv("DEMO_CUSTOMER_ID", "demo"), "demo customer id")
	fs.StringVar(&cfg.ReceiverURL, "receiver", getenv("RECEIVER_URL", "http://127.0.0.1:8090/callbacks"), "the demo customer's default callback URL")
	fs.StringVar(&cfg.Email, "email", getenv("DEMO_EMAIL", "demo@example.com"), "target of the email callback")
	fs.StringVar(&cfg.KeysFile, "keys", getenv("DEMO_KEYS_FILE", ".stack/demo.env"), "where the demo customer's keys are written")
	fs.StringVar(&cfg.MailcatcherURL, "mailcatcher", getenv("MAILCATCHER_URL", "http://127.0.0.1:8025"), "mail catcher page, for the summary")
	fs.StringVar(&cfg.LogDir, "logs", getenv("STACK_LOG_DIR", ".stack/logs"), "log folder, for the summary")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "how long to wait for the callbacks")
	_ = fs.Parse(args)
	cfg.AdminToken = os.Getenv("ADMIN_TOKEN")

	// The same stream settings as the workers and the gateway read (NATS_STREAM, …).
	r := env.New()
	shared := config.Load(r, config.Defaults{})
	if err := errors.Join(r.Err(), shared.Validate()); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	cfg.Stream = shared.Stream
	return demo.Run(ctx, cfg)
}

func runWait(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for _, t := range fs.Args() {
		if err := wait.Ready(ctx, t); err != nil {
			return fmt.Errorf("wait for %s: %w", t, err)
		}
	}
	return nil
}

func runReset(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("reset", flag.ExitOnError)
	url := fs.String("redis", getenv("REDIS_URL", ""), "Redis URL")
	prefix := fs.String("prefix", getenv("REDIS_PREFIX", ""), "delete the keys that start with this")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("REDIS_URL is not set")
	}
	n, err := reset.Redis(ctx, *url, *prefix)
	fmt.Printf("deleted %d key(s) with prefix %q\n", n, *prefix)
	return err
}

func runClaim(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("claim", flag.ExitOnError)
	url := fs.String("redis", getenv("REDIS_URL", ""), "Redis URL")
	prefix := fs.String("prefix", getenv("REDIS_PREFIX", ""), "the stack's key prefix")
	owner := fs.String("owner", "", "id of this stack (its JetStream store)")
	_ = fs.Parse(args)
	if *url == "" {
		return errors.New("REDIS_URL is not set")
	}
	n, did, err := reset.Claim(ctx, *url, *prefix, *owner)
	if did {
		fmt.Printf("keys under %q were another stack's (or none's): deleted %d\n", *prefix, n)
	}
	return err
}

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve HTTP on %s: %w", addr, err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
