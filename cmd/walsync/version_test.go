package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// TestVersion: `walsync version`, `--version` and `-v` print one line
// naming walsync and the Go it was built with.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("walsync %s: %v", args[0], err)
		}
		line := strings.TrimSpace(out.String())
		if !strings.HasPrefix(line, "walsync ") || !strings.Contains(line, runtime.Version()) || strings.Count(line, "\n") != 0 {
			t.Fatalf("walsync %s printed %q", args[0], out.String())
		}
	}
}
