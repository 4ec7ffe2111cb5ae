package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadSSECKey: an SSE-C key comes from a file (32 raw bytes, or their
// base64) or, without one, the environment (base64); anything else is
// refused naming where it came from, without showing the key.
func TestReadSSECKey(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0xab}, 32)
	b64 := base64.StdEncoding.EncodeToString(key)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	raw, text, short := write("raw", string(key)), write("text", b64+"\n"), write("short", "c2hvcnQ=")
	for _, tc := range []struct {
		path, env string
		want      []byte
		err       string
	}{
		{"", "", nil, ""},
		{raw, "", key, ""},
		{text, "", key, ""},
		{"", b64, key, ""},
		{raw, "not used", key, ""},
		{short, "", nil, "SSE-C key in " + short + ": want 32 bytes"},
		{"", "c2hvcnQ=", nil, "SSE-C key in $WALSYNC_S3_SSE_C_KEY: want 32 bytes"},
		{filepath.Join(dir, "missing"), "", nil, "no such file"},
	} {
		got, err := readSSECKey(tc.path, tc.env)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q, %q: %v, want an error with %q", tc.path, tc.env, err, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), b64) {
				t.Errorf("the error shows the key: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%q, %q: %x, %v", tc.path, tc.env, got, err)
		}
	}
}
