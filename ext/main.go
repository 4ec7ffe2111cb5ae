//go:build SQLITE3VFS_LOADABLE_EXT

// Command ext is the walsync SQLite loadable extension (`make ext` builds
// walsync.so). Loading it registers the VFS "walsync", configured by
// environment variables:
//
//	WALSYNC_REPLICA        replica root URL, file:// or s3:// (required)
//	WALSYNC_SYNC_INTERVAL  batch window, e.g. 1s (optional)
//	WALSYNC_COMPACTION_LEVELS  compaction intervals of levels 1, 2, ..., e.g. 30s,5m,1h (optional;
//	                       level 1's is also how often the per-transaction logs are uploaded)
//	WALSYNC_DIR            databases inside it replicate to <replica>/<relative path>;
//	                       others to <replica>/<absolute path without the leading />
//	                       (optional, default the working directory)
//	WALSYNC_S3_SSE         S3 server-side encryption of uploads: AES256 or aws:kms (optional)
//	WALSYNC_S3_SSE_KMS_KEY_ID  KMS key for aws:kms (optional)
//	WALSYNC_S3_SSE_C_KEY   SSE-C key, 32 bytes in base64 (optional)
//	WALSYNC_AGE_IDENTITY   age identity (AGE-SECRET-KEY-1...): every upload is encrypted
//	                       to its public key, and reads are decrypted with it (optional)
//	WALSYNC_AGE_RECIPIENTS more age public keys to encrypt to (optional; needs the identity)
//
// Then, in the sqlite3 shell: .load ./walsync.so and .open 'file:x.db?vfs=walsync';
// in Python: conn.load_extension("./walsync"). SQLite's symbols come from the
// host process, so this package must never link mattn/go-sqlite3.
package main

// The entry point sqlite3_walsync_init is in init.c.

/*
#cgo CFLAGS: -DSQLITE3VFS_LOADABLE_EXT=1
#include <stdlib.h>
*/
import "C"

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/walsync/walsync/storage"
	"github.com/walsync/walsync/vfs"
)

var (
	once    sync.Once
	initErr error
)

//export walsyncExtInit
func walsyncExtInit() *C.char {
	once.Do(func() { initErr = register() })
	if initErr != nil {
		return C.CString("walsync: " + initErr.Error())
	}
	return nil
}

func register() error {
	cfg := vfs.Config{
		Replica: os.Getenv("WALSYNC_REPLICA"),
		Dir:     os.Getenv("WALSYNC_DIR"),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if s := os.Getenv("WALSYNC_SYNC_INTERVAL"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return fmt.Errorf("WALSYNC_SYNC_INTERVAL=%q: use a duration such as 1s or 500ms", s)
		}
		cfg.SyncInterval = d
	}
	if s := os.Getenv("WALSYNC_COMPACTION_LEVELS"); s != "" {
		for _, f := range strings.Split(s, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || d <= 0 {
				return fmt.Errorf("WALSYNC_COMPACTION_LEVELS=%q: use durations separated by commas, such as 30s,5m,1h", s)
			}
			cfg.CompactionLevels = append(cfg.CompactionLevels, d)
		}
	}
	cfg.Backend.SSE = os.Getenv("WALSYNC_S3_SSE")
	cfg.Backend.SSEKMSKeyID = os.Getenv("WALSYNC_S3_SSE_KMS_KEY_ID")
	if s := os.Getenv("WALSYNC_S3_SSE_C_KEY"); s != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil || len(key) != 32 {
			return fmt.Errorf("WALSYNC_S3_SSE_C_KEY: want 32 bytes in base64 (e.g. from `openssl rand -base64 32`)")
		}
		cfg.Backend.SSECustomerKey = key
	}
	var ids []age.Identity
	if s := os.Getenv("WALSYNC_AGE_IDENTITY"); s != "" {
		var err error
		if ids, err = storage.ParseAgeIdentities("$WALSYNC_AGE_IDENTITY", []byte(s)); err != nil {
			return err
		}
	}
	recs, err := storage.ParseAgeRecipients("$WALSYNC_AGE_RECIPIENTS", os.Getenv("WALSYNC_AGE_RECIPIENTS"))
	if err != nil {
		return err
	}
	if err := cfg.Backend.SetAge(recs, ids); err != nil {
		return err
	}
	if cfg.Replica == "" {
		return fmt.Errorf("WALSYNC_REPLICA is not set: set it to the replica root URL, e.g. file:///var/backups/walsync or s3://bucket/prefix")
	}
	v, err := vfs.New(context.Background(), cfg)
	if err != nil {
		return err
	}
	return v.Register("walsync")
}

func main() {}
