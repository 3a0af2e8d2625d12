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

# Longer property runs and soak tests: PATINA_LONG=1 everywhere, and 2,000
# checks per property in the packages with rapid properties (only their
# test binaries know the -rapid.* flags).
RAPID_PKGS = $(shell $(GO) list -f '{{.ImportPath}}{{range .TestImports}}{{if eq . "pgregory.net/rapid"}} rapid{{end}}{{end}}{{range .XTestImports}}{{if eq . "pgregory.net/rapid"}} rapid{{end}}{{end}}' $(PKGS) | awk '$$2 == "rapid" {print $$1}')
OTHER_PKGS = $(filter-out $(RAPID_PKGS),$(shell $(GO) list $(PKGS)))
test-long:
	PATINA_LONG=1 $(GO) test -race -timeout 90m $(RAPID_PKGS) -rapid.checks=2000
	PATINA_LONG=1 $(GO) test -race -timeout 90m $(OTHER_PKGS)

# Benchmarks named by the issues; figures in docs/performance.md.
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x -count 5 ./internal/store/

demo: build
	./deploy/demo/run.sh

# Regenerates the protobuf code from proto/ (the generated code is
# committed, so builds need no protoc). Installs what it needs: protoc
# from Debian's protobuf-compiler when missing, protoc-gen-go at the
# version go.mod pins, protoc-gen-go-grpc at PROTOC_GEN_GO_GRPC.
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
PROTOC_GEN_GO_GRPC ?= v1.6.2
proto:
	@command -v protoc >/dev/null || { apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC)
	protoc --plugin=protoc-gen-go=$(GOBIN_DIR)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(GOBIN_DIR)/protoc-gen-go-grpc \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		$$(find proto -name '*.proto')

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin .demo
