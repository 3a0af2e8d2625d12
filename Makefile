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

# Regenerates the protobuf code from proto/ (the generated code is
# committed, so builds need no protoc). Needs protoc (Debian:
# protobuf-compiler); installs protoc-gen-go at the version go.mod pins.
PROTOC_GEN_GO := $(shell $(GO) env GOPATH)/bin/protoc-gen-go
proto:
	@command -v protoc >/dev/null || { echo "proto: protoc not found (apt-get install protobuf-compiler)"; exit 1; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	protoc --plugin=protoc-gen-go=$(PROTOC_GEN_GO) --go_out=. --go_opt=paths=source_relative $$(find proto -name '*.proto')

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin .demo
