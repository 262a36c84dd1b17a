package resp

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/fluxon-dev/fluxon/services/kv"
)

// command is one supported command. arity follows Redis: n > 0 means
// exactly n arguments (the name included), n < 0 at least -n.
type command struct {
	name  string // lower case, as in arity errors
	arity int
	run   func(c *conn, args [][]byte)
	idx   int // index in commandList, for metrics
}

// commandList is every supported command; commandIndex finds them by
// lower-case name.
var (
	commandList  []*command
	commandIndex = map[string]*command{}
)

func init() {
	commandList = []*command{
		{name: "ping", arity: -1, run: cmdPing},
		{name: "echo", arity: 2, run: cmdEcho},
		{name: "get", arity: 2, run: cmdGet},
		{name: "set", arity: -3, run: cmdSet},
		{name: "mget", arity: -2, run: cmdMget},
		{name: "mset", arity: -3, run: cmdMset},
		{name: "del", arity: -2, run: cmdDel},
		{name: "unlink", arity: -2, run: cmdDel},
		{name: "exists", arity: -2, run: cmdExists},
		{name: "strlen", arity: 2, run: cmdStrlen},
		{name: "type", arity: 2, run: cmdType},
		{name: "expire", arity: -3, run: cmdExpire},
		{name: "pexpire", arity: -3, run: cmdExpire},
		{name: "ttl", arity: 2, run: cmdTTL},
		{name: "pttl", arity: 2, run: cmdTTL},
		{name: "scan", arity: -2, run: cmdScan},
		{name: "dbsize", arity: 1, run: cmdDbsize},
		{name: "info", arity: -1, run: cmdInfo},
		{name: "config", arity: -2, run: cmdConfig},
		{name: "select", arity: 2, run: cmdSelect},
		{name: "quit", arity: -1, run: cmdQuit},
		{name: "command", arity: -1, run: cmdCommand},
		{name: "client", arity: -2, run: cmdClient},
		{name: "hello", arity: -1, run: cmdHello},
		{name: "flushall", arity: -1, run: cmdFlush},
		{name: "flushdb", arity: -1, run: cmdFlush},
	}
	for i, c := range commandList {
		c.idx = i
		commandIndex[c.name] = c
	}
}

// Replies Redis clients know by heart.
const (
	errSyntax    = "ERR syntax error"
	errNotInt    = "ERR value is not an integer or out of range"
	errDBIndex   = "ERR DB index is out of range"
	errCursor    = "ERR invalid cursor"
	errNoProto   = "NOPROTO unsupported protocol version"
	errOOMPrefix = "OOM command not allowed when used memory > 'maxmemory'."
	// errUnavailablePrefix starts the reply to a command on a key whose
	// owners cannot be reached (kv.ErrUnavailable).
	errUnavailablePrefix = "UNAVAILABLE"
)

// Reported to clients as this server's identity.
const (
	redisVersion = "7.0.0"
	serverName   = "fluxon"
)

func (c *conn) fail(msg string) {
	c.srv.m.error("command")
	c.r.error(msg)
}

func arityError(name string) string {
	return "ERR wrong number of arguments for '" + name + "' command"
}

func (c *conn) dispatch(args [][]byte) {
	c.srv.commands.Add(1)
	name := args[0]
	var cmd *command
	if len(name) <= len(c.lower) {
		low := c.lower[:len(name)]
		for i, b := range name {
			if 'A' <= b && b <= 'Z' {
				b += 'a' - 'A'
			}
			low[i] = b
		}
		cmd = commandIndex[string(low)]
	}
	if cmd == nil {
		c.srv.m.command(len(commandList))
		c.fail(unknownCommand(args))
		return
	}
	c.srv.m.command(cmd.idx)
	if (cmd.arity > 0 && len(args) != cmd.arity) || len(args) < -cmd.arity {
		c.fail(arityError(cmd.name))
		return
	}
	cmd.run(c, args)
}

// unknownCommand words the error as Redis 7 does, arguments quoted and the
// whole cut to about 128 bytes of them.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.Write(truncate(args[0], 128))
	b.WriteString("', with args beginning with: ")
	n := 0
	for _, a := range args[1:] {
		if n >= 128 {
			break
		}
		a = truncate(a, 128-n)
		b.WriteByte('\'')
		b.Write(a)
		b.WriteString("' ")
		n += len(a) + 3
	}
	return b.String()
}

func unknownSubcommand(sub []byte, cmd string) string {
	return fmt.Sprintf("ERR unknown subcommand '%s'. Try %s HELP.", truncate(sub, 128), strings.ToUpper(cmd))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// storeError turns a kv error into a reply.
func storeError(err error, cmd string) string {
	switch {
	case errors.Is(err, kv.ErrPoolFull):
		return errOOMPrefix + " (" + err.Error() + ")"
	case errors.Is(err, kv.ErrLeaseTTL):
		return "ERR invalid expire time in '" + cmd + "' command"
	case errors.Is(err, kv.ErrClosed):
		return "ERR server shutting down: " + err.Error()
	case errors.Is(err, kv.ErrUnavailable):
		// Its own prefix, as Redis Cluster's TRYAGAIN and CLUSTERDOWN have:
		// a client can tell "retry later" from a refused command.
		return errUnavailablePrefix + " " + err.Error()
	}
	return "ERR " + err.Error()
}

// absent reports whether a read's error means "no such key": keys kv can
// never hold (empty, too long) are simply not there, as they would not be in
// Redis.
func absent(err error) bool {
	return errors.Is(err, kv.ErrNotFound) || errors.Is(err, kv.ErrEmptyKey) || errors.Is(err, kv.ErrKeyTooLong)
}

// get returns a holder of key's live value, or nil when there is none. A key
// whose lease has ended is gone even before the store's reaper removes it.
func (c *conn) get(key []byte) (*kv.Holder, error) {
	h, err := c.srv.store.GetContext(c.srv.ctx, string(key))
	if err != nil {
		if absent(err) {
			return nil, nil
		}
		return nil, err
	}
	if h.Lease != 0 {
		if _, err := c.srv.store.LeaseTTL(h.Lease); err != nil {
			c.release(h)
			return nil, nil
		}
	}
	return h, nil
}

func (c *conn) release(h *kv.Holder) {
	if err := h.Close(); err != nil {
		c.srv.log.Error("resp: releasing a value", "key", h.Key, "err", err)
	}
}

// stat returns key's info; ok is false when the key is absent or its lease
// has ended.
func (c *conn) stat(key []byte) (kv.Info, bool, error) {
	info, err := c.srv.store.StatContext(c.srv.ctx, string(key))
	if err != nil {
		if absent(err) {
			return kv.Info{}, false, nil
		}
		return kv.Info{}, false, err
	}
	if info.Lease != 0 && info.TTL <= 0 {
		return kv.Info{}, false, nil
	}
	return info, true, nil
}

func cmdPing(c *conn, args [][]byte) {
	switch len(args) {
	case 1:
		c.r.simple("PONG")
	case 2:
		c.r.bulk(args[1])
	default:
		c.fail(arityError("ping"))
	}
}

func cmdEcho(c *conn, args [][]byte) { c.r.bulk(args[1]) }

func cmdGet(c *conn, args [][]byte) {
	h, err := c.get(args[1])
	switch {
	case err != nil:
		c.fail(storeError(err, "get"))
	case h == nil:
		c.r.nilBulk()
	default:
		// The bufio.Writer copies the value or, when it is large, writes it
		// to the socket directly; either way it is done with it on return.
		c.r.bulk(h.Bytes())
		c.release(h)
	}
}

func cmdMget(c *conn, args [][]byte) {
	c.r.arrayLen(len(args) - 1)
	for _, k := range args[1:] {
		h, err := c.get(k)
		if err != nil || h == nil {
			// An array element cannot be an error in RESP2; Redis also
			// answers nil for anything it cannot return.
			c.r.nilBulk()
			continue
		}
		c.r.bulk(h.Bytes())
		c.release(h)
	}
}

// setArgs are SET's options.
type setArgs struct {
	ttl    time.Duration
	nx, xx bool
	get    bool
}

// parseSet reads SET's options after the value, as Redis 7 does; it returns
// the error reply when they are wrong.
func parseSet(args [][]byte) (setArgs, string) {
	var o setArgs
	for j := 3; j < len(args); j++ {
		opt := args[j]
		hasNext := j+1 < len(args)
		switch {
		case equalFold(opt, "nx") && !o.xx:
			o.nx = true
		case equalFold(opt, "xx") && !o.nx:
			o.xx = true
		case equalFold(opt, "get"):
			o.get = true
		case (equalFold(opt, "ex") || equalFold(opt, "px")) && hasNext:
			v, ok := parseInt(args[j+1])
			if !ok {
				return o, errNotInt
			}
			unit := time.Millisecond
			if equalFold(opt, "ex") {
				unit = time.Second
			}
			if v <= 0 || v > math.MaxInt64/int64(unit) {
				return o, "ERR invalid expire time in 'set' command"
			}
			o.ttl = time.Duration(v) * unit
			j++
		case equalFold(opt, "keepttl") || equalFold(opt, "exat") || equalFold(opt, "pxat"):
			return o, "ERR SET " + strings.ToUpper(string(opt)) + " is not supported by fluxon; use EX or PX"
		default:
			return o, errSyntax
		}
	}
	return o, ""
}

func cmdSet(c *conn, args [][]byte) {
	st := c.srv.store
	if c.pendingErr != nil { // the value was too big to reserve; it was skipped
		c.fail(storeError(c.pendingErr, "set"))
		return
	}
	if c.pending != nil { // "SET key value" with the value already in the pool
		r := c.pending
		c.pending = nil
		if _, err := st.CommitContext(c.srv.ctx, r); err != nil {
			c.fail(storeError(err, "set"))
			return
		}
		c.r.ok()
		return
	}
	o, bad := parseSet(args)
	if bad != "" {
		c.fail(bad)
		return
	}
	key := string(args[1])
	var old *kv.Holder
	if o.get {
		var err error
		if old, err = c.get(args[1]); err != nil {
			c.fail(storeError(err, "set"))
			return
		}
		defer func() {
			if old != nil {
				c.release(old)
			}
		}()
	}
	_, err := st.Put(c.srv.ctx, key, args[2], kv.PutOptions{TTL: o.ttl, IfAbsent: o.nx, IfPresent: o.xx})
	switch {
	case err == nil || (o.nx && errors.Is(err, kv.ErrExists)) || (o.xx && errors.Is(err, kv.ErrNotFound)):
		switch {
		case o.get && old != nil:
			c.r.bulk(old.Bytes())
		case o.get || err != nil:
			c.r.nilBulk()
		default:
			c.r.ok()
		}
	default:
		c.fail(storeError(err, "set"))
	}
}

func cmdMset(c *conn, args [][]byte) {
	if len(args)%2 == 0 {
		c.fail(arityError("mset"))
		return
	}
	for i := 1; i < len(args); i += 2 {
		if _, err := c.srv.store.Put(c.srv.ctx, string(args[i]), args[i+1], kv.PutOptions{}); err != nil {
			c.fail(storeError(err, "mset"))
			return
		}
	}
	c.r.ok()
}

func cmdDel(c *conn, args [][]byte) {
	n := 0
	for _, k := range args[1:] {
		err := c.srv.store.RemoveContext(c.srv.ctx, string(k))
		switch {
		case err == nil:
			n++
		case !absent(err):
			c.fail(storeError(err, "del"))
			return
		}
	}
	c.r.int(int64(n))
}

func cmdExists(c *conn, args [][]byte) {
	n := 0
	for _, k := range args[1:] {
		_, ok, err := c.stat(k)
		if err != nil {
			c.fail(storeError(err, "exists"))
			return
		}
		if ok {
			n++
		}
	}
	c.r.int(int64(n))
}

func cmdStrlen(c *conn, args [][]byte) {
	info, _, err := c.stat(args[1])
	if err != nil {
		c.fail(storeError(err, "strlen"))
		return
	}
	c.r.int(int64(info.Size))
}

func cmdType(c *conn, args [][]byte) {
	_, ok, err := c.stat(args[1])
	switch {
	case err != nil:
		c.fail(storeError(err, "type"))
	case ok:
		c.r.simple("string")
	default:
		c.r.simple("none")
	}
}

// cmdExpire is EXPIRE and PEXPIRE key n [NX|XX|GT|LT]. The conditions are
// checked against the TTL read just before; a concurrent EXPIRE of the same
// key can slip between the two.
func cmdExpire(c *conn, args [][]byte) {
	name, unit := "expire", time.Second
	if equalFold(args[0], "pexpire") {
		name, unit = "pexpire", time.Millisecond
	}
	var nx, xx, gt, lt bool
	for _, opt := range args[3:] {
		switch {
		case equalFold(opt, "nx"):
			nx = true
		case equalFold(opt, "xx"):
			xx = true
		case equalFold(opt, "gt"):
			gt = true
		case equalFold(opt, "lt"):
			lt = true
		default:
			c.fail("ERR Unsupported option " + string(opt))
			return
		}
	}
	switch {
	case nx && (xx || gt || lt):
		c.fail("ERR NX and XX, GT or LT options at the same time are not compatible")
		return
	case gt && lt:
		c.fail("ERR GT and LT options at the same time are not compatible")
		return
	}
	v, ok := parseInt(args[2])
	if !ok {
		c.fail(errNotInt)
		return
	}
	if v > math.MaxInt64/int64(unit) || v < math.MinInt64/int64(unit) {
		c.fail("ERR invalid expire time in '" + name + "' command")
		return
	}
	ttl := time.Duration(v) * unit
	info, exists, err := c.stat(args[1])
	if err != nil {
		c.fail(storeError(err, name))
		return
	}
	if !exists {
		c.r.int(0)
		return
	}
	hasTTL := info.Lease != 0
	// No TTL counts as an infinite one, as in Redis.
	if (nx && hasTTL) || (xx && !hasTTL) || (gt && (!hasTTL || ttl <= info.TTL)) || (lt && hasTTL && ttl >= info.TTL) {
		c.r.int(0)
		return
	}
	key := string(args[1])
	if ttl <= 0 { // a time in the past deletes the key, as in Redis
		err = c.srv.store.RemoveContext(c.srv.ctx, key)
	} else {
		err = c.srv.store.Expire(key, ttl)
	}
	switch {
	case err == nil:
		c.r.int(1)
	case absent(err):
		c.r.int(0)
	default:
		c.fail(storeError(err, name))
	}
}

func cmdTTL(c *conn, args [][]byte) {
	ms := equalFold(args[0], "pttl")
	ttl, ok, err := c.srv.store.TTL(string(args[1]))
	switch {
	case err != nil && absent(err):
		c.r.int(-2)
	case err != nil:
		c.fail(storeError(err, "ttl"))
	case !ok:
		c.r.int(-1)
	case ttl <= 0: // the lease has ended; the reaper has not removed the key yet
		c.r.int(-2)
	case ms:
		c.r.int(ttl.Milliseconds())
	default:
		c.r.int(int64((ttl + 500*time.Millisecond) / time.Second))
	}
}

// scanMaxCount caps SCAN's COUNT so one call cannot walk a huge store at once.
const scanMaxCount = 100_000

func cmdScan(c *conn, args [][]byte) {
	cursor, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		c.fail(errCursor)
		return
	}
	count := 10
	var match func(string) bool
	onlyStrings := true
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.fail(errSyntax)
			return
		}
		opt, val := args[i], args[i+1]
		switch {
		case equalFold(opt, "count"):
			n, ok := parseInt(val)
			if !ok {
				c.fail(errNotInt)
				return
			}
			if n < 1 {
				c.fail(errSyntax)
				return
			}
			count = int(min(n, scanMaxCount))
		case equalFold(opt, "match"):
			if pat := string(val); pat != "*" {
				match = func(k string) bool { return globMatch(pat, k) }
			} else {
				match = nil
			}
		case equalFold(opt, "type"):
			onlyStrings = equalFold(val, "string")
		default:
			c.fail(errSyntax)
			return
		}
	}
	keys, next := c.srv.store.Scan(cursor, count, match)
	if !onlyStrings { // every kv value is a string
		keys = nil
	}
	c.r.arrayLen(2)
	c.r.bulkString(strconv.FormatUint(next, 10))
	c.r.arrayLen(len(keys))
	for _, k := range keys {
		c.r.bulkString(k)
	}
}

func cmdDbsize(c *conn, _ [][]byte) { c.r.int(int64(c.srv.store.Len())) }

func cmdSelect(c *conn, args [][]byte) {
	n, ok := parseInt(args[1])
	switch {
	case !ok || n > math.MaxInt32 || n < math.MinInt32:
		c.fail(errNotInt)
	case n != 0:
		c.fail(errDBIndex)
	default:
		c.r.ok()
	}
}

func cmdQuit(c *conn, _ [][]byte) {
	c.r.ok()
	c.quit = true
}

func cmdCommand(c *conn, args [][]byte) {
	if len(args) == 1 {
		c.r.arrayLen(0)
		return
	}
	sub := args[1]
	switch {
	case equalFold(sub, "docs"), equalFold(sub, "info"):
		// Clients (redis-cli) use these for hints; none is fine.
		c.r.arrayLen(0)
	case equalFold(sub, "count"):
		if len(args) != 2 {
			c.fail(arityError("command|count"))
			return
		}
		c.r.int(int64(len(commandList)))
	case equalFold(sub, "list"):
		c.r.arrayLen(len(commandList))
		for _, cmd := range commandList {
			c.r.bulkString(cmd.name)
		}
	default:
		c.fail(unknownSubcommand(sub, "command"))
	}
}

func cmdClient(c *conn, args [][]byte) {
	sub := args[1]
	switch {
	case equalFold(sub, "setname"):
		if len(args) != 3 {
			c.fail(arityError("client|setname"))
			return
		}
		if !validClientName(args[2]) {
			c.fail("ERR Client names cannot contain spaces, newlines or special characters.")
			return
		}
		c.name = string(args[2])
		c.r.ok()
	case equalFold(sub, "getname"):
		if len(args) != 2 {
			c.fail(arityError("client|getname"))
			return
		}
		if c.name == "" {
			c.r.nilBulk()
		} else {
			c.r.bulkString(c.name)
		}
	case equalFold(sub, "setinfo"):
		if len(args) != 4 {
			c.fail(arityError("client|setinfo"))
			return
		}
		if !equalFold(args[2], "lib-name") && !equalFold(args[2], "lib-ver") {
			c.fail(fmt.Sprintf("ERR Unrecognized option '%s'", truncate(args[2], 128)))
			return
		}
		c.r.ok()
	case equalFold(sub, "id"):
		if len(args) != 2 {
			c.fail(arityError("client|id"))
			return
		}
		c.r.int(c.id)
	default:
		c.fail(unknownSubcommand(sub, "client"))
	}
}

func validClientName(b []byte) bool {
	for _, c := range b {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}

// cmdHello answers HELLO [2 [AUTH user pass] [SETNAME name]]. Only RESP2 is
// spoken; HELLO 3 gets NOPROTO so clients fall back. There is no
// authentication, so AUTH is accepted and ignored.
func cmdHello(c *conn, args [][]byte) {
	if len(args) >= 2 {
		v, ok := parseInt(args[1])
		if !ok {
			c.fail("ERR Protocol version is not an integer or out of range")
			return
		}
		if v != 2 {
			c.fail(errNoProto)
			return
		}
	}
	name, setName := "", false
	for j := 2; j < len(args); j++ {
		more := len(args) - 1 - j
		switch {
		case equalFold(args[j], "auth") && more >= 2:
			j += 2
		case equalFold(args[j], "setname") && more >= 1:
			if !validClientName(args[j+1]) {
				c.fail("ERR Client names cannot contain spaces, newlines or special characters.")
				return
			}
			name, setName = string(args[j+1]), true
			j++
		default:
			c.fail(fmt.Sprintf("ERR Syntax error in HELLO option '%s'", truncate(args[j], 128)))
			return
		}
	}
	if setName {
		c.name = name
	}
	c.r.arrayLen(14)
	c.r.bulkString("server")
	c.r.bulkString(serverName)
	c.r.bulkString("version")
	c.r.bulkString(redisVersion)
	c.r.bulkString("proto")
	c.r.int(2)
	c.r.bulkString("id")
	c.r.int(c.id)
	c.r.bulkString("mode")
	c.r.bulkString("standalone")
	c.r.bulkString("role")
	c.r.bulkString("master")
	c.r.bulkString("modules")
	c.r.arrayLen(0)
}

// flushBatch is how many keys FLUSHALL examines per Scan call.
const flushBatch = 1024

// cmdFlush removes every key by walking the store. Keys written while it
// runs may survive.
func cmdFlush(c *conn, args [][]byte) {
	if len(args) > 2 || (len(args) == 2 && !equalFold(args[1], "sync") && !equalFold(args[1], "async")) {
		c.fail(errSyntax)
		return
	}
	var cursor uint64
	for {
		keys, next := c.srv.store.Scan(cursor, flushBatch, nil)
		for _, k := range keys {
			if err := c.srv.store.RemoveContext(c.srv.ctx, k); err != nil && !absent(err) {
				c.fail(storeError(err, strings.ToLower(string(args[0]))))
				return
			}
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	c.r.ok()
}
