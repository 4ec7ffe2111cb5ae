# walsync: the two commands a new user needs are `make run` and `make test`.
GO       ?= go
BIN      := bin/walsync
DEMO     ?= /tmp/walsync
# Packages whose code runs concurrently: tested with the race detector.
RACE_PKGS := ./capture/... ./shipper/... ./storage/... ./restore/... ./replicate/... ./fusefs/... ./dbfiles/... ./vfs/... ./watch/... ./metrics/... ./control/...

.PHONY: build ext run demo test lint unit integration torture bench fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/walsync

# The SQLite loadable extension: .load ./walsync.so registers the VFS "walsync".
ext:
	$(GO) build -buildmode=c-shared -tags SQLITE3VFS_LOADABLE_EXT -o walsync.so ./ext
	rm -f walsync.h

# The main job on an embedded default: mount $(DEMO)/mnt in the foreground,
# databases in $(DEMO)/data, replica in file://$(DEMO)/replica. Ctrl-C to stop.
run: build
	mkdir -p $(DEMO)/mnt
	$(BIN) mount $(DEMO)/mnt --data $(DEMO)/data --replica file://$(DEMO)/replica

# A scripted round trip: mount, write with the sqlite3 shell, stop, restore, compare.
demo: build
	./scripts/demo.sh $(BIN)

test: lint unit integration

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit:
	$(GO) test -race -count=1 $(RACE_PKGS)
	$(GO) test -count=1 ./cmd/... ./config/...

# The end-to-end suite against a race-built walsync: about 16-20 minutes on
# a loaded 2-core machine (bounded at 25, so `.ci/run` stays under 30).
integration: ext
	WALSYNC_TEST_RACE=1 $(GO) test -count=1 -timeout 25m ./integration/...

# Issue 11's torture suite: walsync killed with SIGKILL at random moments
# under write load, the S3 replica failing, staging full. `make test` runs a
# short version; WALSYNC_TORTURE_CYCLES=N (default 100) sets the kill cycles,
# WALSYNC_TORTURE_SEED replays a run's random choices.
torture: build
	WALSYNC_TORTURE_CYCLES=$${WALSYNC_TORTURE_CYCLES:-100} $(GO) test -count=1 -timeout 60m -run '^TestTorture$$' -v ./integration/

bench: build
	$(GO) run ./bench --walsync $(BIN) --out bench.json

fuzz:
	$(GO) test ./capture/ -run '^$$' -fuzz FuzzCapture -fuzztime 60s

clean:
	rm -rf bin bench.json walsync.so walsync.h
