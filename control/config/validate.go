package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Validate fills the derived fields (node_id and member_id from each other
// or from instance_key; advertise_address from the listen address),
// normalizes etcd_endpoints in place, and checks every rule for role. It
// returns the first problem in document order (problems with fields absent
// from the document come last, in schema order), as a *FieldError.
func (c *Config) Validate(role Role) error {
	if !role.valid() {
		return &FieldError{Msg: fmt.Sprintf("unknown role %s; use master, owner, external or up", quote(string(role))), Err: ErrRole}
	}
	v := &validator{c: c, role: role}
	v.roleFields()
	v.names()
	v.etcd()
	v.paths()
	if role.hasOwner() {
		v.pool()
	}
	v.listen()
	v.network()
	if role.hasMaster() {
		v.durationRange("master.election_ttl", c.Master.ElectionTTL, MinElectionTTL, MaxElectionTTL)
	}
	v.durationRange("lease.ttl", c.Lease.TTL, MinLeaseTTL, MaxLeaseTTL)

	if len(v.errs) == 0 {
		return nil
	}
	sort.SliceStable(v.errs, func(i, j int) bool { return v.errs[i].p.less(v.errs[j].p) })
	return v.errs[0].err
}

type validator struct {
	c    *Config
	role Role
	errs []posError
}

type posError struct {
	p   pos
	err *FieldError
}

func (v *validator) fail(kind error, path, format string, args ...any) {
	p := v.c.pos[path]
	v.errs = append(v.errs, posError{p, errAt(kind, p, path, format, args...)})
}

// set reports whether a field counts as set: written in the document for a
// parsed Config, non-zero for one built in code.
func (v *validator) set(path string, nonZero bool) bool {
	if v.c.pos != nil {
		return v.c.inDoc(path)
	}
	return nonZero
}

func (v *validator) roleFields() {
	c := v.c
	nonZero := map[string]bool{
		"contribute_to_cluster_pool_size": c.ContributeToClusterPoolSize.DRAM != 0 || len(c.ContributeToClusterPoolSize.VRAM) > 0,
		"pool":                            c.Pool.SegmentSize != 0,
		"listen.resp":                     c.Listen.RESP != "",
		"master":                          c.Master.ElectionTTL != 0,
	}
	for _, f := range fieldRoles {
		if msg, bad := roleFieldError(f.path, v.role); bad && v.set(f.path, nonZero[f.path]) {
			v.fail(ErrRoleField, f.path, "%s", msg)
		}
	}
}

func (v *validator) name(path, value string) {
	if err := ValidName(path, value); err != nil {
		var fe *FieldError
		errors.As(err, &fe)
		v.fail(fe.Err, path, "%s", fe.Msg)
	}
}

func (v *validator) names() {
	c := v.c
	switch {
	case c.ClusterName == "" && !v.c.inDoc("cluster_name"):
		v.fail(ErrRequired, "cluster_name", "required for %s; set the cluster's name, the same on every member, e.g. cluster_name: prod", v.role.article())
	default:
		v.name("cluster_name", c.ClusterName)
	}
	switch {
	case c.InstanceKey == "" && !v.c.inDoc("instance_key"):
		v.fail(ErrRequired, "instance_key", "required for %s; set a name unique to this process within the cluster, e.g. instance_key: host-a", v.role.article())
	default:
		v.name("instance_key", c.InstanceKey)
	}

	// node_id and member_id are one setting under two names.
	if c.NodeID == "" && !c.inDoc("node_id") {
		c.NodeID = c.MemberID
		if c.NodeID == "" && !c.inDoc("member_id") {
			c.NodeID = c.InstanceKey
		}
	}
	if c.MemberID == "" && !c.inDoc("member_id") {
		c.MemberID = c.NodeID
	}
	switch {
	case c.NodeID != c.MemberID:
		path := "member_id" // point at whichever of the two comes second
		if c.inDoc("node_id") && c.inDoc("member_id") && c.pos["member_id"].less(c.pos["node_id"]) {
			path = "node_id"
		}
		v.fail(ErrInvalid, path, "node_id %s and member_id %s differ; they are the same setting under two names, so set only one (both default to instance_key)",
			quote(c.NodeID), quote(c.MemberID))
	case c.NodeID != c.InstanceKey || c.inDoc("node_id") || c.inDoc("member_id"):
		path := "node_id"
		if !c.inDoc("node_id") && c.inDoc("member_id") {
			path = "member_id"
		}
		v.name(path, c.NodeID)
	}

	if c.SubCluster != "" || c.inDoc("sub_cluster") {
		v.name("sub_cluster", c.SubCluster)
	}
}

func (v *validator) etcd() {
	c := v.c
	if len(c.EtcdEndpoints) == 0 {
		switch {
		case v.role == RoleUp:
			// empty: fluxon up runs its own embedded etcd
		case c.inDoc("etcd_endpoints"):
			v.fail(ErrRequired, "etcd_endpoints", "the list is empty; %s needs at least one etcd endpoint, e.g. [\"10.0.0.1:2379\"]", v.role.article())
		default:
			v.fail(ErrRequired, "etcd_endpoints", "required for %s; list the etcd endpoints, e.g. etcd_endpoints: [\"10.0.0.1:2379\"]", v.role.article())
		}
		return
	}
	seen := map[string]int{}
	for i, ep := range c.EtcdEndpoints {
		path := fmt.Sprintf("etcd_endpoints[%d]", i)
		n, err := NormalizeEndpoint(ep)
		if err != nil {
			v.fail(ErrInvalid, path, "%s", err.Error())
			continue
		}
		key := strings.ToLower(n)
		if j, dup := seen[key]; dup {
			v.fail(ErrDuplicate, path, "%s is the same endpoint as etcd_endpoints[%d]; list each endpoint once", quote(ep), j)
			continue
		}
		seen[key] = i
		c.EtcdEndpoints[i] = n
	}
}

func (v *validator) paths() {
	c := v.c
	if c.PrometheusBaseURL != "" {
		u, err := url.Parse(c.PrometheusBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.fail(ErrInvalid, "prometheus_base_url", "%s is not an http(s) URL; write e.g. http://prometheus:9090", quote(c.PrometheusBaseURL))
		}
	}
	// Shared paths are how separate processes find the same pool; a
	// relative path would resolve against each process's own directory.
	for _, f := range []struct {
		path, value, def string
	}{
		{"shared_memory_path", c.SharedMemoryPath, DefaultSharedMemoryPath},
		{"shared_file_path", c.SharedFilePath, DefaultSharedFilePath},
	} {
		switch {
		case f.value == "":
			v.fail(ErrRequired, f.path, "must not be empty; remove the line to use the default %s", f.def)
		case strings.ContainsRune(f.value, 0) || !filepath.IsAbs(f.value):
			v.fail(ErrInvalid, f.path, "%s is not an absolute path; every process on the host must resolve it alike, e.g. %s", quote(f.value), f.def)
		}
	}
	if strings.ContainsRune(c.LogDir, 0) {
		v.fail(ErrInvalid, "log_dir", "%s contains a NUL byte; write a directory path, or leave it empty for console only", quote(c.LogDir))
	}
}

func (v *validator) pool() {
	c := v.c
	seg := c.Pool.SegmentSize
	segOK := seg >= MinSegmentSize && seg <= MaxSegmentSize && seg&(seg-1) == 0
	switch {
	case seg < MinSegmentSize || seg > MaxSegmentSize:
		v.fail(ErrInvalid, "pool.segment_size", "%s is out of range; use a power of two from %s to %s (default %s)", seg, MinSegmentSize, MaxSegmentSize, DefaultSegmentSize)
	case !segOK:
		v.fail(ErrInvalid, "pool.segment_size", "%s is not a power of two; use e.g. 8MiB, 16MiB or 32MiB", seg)
	}

	p := c.ContributeToClusterPoolSize
	const dramPath = "contribute_to_cluster_pool_size.dram"
	switch {
	case p.DRAM == 0 && c.inDoc(dramPath):
		v.fail(ErrInvalid, dramPath, "must be greater than 0 for %s; set the DRAM this host contributes, e.g. \"4GiB\"", v.role.article())
	case p.DRAM == 0:
		v.fail(ErrRequired, dramPath, "required for %s; set the DRAM this host contributes, e.g. \"4GiB\"", v.role.article())
	case segOK && p.DRAM < seg:
		v.fail(ErrInvalid, dramPath, "%s is less than one pool segment (pool.segment_size %s); contribute at least %s", p.DRAM, seg, seg)
	}
	for _, k := range sortedKeys(p.VRAM) {
		path := "contribute_to_cluster_pool_size.vram." + pathKey(k)
		switch {
		case !isDeviceIndex(k):
			v.fail(ErrInvalid, path, "%s is not a device index; key each entry by the GPU's number: \"0\", \"1\", …", quote(k))
		case p.VRAM[k] == 0:
			v.fail(ErrInvalid, path, "must be greater than 0; remove the entry to contribute nothing from device %s", k)
		}
	}
}

// maxDeviceIndexDigits bounds a VRAM device index; no host has 10^4 GPUs.
const maxDeviceIndexDigits = 4

// isDeviceIndex accepts a canonical non-negative decimal ("0", "7", "12";
// not "00", "+1", "-1"), so two keys can never name the same device.
func isDeviceIndex(k string) bool {
	if k == "" || len(k) > maxDeviceIndexDigits || (len(k) > 1 && k[0] == '0') {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isDigit(k[i]) {
			return false
		}
	}
	return true
}

func (v *validator) listen() {
	c := v.c
	type listener struct {
		path, value string
		required    bool
	}
	ls := []listener{
		{"listen.http", c.Listen.HTTP, true},
		{"listen.grpc", c.Listen.GRPC, v.role != RoleExternal},
		{"listen.transport", c.Listen.Transport, v.role != RoleMaster},
	}
	if v.role.hasOwner() {
		ls = append(ls, listener{"listen.resp", c.Listen.RESP, false}) // "" = RESP off
	}
	type bound struct {
		path, host string
		port       int
	}
	var used []bound
	for _, l := range ls {
		if l.value == "" {
			if l.required {
				v.fail(ErrRequired, l.path, "must not be empty for %s; remove the line to use the default %s", v.role.article(), DefaultListen)
			}
			continue
		}
		host, port, err := splitListen(l.value)
		if err != nil {
			v.fail(ErrInvalid, l.path, "%s", err.Error())
			continue
		}
		if port == 0 {
			continue // a free port each: cannot clash
		}
		clash := ""
		for _, u := range used {
			if u.port == port && (strings.EqualFold(u.host, host) || isWildcard(u.host) || isWildcard(host)) {
				clash = u.path
				break
			}
		}
		if clash != "" {
			v.fail(ErrDuplicate, l.path, "%s takes the same port as %s; give each listener its own port (or port 0 for a free one)", quote(l.value), clash)
			continue
		}
		used = append(used, bound{l.path, host, port})
	}
}

// splitListen checks a listen address: "host:port" or ":port", port 0-65535.
func splitListen(s string) (string, int, error) {
	host, portText, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%s is not host:port; write e.g. 127.0.0.1:8080 (port 0 picks a free port)", quote(s))
	}
	if host != "" && !validHost(host) {
		return "", 0, fmt.Errorf("%s: host %s is not a valid hostname or IP address", quote(s), quote(host))
	}
	port, ok := parsePort(portText)
	if !ok {
		return "", 0, fmt.Errorf("%s: port %s is not a number from 0 to 65535", quote(s), quote(portText))
	}
	return host, port, nil
}

func parsePort(s string) (int, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
	}
	n, _ := strconv.Atoi(s)
	return n, n <= 65535
}

var (
	pollModes = []string{PollBusy, PollEventDriven}
	// knownTransports is its own list so that a caller changing
	// DefaultTransports cannot change what Validate accepts.
	knownTransports = []string{TransportRDMA, TransportUCX, TransportDPDK, TransportTCP, TransportQUIC, TransportWebSocket}
)

func (v *validator) network() {
	n := &v.c.Network
	for _, f := range []struct{ path, value string }{
		{"network.poll_mode", n.PollMode},
		{"network.tcp_reactor_mode", n.TCPReactorMode},
	} {
		if !contains(pollModes, f.value) {
			v.fail(ErrInvalid, f.path, "%s is not a poll mode; use busy_poll (lowest latency, spins a core) or event_driven", quote(f.value))
		}
	}

	if len(n.Transports) == 0 {
		v.fail(ErrRequired, "network.transports", "the list is empty; list at least one transport, e.g. [tcp], or remove the line for the default [%s]", strings.Join(DefaultTransports, ", "))
	}
	seen := map[string]int{}
	for i, t := range n.Transports {
		path := fmt.Sprintf("network.transports[%d]", i)
		if !contains(knownTransports, t) {
			v.fail(ErrInvalid, path, "unknown transport %s; use rdma, ucx, dpdk, tcp, quic or websocket", quote(t))
			continue
		}
		if j, dup := seen[t]; dup {
			v.fail(ErrDuplicate, path, "%s is already listed at network.transports[%d]; list each transport once, in order of preference", quote(t), j)
			continue
		}
		seen[t] = i
	}

	v.devices("network.rdma_device_names", n.RDMADeviceNames, func(d string) bool {
		return d != "" && len(d) <= MaxNameLen && strings.IndexFunc(d, func(r rune) bool { return r > 0x7f || !isNameByte(byte(r)) }) < 0
	}, "an RDMA device name; use a name listed by ibv_devices, e.g. mlx5_0")

	if t := n.TLS; (t.CertFile == "") != (t.KeyFile == "") {
		v.fail(ErrRequired, "network.tls", "cert_file and key_file go together; give both, or neither for an in-memory self-signed certificate")
	} else if t.CAFile != "" && t.CertFile == "" {
		v.fail(ErrRequired, "network.tls.cert_file", "ca_file verifies peers both ways, so this member needs its own cert_file and key_file too")
	}

	v.dpdk()

	if n.Relay && v.role == RoleMaster {
		v.fail(ErrInvalid, "network.relay", "a master relays nothing (relays are owners); remove the line")
	}

	v.relayAddresses()
	v.advertise()
}

// relayAddresses checks network.relay_addresses: each a host or host:port
// others can dial (no wildcard: each is advertised as written), each
// listed once, and only where the owner relays.
func (v *validator) relayAddresses() {
	const field = "network.relay_addresses"
	n := &v.c.Network
	if len(n.RelayAddresses) == 0 {
		return
	}
	if !v.role.hasOwner() {
		v.fail(ErrInvalid, field, "only an owner relays; remove the list")
		return
	}
	if !n.Relay {
		v.fail(ErrInvalid, field, "is set but network.relay is false, so nothing listens on them; remove the list or turn network.relay on")
		return
	}
	seen := map[string]int{}
	for i, a := range n.RelayAddresses {
		path := fmt.Sprintf("%s[%d]", field, i)
		host, port, err := SplitRelayAddress(a)
		if err != nil {
			v.fail(ErrInvalid, path, "%s", err.Error())
			continue
		}
		key := strings.ToLower(host)
		if port != 0 {
			key = net.JoinHostPort(key, strconv.Itoa(port))
		}
		if j, dup := seen[key]; dup {
			v.fail(ErrDuplicate, path, "%s is already listed at %s[%d]; list each address once", quote(a), field, j)
			continue
		}
		seen[key] = i
	}
}

// SplitRelayAddress parses one entry of network.relay_addresses: a
// hostname or IP (IPv6 bare or in brackets) with an optional :port, port
// 0 or none picking a free one. A wildcard host is refused: the address is
// advertised as written and others cannot dial 0.0.0.0.
func SplitRelayAddress(a string) (host string, port int, err error) {
	const hint = "write a host or host:port other members reach this one at, e.g. 10.0.1.5 or 10.0.1.5:7300"
	if a == "" {
		return "", 0, fmt.Errorf("empty address; %s", hint)
	}
	host = a
	if _, err := netip.ParseAddr(a); err != nil {
		if strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]") {
			host = a[1 : len(a)-1]
		} else if h, p, err := net.SplitHostPort(a); err == nil {
			var ok bool
			if port, ok = parsePort(p); !ok {
				return "", 0, fmt.Errorf("%s: port %s is not a number from 0 to 65535", quote(a), quote(p))
			}
			host = h
		} else if strings.Count(a, ":") > 0 {
			return "", 0, fmt.Errorf("%s is not host or host:port; %s (IPv6 with a port in brackets: [fd00::1]:7300)", quote(a), hint)
		}
	}
	if ip, err := netip.ParseAddr(host); strings.HasPrefix(a, "[") && (err != nil || !ip.Is6()) {
		return "", 0, fmt.Errorf("%s: only an IPv6 address goes in brackets; %s", quote(a), hint)
	}
	switch {
	case isWildcard(host):
		return "", 0, fmt.Errorf("%s is a wildcard address, which others cannot dial; %s", quote(a), hint)
	case !validHost(host):
		return "", 0, fmt.Errorf("%s: host %s is not a valid hostname or IP address; %s", quote(a), quote(host), hint)
	}
	return host, port, nil
}

// devices checks a list of device names: each one valid (what says what a
// valid one is, and how to write it) and listed once.
func (v *validator) devices(field string, list []string, valid func(string) bool, what string) {
	seen := map[string]int{}
	for i, d := range list {
		path := fmt.Sprintf("%s[%d]", field, i)
		if !valid(d) {
			v.fail(ErrInvalid, path, "%s is not %s", quote(d), what)
			continue
		}
		if j, dup := seen[d]; dup {
			v.fail(ErrDuplicate, path, "%s is already listed at %s[%d]; list each device once", quote(d), field, j)
			continue
		}
		seen[d] = i
	}
}

// dpdkReservedArgs are EAL arguments Fluxon sets itself, with the field
// that sets each.
var dpdkReservedArgs = map[string]string{
	"-l": "", "--lcores": "", "--file-prefix": "", "-m": "network.dpdk.memory", "--socket-mem": "network.dpdk.memory",
	"--no-huge": "network.dpdk.no_huge", "--vdev": "network.dpdk.vdevs",
	"-a": "network.dpdk.pci_devices", "--allow": "network.dpdk.pci_devices", "-w": "network.dpdk.pci_devices",
	"--pci-whitelist": "network.dpdk.pci_devices", "-b": "network.dpdk.pci_devices", "--block": "network.dpdk.pci_devices",
	"--pci-blacklist": "network.dpdk.pci_devices", "--no-pci": "network.dpdk.pci_devices",
}

// minDPDKMemory is the least EAL memory worth starting with: the mbuf
// pool alone takes several MiB.
const minDPDKMemory = 16 * MiB

func (v *validator) dpdk() {
	d := &v.c.Network.DPDK
	if d.Address == "" {
		if len(d.VDevs) > 0 || len(d.PCIDevices) > 0 || len(d.EALArgs) > 0 || d.NoHuge || d.Memory != 0 {
			v.fail(ErrRequired, "network.dpdk", "address is missing: the other fields need the address the owner listens on, e.g. address: dpdk://net_af_packet0:7100; set it, or remove network.dpdk")
		}
		return
	}
	if err := checkDPDKAddress(d.Address); err != "" {
		v.fail(ErrInvalid, "network.dpdk.address", "%s is not a dpdk listen address: %s; write dpdk://<device>:<port>, e.g. dpdk://net_af_packet0:7100 (port 0: any free one)", quote(d.Address), err)
	}
	if !contains(v.c.Network.Transports, TransportDPDK) {
		v.fail(ErrInvalid, "network.dpdk.address", "network.transports does not list dpdk, so nothing would use it; add dpdk to network.transports or remove network.dpdk")
	}
	v.devices("network.dpdk.vdevs", d.VDevs, func(vd string) bool { return vd != "" && !strings.ContainsAny(vd, " \t") },
		"a DPDK virtual device; write <driver><n>[,key=value…] without spaces, e.g. net_af_packet0,iface=eth1")
	v.devices("network.dpdk.pci_devices", d.PCIDevices, func(pd string) bool { return pciDevice.MatchString(pd) },
		"a PCI address; write <domain>:<bus>:<device>.<function>[,devargs] without spaces, e.g. 0000:3b:00.0 (lspci -D lists them)")
	for i, a := range d.EALArgs {
		path := fmt.Sprintf("network.dpdk.eal_args[%d]", i)
		name, _, _ := strings.Cut(a, "=")
		if field, ok := dpdkReservedArgs[name]; ok {
			if field == "" {
				v.fail(ErrInvalid, path, "%s is set by fluxon itself (one EAL thread, a file prefix per process); remove it", quote(a))
			} else {
				v.fail(ErrInvalid, path, "%s is set by fluxon from %s; use that field instead", quote(a), field)
			}
			continue
		}
		if !strings.HasPrefix(a, "-") {
			v.fail(ErrInvalid, path, "%s is not an EAL option; write each option as its own entry, with its value after '=' (e.g. --log-level=lib.eal:debug)", quote(a))
		}
	}
	if d.Memory != 0 && d.Memory < minDPDKMemory {
		v.fail(ErrInvalid, "network.dpdk.memory", "%s is too little for the EAL; give at least %s, or remove the line for the default", d.Memory, Size(minDPDKMemory))
	}
}

// pciDevice is a PCI address as the EAL's -a takes it: domain (optional
// there, required here so that every entry is written one way), bus,
// device, function, then optional device arguments.
var pciDevice = regexp.MustCompile(`^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\.[0-7](,[^\s]+)?$`)

// checkDPDKAddress says what is wrong with a dpdk listen address ("" if
// nothing). It mirrors services/transport/dpdk.ParseAddr, which this
// package does not import, minus the MAC: the listener's is its port's.
func checkDPDKAddress(s string) string {
	rest, ok := strings.CutPrefix(s, "dpdk://")
	if !ok {
		return "it does not start with dpdk://"
	}
	// The port follows the last colon: a PCI device's name has colons too.
	i := strings.LastIndexByte(rest, ':')
	ok = i >= 0
	var dev, port string
	if ok {
		dev, port = rest[:i], rest[i+1:]
	}
	switch {
	case !ok:
		return "no :<port>"
	case dev == "":
		return "no device"
	case strings.Contains(dev, "/"):
		return "a listen address names no MAC (the port's own is advertised)"
	case strings.ContainsAny(dev, " ,="):
		return "the device name holds a space, ',' or '='"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "the port must be a number 0..65535"
	}
	return ""
}

// advertise derives network.advertise_address when it is not set, and checks it.
func (v *validator) advertise() {
	const path = "network.advertise_address"
	n := &v.c.Network
	from, src := "listen.transport", v.c.Listen.Transport
	if v.role == RoleMaster {
		from, src = "listen.grpc", v.c.Listen.GRPC
	}
	if n.AdvertiseAddress == "" && !v.c.inDoc(path) {
		host, _, err := net.SplitHostPort(src)
		if err != nil {
			return // the listen address is reported on its own
		}
		if isWildcard(host) {
			h, err := hostname()
			if err != nil || !validHost(h) {
				v.fail(ErrRequired, path, "cannot be derived: %s %s listens on every interface and the hostname is unusable; set the host or IP other members reach this one at", from, quote(src))
				return
			}
			host = h
		}
		n.AdvertiseAddress = host
		return
	}
	a := n.AdvertiseAddress
	switch {
	case a == "":
		v.fail(ErrRequired, path, "must not be empty; remove the line to derive it from %s", from)
	case isWildcard(a):
		v.fail(ErrInvalid, path, "%s is a wildcard address, which others cannot dial; set this host's reachable name or IP", quote(a))
	case !validHost(a):
		hint := "write only a hostname or IP address"
		if _, _, err := net.SplitHostPort(a); err == nil {
			hint = "write only the host; the port comes from " + from
		}
		v.fail(ErrInvalid, path, "%s is not a hostname or IP address; %s", quote(a), hint)
	}
}

func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

func (v *validator) durationRange(path string, d, lo, hi Duration) {
	if d < lo || d > hi {
		v.fail(ErrInvalid, path, "%s is out of range; use %s to %s", d, lo, hi)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ValidName checks the rule shared by cluster_name, instance_key, node_id and
// sub_cluster: 1-63 of [A-Za-z0-9._-], starting with a letter or digit (so
// never "." or ".."). Such a name is safe as a path element and inside an etcd
// key. The error is a *FieldError for field, with no line.
func ValidName(field, s string) error {
	fail := func(kind error, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...), Err: kind}
	}
	switch {
	case s == "":
		return fail(ErrRequired, "must not be empty; use 1-63 of [A-Za-z0-9._-]")
	case len(s) > MaxNameLen:
		return fail(ErrInvalid, "%s is %d bytes long; use at most %d of [A-Za-z0-9._-]", quote(s), len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		if !isNameByte(s[i]) {
			return fail(ErrInvalid, "%s has characters unsafe for paths and etcd keys; use 1-63 of [A-Za-z0-9._-]", quote(s))
		}
	}
	if !isAlnum(s[0]) {
		return fail(ErrInvalid, "%s must start with a letter or digit; use 1-63 of [A-Za-z0-9._-]", quote(s))
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c)
}

func isNameByte(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }

// NormalizeEndpoint turns an etcd endpoint written as "host:port",
// "http://host:port" or "https://host:port" (a trailing "/" allowed) into
// "http://host:port", keeping https. It rejects a missing or bad port, a
// path, query or user info, and any other scheme. IPv6 hosts go in brackets.
func NormalizeEndpoint(ep string) (string, error) {
	if ep == "" {
		return "", errors.New("empty endpoint; write host:port, e.g. 10.0.0.1:2379")
	}
	if strings.TrimSpace(ep) != ep || strings.ContainsAny(ep, " \t\r\n") {
		return "", fmt.Errorf("%s contains spaces; write host:port, e.g. 10.0.0.1:2379", quote(ep))
	}
	scheme, rest := "http", ep
	if i := strings.Index(ep, "://"); i >= 0 {
		scheme, rest = strings.ToLower(ep[:i]), ep[i+3:]
		if scheme != "http" && scheme != "https" {
			return "", fmt.Errorf("%s: scheme %s is not supported; write host:port, http://host:port or https://host:port", quote(ep), quote(scheme))
		}
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		if rest[i:] != "/" {
			return "", fmt.Errorf("%s has a path or query; give only host:port, etcd serves its API at the root", quote(ep))
		}
		rest = rest[:i]
	}
	if strings.Contains(rest, "@") {
		return "", fmt.Errorf("%s contains user info; remove it, credentials do not go in the endpoint", quote(ep))
	}
	host, port, err := net.SplitHostPort(rest)
	if err != nil {
		var ae *net.AddrError
		switch {
		case errors.As(err, &ae) && ae.Err == "missing port in address" && (!strings.Contains(rest, "]") || strings.HasSuffix(rest, "]")):
			return "", fmt.Errorf("%s has no port; add one (etcd listens on 2379 by default), e.g. %s", quote(ep), quote(ep+":2379"))
		case strings.Count(rest, ":") > 1 && !strings.HasPrefix(rest, "["):
			return "", fmt.Errorf("%s: put an IPv6 address in brackets, e.g. [::1]:2379", quote(ep))
		}
		return "", fmt.Errorf("%s is not host:port; write e.g. 10.0.0.1:2379", quote(ep))
	}
	if host == "" {
		return "", fmt.Errorf("%s has no host; write host:port, e.g. 10.0.0.1:2379", quote(ep))
	}
	if !validHost(host) {
		return "", fmt.Errorf("%s: host %s is not a valid hostname or IP address", quote(ep), quote(host))
	}
	n, ok := parsePort(port)
	if !ok || n == 0 {
		return "", fmt.Errorf("%s: port %s is not a number from 1 to 65535", quote(ep), quote(port))
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// validHost accepts an IP address (IPv6 with an optional zone) or a DNS name
// of labels of [A-Za-z0-9_-] not starting or ending with '-'.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlnum(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	// "999.1.1.1" is neither an IP nor a name: a last label of digits only
	// is never a top-level domain.
	last := labels[len(labels)-1]
	return strings.IndexFunc(last, func(r rune) bool { return r < '0' || r > '9' }) >= 0
}
