// Package wait polls local endpoints until they answer, so the stack script can start a
// process and know when it is ready instead of sleeping.
package wait

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Ready returns nil once target answers, or the last error when ctx ends. target is
// http://host:port/path (ready = any 2xx answer) or tcp://host:port (ready = accepts a
// connection).
func Ready(ctx context.Context, target string) error {
	u, err := url.Parse(target)
	if err != nil {
		return err
	}
	var probe func(context.Context) error
	switch u.Scheme {
	case "http", "https":
		client := &http.Client{Timeout: 2 * time.Second}
		probe = func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode/100 != 2 {
				return fmt.Errorf("%s answered %s", target, resp.Status)
			}
			return nil
		}
	case "tcp":
		probe = func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return err
			}
			return c.Close()
		}
	default:
		return fmt.Errorf("wait: %q: want http://, https:// or tcp://", target)
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		err := probe(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", target, err)
		case <-t.C:
		}
	}
}
