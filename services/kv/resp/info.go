package resp

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// infoSections are INFO's sections in the order "INFO" prints them.
var infoSections = []string{"server", "clients", "memory", "stats", "keyspace"}

// cmdInfo answers INFO [section ...]: no section, "default", "all" or
// "everything" give every section; an unknown one gives nothing.
func cmdInfo(c *conn, args [][]byte) {
	want := map[string]bool{}
	if len(args) == 1 {
		for _, s := range infoSections {
			want[s] = true
		}
	}
	for _, a := range args[1:] {
		s := strings.ToLower(string(a))
		switch s {
		case "default", "all", "everything":
			for _, s := range infoSections {
				want[s] = true
			}
		default:
			want[s] = true
		}
	}
	var b strings.Builder
	for _, sec := range infoSections {
		if !want[sec] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		c.infoSection(&b, sec)
	}
	c.r.bulkString(b.String())
}

func (c *conn) infoSection(b *strings.Builder, sec string) {
	s := c.srv
	field := func(name string, v any) { fmt.Fprintf(b, "%s:%v\r\n", name, v) }
	switch sec {
	case "server":
		b.WriteString("# Server\r\n")
		field("redis_version", redisVersion)
		field("redis_mode", "standalone")
		field("server_name", serverName)
		field("fluxon_compat", "Redis "+redisVersion+" compatible subset, RESP2")
		field("os", runtime.GOOS+" "+runtime.GOARCH)
		field("arch_bits", strconv.IntSize)
		field("process_id", os.Getpid())
		field("tcp_port", port(c.nc.LocalAddr()))
		up := time.Since(s.started)
		field("uptime_in_seconds", int64(up/time.Second))
		field("uptime_in_days", int64(up/(24*time.Hour)))
	case "clients":
		b.WriteString("# Clients\r\n")
		field("connected_clients", s.connectedClients())
		field("maxclients", s.opts.MaxClients)
		field("blocked_clients", 0)
	case "memory":
		st := s.store.Stats()
		b.WriteString("# Memory\r\n")
		field("used_memory", st.Used)
		field("used_memory_human", humanBytes(st.Used))
		field("maxmemory", st.PoolCapacity)
		field("maxmemory_human", humanBytes(st.PoolCapacity))
		field("maxmemory_policy", maxmemoryPolicy)
		field("fluxon_pool_size", st.PoolSize)
		field("fluxon_pool_free", st.Free)
	case "stats":
		st := s.store.Stats()
		b.WriteString("# Stats\r\n")
		field("total_connections_received", s.totalConns.Load())
		field("total_commands_processed", s.commands.Load())
		field("rejected_connections", s.rejected.Load())
		field("expired_keys", st.Expired)
		field("evicted_keys", st.Evictions)
		field("keyspace_hits", st.Hits)
		field("keyspace_misses", st.Misses)
	case "keyspace":
		b.WriteString("# Keyspace\r\n")
		st := s.store.Stats()
		if keys := st.Objects; keys > 0 {
			// Every key with a TTL holds a lease of its own, so leases count
			// them (plus shared leases, rarely used over RESP).
			fmt.Fprintf(b, "db0:keys=%d,expires=%d,avg_ttl=0\r\n", keys, min(st.Leases, keys))
		}
	}
}

// maxmemoryPolicy names the store's eviction (TinyLFU, then LRU) the way
// Redis tools expect; keys with a TTL are never evicted.
const maxmemoryPolicy = "allkeys-lfu"

func port(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}

// humanBytes formats n as Redis's bytesToHuman does.
func humanBytes(n uint64) string {
	f := float64(n)
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%dB", n)
	case n < 1<<20:
		return fmt.Sprintf("%.2fK", f/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.2fM", f/(1<<20))
	case n < 1<<40:
		return fmt.Sprintf("%.2fG", f/(1<<30))
	}
	return fmt.Sprintf("%.2fT", f/(1<<40))
}

// configValues are the parameters CONFIG GET knows: enough for
// redis-benchmark and redis-cli, which ask for save and appendonly.
func (s *Server) configValues() map[string]string {
	st := s.store.Stats()
	return map[string]string{
		"save":               "",
		"appendonly":         "no",
		"databases":          "1",
		"maxclients":         strconv.Itoa(s.opts.MaxClients),
		"maxmemory":          strconv.FormatUint(st.PoolCapacity, 10),
		"maxmemory-policy":   maxmemoryPolicy,
		"proto-max-bulk-len": strconv.FormatInt(s.opts.MaxBulkLen, 10),
		"timeout":            strconv.FormatInt(int64(s.opts.IdleTimeout/time.Second), 10),
	}
}

func cmdConfig(c *conn, args [][]byte) {
	sub := args[1]
	switch {
	case equalFold(sub, "get"):
		if len(args) < 3 {
			c.fail(arityError("config|get"))
			return
		}
		values := c.srv.configValues()
		names := make([]string, 0, len(values))
		for n := range values {
			names = append(names, n)
		}
		slices.Sort(names)
		var out []string
		seen := map[string]bool{}
		for _, a := range args[2:] {
			pat := strings.ToLower(string(a))
			for _, n := range names {
				if !seen[n] && globMatch(pat, n) {
					seen[n] = true
					out = append(out, n, values[n])
				}
			}
		}
		c.r.arrayLen(len(out))
		for _, v := range out {
			c.r.bulkString(v)
		}
	case equalFold(sub, "set"):
		c.fail("ERR CONFIG SET is not supported by fluxon; change the owner's configuration instead")
	case equalFold(sub, "resetstat"):
		c.r.ok()
	default:
		c.fail(unknownSubcommand(sub, "config"))
	}
}
