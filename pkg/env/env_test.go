package env_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"refonte.ai/callbacks/pkg/env"
)

func TestPrefixes_and_Ports(t *testing.T) {
	r := env.FromMap(map[string]string{"CIDRS": "10.1.2.3/16, fd00::1/8", "PORTS": "443, 8443"})
	if got := r.Prefixes("CIDRS"); !slices.Equal(got, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}) {
		t.Errorf("prefixes %v, want the masked ranges", got)
	}
	if got := r.Ports("PORTS"); !slices.Equal(got, []uint16{443, 8443}) {
		t.Errorf("ports %v", got)
	}
	if r.Prefixes("UNSET") != nil || r.Ports("UNSET") != nil || r.Err() != nil {
		t.Errorf("unset variables: %v", r.Err())
	}

	bad := env.FromMap(map[string]string{"CIDRS": "10.0.0.0/33", "PORTS": "0,70000,http"})
	bad.Prefixes("CIDRS")
	bad.Ports("PORTS")
	err := bad.Err()
	if err == nil || !strings.Contains(err.Error(), `CIDRS: "10.0.0.0/33"`) || strings.Count(err.Error(), "is not a port") != 3 {
		t.Errorf("errors %v, want the bad range and three bad ports named", err)
	}
}
