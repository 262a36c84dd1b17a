# Fluxon build. The two commands a new user needs:
#   make run    install deps, build, start a single-host cluster (fluxon up)
#   make test   install deps, C tests under ASan/UBSan, go vet, go test -race
SHELL := /bin/bash
GO ?= go
comma := ,
BIN := bin/fluxon
NATIVE_ASAN := build/native-asan
# Optional native transports, built (and tested) where their libraries are installed:
# rdma: the libibverbs wrappers (cgo/rdma), so `make test` exercises the real no-device path;
# ucx: the UCX transport (services/transport/ucx);
# dpdk: the DPDK transport over libdpdk (cgo/dpdk, services/transport/dpdk).
# A plain `go build` links none of them; `make build` and the benchmarks link every one whose
# library is installed, so bin/fluxon on an RDMA host offers rdma (`fluxon version` lists them).
# Recursively expanded on purpose: pkg-config is asked when a recipe runs, after `deps` has
# installed the libraries on a fresh machine, not when make reads this file.
RDMA_TAG = $(shell pkg-config --exists libibverbs 2>/dev/null && echo rdma)
UCX_TAG = $(shell pkg-config --exists ucx 2>/dev/null && echo ucx)
DPDK_TAG = $(shell pkg-config --exists libdpdk 2>/dev/null && echo dpdk)
NATIVE_TAGS = $(subst $(eval) ,$(comma),$(strip $(RDMA_TAG) $(UCX_TAG) $(DPDK_TAG)))
GO_BUILD = $(GO) build $(if $(NATIVE_TAGS),-tags $(NATIVE_TAGS))
GO_TAGS ?= $(subst $(eval) ,$(comma),$(strip invariants $(RDMA_TAG) $(UCX_TAG) $(DPDK_TAG)))
GO_TEST_FLAGS ?= -race -tags $(GO_TAGS) -timeout 20m
export CGO_ENABLED := 1

.PHONY: all deps build run test test-dpdk-faults native-test native-stamp vet fmt-check go-test clean help proto

all: build

help:
	@echo "make run         start a single-host cluster (embedded etcd + master + owner)"
	@echo "make test        everything CI runs: native tests (ASan/UBSan), vet, go test -race"
	@echo "make build       build $(BIN)"
	@echo "make deps        install missing system packages and Go modules"
	@echo "make bench-kv    fluxon vs redis-server side by side on this host (docs/bench.md)"
	@echo "make bench-cluster  the same on 3 network-namespace hosts, as root (docs/bench.md)"
	@echo "make bench-mq    fluxon MQ vs nats-server JetStream side by side on this host (docs/bench.md)"
	@echo "make bench-transport  every transport over one veth link, next to iperf3 and a C ping-pong (root)"
	@echo "make proto       regenerate the gRPC code from api/proto (scripts/gen-proto.sh)"

deps:
	@scripts/install-deps.sh
	@$(GO) mod download

build: deps native-stamp
	$(GO_BUILD) -o $(BIN) ./cmd/fluxon

# The cgo packages #include native/*.c, which Go's build cache does not see:
# a generated file per package carries a hash of native/ (scripts/native-stamp.sh).
native-stamp:
	@scripts/native-stamp.sh

run: build
	./$(BIN) up

test: deps fmt-check native-test vet go-test

native-test:
	cmake -S . -B $(NATIVE_ASAN) -DCMAKE_BUILD_TYPE=Debug -DFLUXON_SANITIZE=ON >/dev/null
	cmake --build $(NATIVE_ASAN) -j2
	ctest --test-dir $(NATIVE_ASAN) --output-on-failure

# The DPDK conformance suite over a faulty net_af_packet and net_af_xdp link (loss, duplication, reordering,
# corruption injected in-process; this kernel has no sch_netem). Minutes long, so not in `make test`.
test-dpdk-faults: native-stamp
	FLUXON_DPDK_FAULTS=1 $(GO) test -tags dpdk -count=1 -timeout 30m -run TestConformanceDPDK -v ./services/transport/dpdk

vet: native-stamp
	$(GO) vet ./...
	$(if $(RDMA_TAG),$(GO) vet -tags rdma ./cgo/rdma/... ./services/transport/rdma/...)
	$(if $(UCX_TAG),$(GO) vet -tags ucx ./cgo/ucx ./services/transport/ucx)
	$(if $(DPDK_TAG),$(GO) vet -tags dpdk ./cgo/dpdk/... ./services/transport/dpdk/...)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

go-test: native-stamp
	$(GO) test $(GO_TEST_FLAGS) ./...

proto:
	scripts/gen-proto.sh

clean:
	rm -rf bin build

# Benchmarks (not part of make test): make bench-kv, ...
include bench/Makefile.inc
