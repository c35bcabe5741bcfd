# The two commands of the README:
#   make run    set up (first time) and serve a dev appliance on SoftHSM
#               (make run BACKEND=tpm for swtpm)
#   make test   the whole test suite, with the race detector
GO      ?= go
BACKEND ?= pkcs11
DIR     ?= .cachet/dev-$(BACKEND)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK = honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run build test lint bench deps clean

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

deps:
	@./scripts/install-deps

clean:
	rm -rf bin .cachet
