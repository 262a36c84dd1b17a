#!/usr/bin/env bash
# Regenerates the Go code for api/proto/fluxon/v1/*.proto (kv.pb.go,
# kv_grpc.pb.go, committed beside the .proto files).
#
# protoc comes from Debian (apt-get install protobuf-compiler); the Go plugins
# are pinned below and installed into <repo>/bin (git-ignored) when missing or
# at another version. Run from anywhere: scripts/gen-proto.sh
set -euo pipefail

PROTOC_GEN_GO_VERSION=v1.36.12      # = google.golang.org/protobuf in go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.5.1   # google.golang.org/grpc/cmd/protoc-gen-go-grpc

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/bin"
cd "$root"

if ! command -v protoc >/dev/null 2>&1; then
  echo "gen-proto: protoc not found; install it with: sudo apt-get install protobuf-compiler" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  echo "gen-proto: go not found; the protoc plugins are installed with go install" >&2
  exit 1
fi

# plugin NAME MODULE_PATH VERSION: installs bin/NAME unless it is already that version.
plugin() {
  local name=$1 pkg=$2 version=$3
  # protoc-gen-go prints "v1.36.12", protoc-gen-go-grpc "1.5.1".
  if [ -x "$bin/$name" ] && [ "v$("$bin/$name" --version 2>/dev/null | awk '{print $NF}' | sed 's/^v//')" = "$version" ]; then
    return
  fi
  echo "gen-proto: installing $name $version into $bin"
  GOBIN="$bin" go install "$pkg@$version"
}
plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

protos=(api/proto/fluxon/v1/*.proto)
# The plugins on PATH are the pinned ones in bin/, never whatever else is installed.
PATH="$bin:$PATH" protoc \
  --proto_path=api/proto \
  --go_out=api/proto --go_opt=paths=source_relative \
  --go-grpc_out=api/proto --go-grpc_opt=paths=source_relative \
  "${protos[@]}"
echo "gen-proto: $(protoc --version), protoc-gen-go $PROTOC_GEN_GO_VERSION, protoc-gen-go-grpc $PROTOC_GEN_GO_GRPC_VERSION: regenerated ${protos[*]}"
