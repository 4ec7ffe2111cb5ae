package main

import (
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestPprofOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:6060", ":6060", "[::]:6060", "192.0.2.1:6060", "example.com:6060", "6060"} {
		if _, err := servePprof(addr); err == nil || !strings.Contains(err.Error(), "WALSYNC_PPROF") {
			t.Errorf("servePprof(%q) = %v, want an error naming WALSYNC_PPROF", addr, err)
		}
	}
	a, err := servePprof("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + a.String() + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("pprof on its own mux: status %d", resp.StatusCode)
	}
	// A listen error is reported, not swallowed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := servePprof(ln.Addr().String()); err == nil {
		t.Fatal("servePprof on a port in use: no error")
	}
}
