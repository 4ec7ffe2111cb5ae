package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// S3 server-side encryption flags, shared by every command: uploads are
// encrypted by the server (SSE-S3, SSE-KMS) or with a key walsync sends
// (SSE-C), which downloads need again.

var sseCKeyFile string

// sseCKeyEnv holds an SSE-C key, base64, when no key file is given.
const sseCKeyEnv = "WALSYNC_S3_SSE_C_KEY"

func addSSEFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringVar(&backendOpts.SSE, "s3-sse", "", "S3 server-side encryption of every upload: AES256 (SSE-S3) or aws:kms (SSE-KMS); default the bucket's")
	f.StringVar(&backendOpts.SSEKMSKeyID, "s3-sse-kms-key-id", "", "KMS key id or ARN for --s3-sse aws:kms; default the account's S3 key")
	f.StringVar(&sseCKeyFile, "s3-sse-c-key-file", "", "SSE-C: file holding the 32-byte key (raw, or base64) S3 encrypts with and needs to read back; or set "+sseCKeyEnv+" (base64)")
}

// loadSSE reads the SSE-C key from its file or the environment and checks
// the encryption options together. The key is never logged.
func loadSSE() error {
	key, err := readSSECKey(sseCKeyFile, os.Getenv(sseCKeyEnv))
	if err != nil {
		return err
	}
	backendOpts.SSECustomerKey = key
	return backendOpts.Validate()
}

// readSSECKey returns the SSE-C key in path (32 raw bytes, or their base64)
// or, without a path, in env (base64); nil when neither is given.
func readSSECKey(path, env string) ([]byte, error) {
	src, text := "$"+sseCKeyEnv, env
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("SSE-C key: %w", err)
		}
		if len(b) == 32 {
			return b, nil
		}
		src, text = path, string(b)
	}
	if text == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("SSE-C key in %s: want 32 bytes, raw or base64 (e.g. from `openssl rand -base64 32`)", src)
	}
	return key, nil
}
