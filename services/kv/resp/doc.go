// Package resp serves the Redis protocol (RESP2) over the owner's kv store,
// so redis-cli, redis-benchmark and Redis client libraries can use Fluxon.
//
// Values are the store's: GET writes the bytes straight from the shared-memory
// pool to the socket (zero copy) and a large "SET key value" is read from the
// socket straight into a pool reservation (one copy). TTLs are kv leases, so
// they are at least kv.MinLeaseTTL (1 s) and at most kv.MaxLeaseTTL. Only
// database 0 exists, and only strings.
//
// The parser validates every length before it allocates, reads large bulks
// as they arrive, answers malformed input with "-ERR Protocol error: ..." and
// closes the connection, as Redis does. Replies to pipelined commands are
// written once the commands that have arrived are answered.
//
// docs/resp.md lists the commands, how each behaves on Fluxon, and the limits.
package resp
