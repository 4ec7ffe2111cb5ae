package main

import "testing"

// TestParseSize: watch --checkpoint sizes.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4KiB": 4096, "4MiB": 4 << 20, "1GiB": 1 << 30, "64MB": 64e6, "2kB": 2000, "10B": 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "4 parsecs", "-"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) is not an error", in)
		}
	}
}
