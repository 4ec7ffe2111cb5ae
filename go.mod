module github.com/walsync/walsync

go 1.26.8

require (
	github.com/hanwen/go-fuse/v2 v2.9.0
	github.com/spf13/cobra v1.10.1
	github.com/superfly/ltx v0.5.3
	golang.org/x/sys v0.49.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-sqlite3 v1.14.32 // indirect
	github.com/pierrec/lz4/v4 v4.1.23 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
)
