package fusefs

import (
	"strings"
	"testing"
)

// TestParseCapture: the three modes and the default are accepted, anything
// else is refused naming the value and the choices.
func TestParseCapture(t *testing.T) {
	for in, want := range map[string]Capture{"": CaptureAuto, "auto": CaptureAuto, "passthrough": CapturePassthrough, "write": CaptureWrite} {
		if got, err := ParseCapture(in); err != nil || got != want {
			t.Errorf("ParseCapture(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := ParseCapture("kernel")
	if err == nil || !strings.Contains(err.Error(), `"kernel"`) || !strings.Contains(err.Error(), "auto, passthrough or write") {
		t.Fatalf("ParseCapture(kernel): %v", err)
	}
}
