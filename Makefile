# patina: `make demo` runs it, `make test` checks it (what CI runs).
GO      ?= go
BIN     := bin/patina
PKGS    := ./...

.PHONY: all build test test-long bench demo proto lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/patina

# The whole suite with the race detector. Stays under 15 minutes on 2 cores.
test: lint
	$(GO) test -race -timeout 14m $(PKGS)

# Longer property runs and soak tests.
test-long:
	PATINA_LONG=1 $(GO) test -race -timeout 60m $(PKGS) -rapid.checks=2000

# Benchmarks named by the issues; figures in docs/performance.md.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 5 ./internal/store/

demo: build
	./deploy/demo/run.sh

# Regenerates protobuf code from proto/ (none is defined yet; the cluster
# wire protocol will be).
proto:
	@if ls proto/*/*.proto >/dev/null 2>&1; then \
		protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative proto/*/*.proto; \
	else echo "proto: no .proto files yet"; fi

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin .demo
