# The two commands of the README:
#   make run    set up (first time) and serve a dev appliance on SoftHSM
#               (make run BACKEND=tpm for swtpm)
#   make test   the whole test suite, with the race detector
GO      ?= go
BACKEND ?= pkcs11
DIR     ?= .cachet/dev-$(BACKEND)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2
# The .deb (make deb): nfpm, pinned, from the Go module proxy.
NFPM        = github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
DEB_VERSION ?= 0.0.0~git$(shell git rev-list --count HEAD 2>/dev/null || echo 0).$(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
DEB_ARCH    ?= $(shell dpkg --print-architecture 2>/dev/null || go env GOARCH)
DEB_OUT     ?= dist/cachet_$(DEB_VERSION)_$(DEB_ARCH).deb

.PHONY: run build test lint bench bench-reseal load load-ha fuzz faults ha-faults geth-test bench-signer bench-clef deps clean deb

run: deps build
	./bin/cachet dev --dir $(DIR) --backend $(BACKEND)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/cachet ./cmd/cachet

test: deps lint
	$(GO) test -race -count=1 ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "not gofmt-clean:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Benchmarks for BENCHMARKS.md (not part of `make test`).
bench: deps
	$(GO) test -run '^$$' -bench . -benchtime 2000x -count 3 ./hsm/ ./tpm/
	$(GO) test -run '^$$' -bench BenchmarkAppend -benchtime 3000x -count 3 ./audit/

# Re-seal throughput after `cachet rotate`: 100,000 wallets (200,000 blobs)
# on SoftHSM and on swtpm, once each. Not part of `make test`.
bench-reseal:
	$(GO) test -run '^$$' -bench '^BenchmarkReseal$$' -benchtime 1x -count 1 -timeout 30m ./custody/

# End-to-end scenarios over the socket (plain, quorum, policy, userkey,
# create) at 1, 8 and 64 clients, each beside its crypto bound measured in
# the same run, against a throwaway dev appliance (BACKEND=pkcs11 or tpm).
# SCENARIOS picks some; LOADJSON names a JSON copy of the results; LOADFLAGS
# passes more (--requests, --seed, --concurrency). Not part of `make test`.
SCENARIOS ?= plain,quorum,policy,userkey,create
LOADJSON  ?= load.json
load: deps build
	@dir=$$(mktemp -d /tmp/cachet-load.XXXXXX); \
	./bin/cachet dev --dir $$dir/dev --backend $(BACKEND) > $$dir/dev.log 2>&1 & pid=$$!; \
	for i in $$(seq 1 150); do [ -S $$dir/dev/cachet.sock ] && break; sleep 0.2; done; \
	./bin/cachet dev token --dir $$dir/dev --sub bench > $$dir/bench.jwt; \
	$(GO) run ./tools/load --app-file $$dir/dev/app.json --scenarios $(SCENARIOS) --jwt-file $$dir/bench.jwt --json $(LOADJSON) $(LOADFLAGS); rc=$$?; \
	kill -TERM $$pid; wait $$pid; rm -rf $$dir; exit $$rc

# geth itself with --signer pointing at a [[signer]] endpoint, on a throwaway
# private network with no peers and a second geth in --dev mode (loopback
# only). Builds geth from the Go module proxy first: minutes when the Go
# build cache is cold, so not part of `make test`.
geth-test: deps
	$(GO) test -count=1 -tags gethtest -run 'TestGethExternalSigner' -v -timeout 30m ./cmd/cachet/

# account_signTransaction through a signer endpoint, and through Clef
# v1.17.3 (built from the module proxy: minutes when cold), for BENCHMARKS.md.
bench-signer: deps
	$(GO) test -count=1 -run '^$$' -bench BenchmarkSignerEndpoint -benchtime 2000x -count 3 ./cmd/cachet/
bench-clef: deps
	$(GO) test -count=1 -tags cleftest -run '^$$' -bench BenchmarkClef -benchtime 200x -count 3 -timeout 30m ./cmd/cachet/

# The long fault runs (swtpm killed and restarted 5 times under load; WAL,
# database and shm unlinked and the daemon crashed, 3 rounds each), on top
# of the short fault tests that `make test` runs once. Needs root (tmpfs).
# Not part of `make test`.
faults: deps
	$(GO) test -race -count=1 -tags faults -run 'TestFault' -v ./cmd/cachet/

# tools/load against one appliance on SQLite, one on PostgreSQL and two on
# one PostgreSQL database (load spread over both), for BENCHMARKS.md.
# HA_SCENARIOS, HA_REQUESTS, HA_CONCURRENCY, HA_OUT (a directory for the
# JSON results) tune it. Not part of `make test`.
load-ha: deps
	$(GO) test -count=1 -tags haload -run 'TestHALoad' -v -timeout 60m ./cmd/cachet/

# The HA fault runs: five rounds each of kill -9 of one of two appliances
# under load and of PostgreSQL crashed and restarted under load (make test
# runs one round of each). Not part of `make test`.
ha-faults: deps
	$(GO) test -race -count=1 -tags hafaults -run 'TestHAFault' -v -timeout 20m ./cmd/cachet/

# Coverage-guided fuzzing of the policy parser and evaluator (seed corpora in
# policy/testdata/fuzz). FUZZTIME per target; not part of `make test`, whose
# run replays the seed corpora only.
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParsePolicy$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzEvaluate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzCalldata$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzPayload$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./quorum/

# The Debian package: dist/cachet_<version>_<arch>.deb (packaging/nfpm.yaml).
# Its install/purge test is packaging's TestDebInstallPurge, in `make test`.
deb:
	@mkdir -p dist $(dir $(DEB_OUT))
	CGO_ENABLED=1 $(GO) build -buildmode=pie -ldflags "-s -w -X main.version=$(DEB_VERSION) -extldflags=-Wl,-z,relro,-z,now" -o dist/cachet ./cmd/cachet
	sed -e 's/@VERSION@/$(DEB_VERSION)/' -e "s/@DATE@/$$(git log -1 --format=%aD 2>/dev/null || date -R)/" packaging/changelog | gzip -9n > dist/changelog.gz
	gzip -9n < packaging/cachet.1 > dist/cachet.1.gz
	VERSION=$(DEB_VERSION) ARCH=$(DEB_ARCH) $(GO) run $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DEB_OUT)

deps:
	@./scripts/install-deps

clean:
	rm -rf bin .cachet dist
