module github.com/walsync/walsync

go 1.26.8

// Why each direct dependency is here:
require (
	filippo.io/age v1.3.2 // client-side encryption of replica objects (the age format and its X25519 keys)
	github.com/aws/aws-sdk-go-v2 v1.39.6 // S3 replicas: the standard credential chain, AWS_CA_BUNDLE, retries
	github.com/aws/aws-sdk-go-v2/config v1.31.17 // S3: shared config and environment
	github.com/aws/aws-sdk-go-v2/credentials v1.18.21 // S3 test server credentials
	github.com/aws/aws-sdk-go-v2/service/s3 v1.90.0 // S3 API with SHA-256 upload checksums
	github.com/aws/smithy-go v1.23.2 // S3 errors: tell a failing server from a definite answer
	github.com/hanwen/go-fuse/v2 v2.9.0 // the mount (fusefs/identity.go gives files the identities: v2.9 alone splits the locks of a file that reuses a deleted file's inode number)
	github.com/klauspost/compress v1.18.0 // zstd for transaction-log objects (successive versions of a page compress against each other)
	github.com/mattn/go-sqlite3 v1.14.32 // SQLite for the Go VFS, examples and tests
	github.com/prometheus/client_golang v1.23.2 // /metrics: the Prometheus text format, the Go runtime and process collectors
	github.com/prometheus/client_model v0.6.2 // tests: parse /metrics
	github.com/prometheus/common v0.66.1 // tests: parse /metrics (the Prometheus text parser)
	github.com/schollz/progressbar/v3 v3.18.0 // restore's progress bar on a terminal
	github.com/spf13/cobra v1.10.1 // the command line
	github.com/superfly/ltx v0.5.3 // LTX files, the format Litestream 0.5 reads
	go.yaml.in/yaml/v3 v3.0.4 // the configuration file (the YAML org's maintained yaml.v3: line numbers, unknown keys)
	golang.org/x/sys v0.49.0 // flock, OFD locks, stat
	golang.org/x/term v0.45.0 // is stderr a terminal (restore progress)
)

require (
	filippo.io/hpke v0.4.0 // indirect
	github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream v1.7.3 // indirect
	github.com/aws/aws-sdk-go-v2/feature/ec2/imds v1.18.13 // indirect
	github.com/aws/aws-sdk-go-v2/internal/configsources v1.4.13 // indirect
	github.com/aws/aws-sdk-go-v2/internal/endpoints/v2 v2.7.13 // indirect
	github.com/aws/aws-sdk-go-v2/internal/ini v1.8.4 // indirect
	github.com/aws/aws-sdk-go-v2/internal/v4a v1.4.13 // indirect
	github.com/aws/aws-sdk-go-v2/service/internal/accept-encoding v1.13.3 // indirect
	github.com/aws/aws-sdk-go-v2/service/internal/checksum v1.9.4 // indirect
	github.com/aws/aws-sdk-go-v2/service/internal/presigned-url v1.13.13 // indirect
	github.com/aws/aws-sdk-go-v2/service/internal/s3shared v1.19.13 // indirect
	github.com/aws/aws-sdk-go-v2/service/sso v1.30.1 // indirect
	github.com/aws/aws-sdk-go-v2/service/ssooidc v1.35.5 // indirect
	github.com/aws/aws-sdk-go-v2/service/sts v1.39.1 // indirect
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/munnerz/goautoneg v0.0.0-20191010083416-a7dc8b61c822 // indirect
	github.com/pierrec/lz4/v4 v4.1.23 // indirect
	github.com/prometheus/procfs v0.16.1 // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	go.yaml.in/yaml/v2 v2.4.2 // indirect
	golang.org/x/crypto v0.55.0 // indirect
	google.golang.org/protobuf v1.36.8 // indirect
)
