// Package fluxonv1 holds the generated Go code for Fluxon's public gRPC API
// (fluxon.v1): the KV service in kv.proto. Regenerate it with
// scripts/gen-proto.sh; do not edit the *.pb.go files by hand.
//
// Go programs normally use services/kv/kvgrpc, which serves this API over a
// kv.Store and provides a client that maps errors back to kv's sentinels.
package fluxonv1
