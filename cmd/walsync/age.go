package main

import (
	"fmt"
	"os"

	"filippo.io/age"
	"github.com/spf13/cobra"
	"github.com/walsync/walsync/storage"
)

// Client-side encryption with age, for every command (storage/age.go):
// objects uploaded are encrypted to the recipients and to the public key of
// each identity; objects read are decrypted with the identities. Keys come
// from flags, files or the environment and are never logged.

var (
	ageRecipientArgs  []string
	ageRecipientFiles []string
	ageIdentityFiles  []string
)

// Environment variables holding keys, for services that take secrets so.
const (
	ageRecipientsEnv = "WALSYNC_AGE_RECIPIENTS" // age1... public keys, separated by spaces, commas or lines
	ageIdentityEnv   = "WALSYNC_AGE_IDENTITY"   // AGE-SECRET-KEY-1... keys, one per line
)

func addAgeFlags(root *cobra.Command) {
	f := root.PersistentFlags()
	f.StringArrayVar(&ageRecipientArgs, "age-recipient", nil, "encrypt every uploaded object to this age public key (age1...; repeatable; or "+ageRecipientsEnv+")")
	f.StringArrayVar(&ageRecipientFiles, "age-recipients-file", nil, "encrypt to each age public key in this file, one per line (repeatable)")
	f.StringArrayVar(&ageIdentityFiles, "age-identity", nil, "age identity file (as age-keygen writes) that opens encrypted objects; its public key is a recipient too (repeatable; or "+ageIdentityEnv+")")
}

// loadAge parses the keys into backendOpts.
func loadAge() error {
	var ids []age.Identity
	for _, path := range ageIdentityFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("age identity: %w", err)
		}
		got, err := storage.ParseAgeIdentities(path, b)
		if err != nil {
			return err
		}
		ids = append(ids, got...)
	}
	if s := os.Getenv(ageIdentityEnv); s != "" && len(ageIdentityFiles) == 0 {
		got, err := storage.ParseAgeIdentities("$"+ageIdentityEnv, []byte(s))
		if err != nil {
			return err
		}
		ids = got
	}
	var recs []age.Recipient
	add := func(src, text string) error {
		got, err := storage.ParseAgeRecipients(src, text)
		recs = append(recs, got...)
		return err
	}
	for _, a := range ageRecipientArgs {
		if err := add("--age-recipient", a); err != nil {
			return err
		}
	}
	for _, path := range ageRecipientFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("age recipients: %w", err)
		}
		if err := add(path, string(b)); err != nil {
			return err
		}
	}
	if s := os.Getenv(ageRecipientsEnv); s != "" && len(ageRecipientArgs) == 0 && len(ageRecipientFiles) == 0 {
		if err := add("$"+ageRecipientsEnv, s); err != nil {
			return err
		}
	}
	return backendOpts.SetAge(recs, ids)
}
