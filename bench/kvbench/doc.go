// Package kvbench drives key-value stores side by side with the same
// operations: the workloads of issue 4's "Benchmarks" (READ_ZIPF,
// READ_AFFINITY, PUT_ONLY), scalable for small machines, a deterministic
// generator, per-operation latency recording, and a table that prints every
// target's throughput as a ratio against a peer measured in the same run.
//
// It knows nothing about how the systems under test are started: a Backend
// opens Targets (client connections), and the command bench/cmd/fluxon-bench
// starts redis-server and `fluxon up` and hands their addresses here.
//
// Timings are only ever printed, never asserted: a benchmark compares with
// its peer in the same run, on the same machine, at the same moment.
package kvbench
