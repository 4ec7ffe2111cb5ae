// Package config reads walsync's YAML configuration file: the mount, its
// replica, logging, default shipper settings and per-database overrides
// matched by glob on the database's path under the mount.
//
// ${VAR} in the file is replaced by the environment variable VAR before it
// is parsed (an unset variable is an error naming it and its line); keys
// walsync does not know are an error naming the key and its line. Command
// line flags override the file.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file.
type Config struct {
	MountPoint string    `yaml:"mount-point"`
	Data       string    `yaml:"data"`
	Capture    string    `yaml:"capture"`
	OwnerOnly  bool      `yaml:"owner-only"`
	Replicas   []Replica `yaml:"replicas"`
	Log        Log       `yaml:"log"`
	Defaults   Settings  `yaml:"defaults"`
	// ShutdownTimeout bounds the upload at SIGINT/SIGTERM.
	ShutdownTimeout Duration   `yaml:"shutdown-timeout"`
	MaxStagingMB    *int64     `yaml:"max-staging-mb"`
	MemoryLimitMB   *int64     `yaml:"memory-limit-mb"`
	Concurrency     int        `yaml:"upload-concurrency"`
	Databases       []Override `yaml:"databases"`
	Metrics         Metrics    `yaml:"metrics"`
	// Exec is a command run (with /bin/sh -c) once the mount is up;
	// walsync stops when it exits, with its exit status.
	Exec string `yaml:"exec"`
}

// Metrics configures the HTTP endpoint of /metrics, /healthz and /readyz.
type Metrics struct {
	Addr string `yaml:"addr"` // host:port; empty: no endpoint
	// PerDatabase: the per-database series (default true; false for
	// fleets of thousands of databases).
	PerDatabase *bool `yaml:"per-database"`
	// ReadyMaxLag: /readyz fails while a database's oldest unshipped
	// transaction is older.
	ReadyMaxLag Duration `yaml:"ready-max-lag"`
}

// Replica is where the databases are backed up.
type Replica struct {
	URL      string `yaml:"url"`
	Endpoint string `yaml:"endpoint"` // S3-compatible server
	Region   string `yaml:"region"`
	// S3 server-side encryption (see storage.Options): sse is AES256 or
	// aws:kms; sse-c-key-file holds an SSE-C key (32 bytes, raw or base64).
	SSE         string `yaml:"sse"`
	SSEKMSKeyID string `yaml:"sse-kms-key-id"`
	SSECKeyFile string `yaml:"sse-c-key-file"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
	// SummaryInterval: how often an info line sums up the work (0: the
	// default; negative: never).
	SummaryInterval Duration `yaml:"summary-interval"`
}

// Settings are what a database may have of its own.
type Settings struct {
	SyncInterval     Duration   `yaml:"sync-interval"`
	CompactionLevels []Duration `yaml:"compaction-levels"`
	SnapshotInterval Duration   `yaml:"snapshot-interval"`
	Retention        Duration   `yaml:"retention"`
	L0Retention      Duration   `yaml:"l0-retention"`
	// Keep: snapshots kept past the retention window, the newest of each
	// of the newest N hours, days, weeks and months.
	Keep Keep `yaml:"keep"`
}

// Keep is grandfather-father-son retention of snapshots.
type Keep struct {
	Hourly  int `yaml:"hourly"`
	Daily   int `yaml:"daily"`
	Weekly  int `yaml:"weekly"`
	Monthly int `yaml:"monthly"`
}

// Override gives the databases whose path under the mount matches Match
// (path.Match syntax: tenants/*/app.db) settings of their own.
type Override struct {
	Match    string `yaml:"match"`
	Settings `yaml:",inline"`
}

// Duration is a time.Duration written as Go writes them (1s, 5m, 24h).
type Duration time.Duration

// UnmarshalYAML parses a duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use 500ms, 30s, 5m, 24h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// D returns the duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Load reads and checks a configuration file.
func Load(file string) (*Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return c, nil
}

// Parse reads and checks a configuration.
func Parse(b []byte) (*Config, error) {
	b, err := expand(b)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file
		return nil, cleanYAMLError(err)
	}
	return &c, c.check()
}

// expand replaces ${VAR} by the environment, line by line so that an
// unset variable is named with its line.
func expand(b []byte) ([]byte, error) {
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		var missing string
		lines[i] = envRef.ReplaceAllStringFunc(line, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := os.LookupEnv(name)
			if !ok && missing == "" {
				missing = name
			}
			return v
		})
		if missing != "" {
			return nil, fmt.Errorf("line %d: ${%s} is not set in the environment", i+1, missing)
		}
	}
	return []byte(strings.Join(lines, "\n")), nil
}

// cleanYAMLError turns the decoder's "field x not found in type
// config.Config" into the key walsync does not know.
func cleanYAMLError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	var msgs []string
	for _, e := range te.Errors {
		if i := strings.Index(e, "field "); i >= 0 && strings.Contains(e, " not found in type") {
			key := strings.TrimSpace(e[i+len("field ") : strings.Index(e, " not found in type")])
			msgs = append(msgs, fmt.Sprintf("%sunknown key %q", e[:i], key))
			continue
		}
		msgs = append(msgs, e)
	}
	return errors.New(strings.Join(msgs, "; "))
}

func (c *Config) check() error {
	if len(c.Replicas) > maxReplicas {
		return fmt.Errorf("replicas: %d given, at most %d", len(c.Replicas), maxReplicas)
	}
	seen := map[string]bool{}
	for i, r := range c.Replicas {
		u := strings.TrimSuffix(r.URL, "/")
		switch {
		case u == "":
			return fmt.Errorf("replicas[%d]: url is missing (s3://bucket/prefix or file:///dir)", i)
		case seen[u]:
			return fmt.Errorf("replicas[%d]: %s is given twice", i, r.URL)
		}
		seen[u] = true
	}
	if k := c.Defaults.Keep; k.Hourly < 0 || k.Daily < 0 || k.Weekly < 0 || k.Monthly < 0 {
		return errors.New("defaults.keep: counts must be 0 or more")
	}
	for i, o := range c.Databases {
		if k := o.Keep; k.Hourly < 0 || k.Daily < 0 || k.Weekly < 0 || k.Monthly < 0 {
			return fmt.Errorf("databases[%d].keep: counts must be 0 or more", i)
		}
	}
	if c.Log.Format != "" && c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format %q: use text or json", c.Log.Format)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"shutdown-timeout", c.ShutdownTimeout}, {"metrics.ready-max-lag", c.Metrics.ReadyMaxLag}} {
		if d.v < 0 {
			return fmt.Errorf("%s %s: must not be negative", d.name, d.v.D())
		}
	}
	if err := c.Defaults.check("defaults"); err != nil {
		return err
	}
	for i, o := range c.Databases {
		if err := o.Settings.check(fmt.Sprintf("databases[%d]", i)); err != nil {
			return err
		}
		if o.Match == "" {
			return fmt.Errorf("databases[%d]: match is missing (a glob on the path under the mount, e.g. tenants/*/app.db)", i)
		}
		if _, err := path.Match(o.Match, ""); err != nil {
			return fmt.Errorf("databases[%d]: match %q: %w", i, o.Match, err)
		}
	}
	return nil
}

// maxReplicas is how many replicas a mount may have (shipper.MaxReplicas).
const maxReplicas = 16

// maxLevels is how many compaction levels there may be (level 9 is the
// snapshots').
const maxLevels = 8

func (s Settings) check(where string) error {
	if s.SyncInterval < 0 || s.SnapshotInterval < 0 {
		return fmt.Errorf("%s: sync-interval and snapshot-interval must be positive", where)
	}
	if len(s.CompactionLevels) > maxLevels {
		return fmt.Errorf("%s: compaction-levels: %d given, at most %d (level 9 holds the snapshots)", where, len(s.CompactionLevels), maxLevels)
	}
	for _, d := range s.CompactionLevels {
		if d <= 0 {
			return fmt.Errorf("%s: compaction-levels: %s is not a positive duration", where, d.D())
		}
	}
	return nil
}

// Override returns the settings of the first override that matches db
// (its path under the mount), zero where it sets nothing.
func (c *Config) Override(db string) Settings {
	for _, o := range c.Databases {
		if ok, _ := path.Match(o.Match, db); ok {
			return o.Settings
		}
	}
	return Settings{}
}
