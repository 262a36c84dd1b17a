// Package config is the one configuration schema of every fluxon role
// (master, owner, external, and the all-in-one "fluxon up"): the YAML it
// accepts, the defaults it fills in, and the validation that turns a mistake
// into a single-line error naming the field, the line and the fix.
//
// Decoding is strict. Unknown fields at any depth, duplicate keys, values of
// the wrong shape, a document that is not a mapping and a file with several
// documents are all errors, and so is a field that belongs to another role
// (master.* on an owner, contribute_to_cluster_pool_size on an external).
// Whether a field is "set" is decided by its presence in the document, not by
// its value, so `listen.resp: ""` on `fluxon up` means "RESP disabled" rather
// than "use the default".
//
// Parse runs three steps, each of which can be used alone:
//
//	decode         the YAML, checked against the schema (syntax and shape errors)
//	ApplyDefaults  fills constant defaults for fields the document did not set
//	Validate       fills derived values (node_id, member_id, advertise_address),
//	               normalizes etcd endpoints, and checks every rule
//
// Shape errors come before value errors; within each step the error returned
// is the first one in document order, so the same file always gives the same
// message.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Role is the kind of process a config is for.
type Role string

// The roles. RoleUp is `fluxon up`: embedded etcd + master + owner in one
// process tree; it accepts both master and owner fields, and an empty
// etcd_endpoints means "use the embedded etcd".
const (
	RoleMaster   Role = "master"
	RoleOwner    Role = "owner"
	RoleExternal Role = "external"
	RoleUp       Role = "up"
)

// Roles lists every role, in the order used in messages.
var Roles = []Role{RoleMaster, RoleOwner, RoleExternal, RoleUp}

// ParseRole turns a command-line word into a Role.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", &FieldError{Msg: fmt.Sprintf("unknown role %s; use master, owner, external or up", quote(s)), Err: ErrRole}
}

func (r Role) valid() bool {
	switch r {
	case RoleMaster, RoleOwner, RoleExternal, RoleUp:
		return true
	}
	return false
}

// article returns the role with its indefinite article, for messages:
// "an owner", "a master".
func (r Role) article() string {
	switch r {
	case RoleOwner, RoleExternal, RoleUp:
		return "an " + string(r)
	}
	return "a " + string(r)
}

func (r Role) hasMaster() bool { return r == RoleMaster || r == RoleUp }
func (r Role) hasOwner() bool  { return r == RoleOwner || r == RoleUp }

// Defaults and limits.
const (
	DefaultUpClusterName    = "fluxon"
	DefaultSharedMemoryPath = "/dev/shm/fluxon"
	DefaultSharedFilePath   = "/tmp/fluxon"
	// DefaultListen binds loopback on a free port chosen at start.
	DefaultListen = "127.0.0.1:0"
	// DefaultUpRESP is where `fluxon up` serves RESP (redis-cli -p 6380).
	DefaultUpRESP = "127.0.0.1:6380"

	DefaultUpPoolSize  = 256 * MiB
	DefaultSegmentSize = 16 * MiB
	MinSegmentSize     = 1 * MiB
	MaxSegmentSize     = 1 * GiB

	DefaultElectionTTL = Duration(3 * time.Second)
	MinElectionTTL     = Duration(1 * time.Second)
	MaxElectionTTL     = Duration(60 * time.Second)

	DefaultLeaseTTL = Duration(5 * time.Second)
	MinLeaseTTL     = Duration(2 * time.Second)
	MaxLeaseTTL     = Duration(5 * time.Minute)

	// MaxConfigSize bounds what Parse and Load read; a real config is a few KiB.
	MaxConfigSize = 1 << 20

	// MaxNameLen is the longest cluster_name, instance_key, node_id or sub_cluster.
	MaxNameLen = 63
)

// Poll modes for network.poll_mode and network.tcp_reactor_mode.
const (
	PollBusy        = "busy_poll"
	PollEventDriven = "event_driven"
)

// upInstanceSuffix follows the hostname in `fluxon up`'s default instance_key.
const upInstanceSuffix = "-up"

// Transport names for network.transports.
const (
	TransportRDMA      = "rdma"
	TransportUCX       = "ucx"
	TransportDPDK      = "dpdk"
	TransportTCP       = "tcp"
	TransportQUIC      = "quic"
	TransportWebSocket = "websocket"
)

// DefaultTransports is the default preference order: fastest first.
var DefaultTransports = []string{TransportRDMA, TransportUCX, TransportDPDK, TransportTCP, TransportQUIC, TransportWebSocket}

// Config is the whole configuration of one fluxon process. See docs/config.md
// for every field, its default and the roles that accept it.
type Config struct {
	// ClusterName separates clusters' etcd keyspaces and shared-memory paths;
	// the same on every member of a cluster.
	ClusterName string `yaml:"cluster_name"`
	// InstanceKey is unique per process within the cluster.
	InstanceKey string `yaml:"instance_key"`
	// NodeID is the locator other members use; defaults to InstanceKey.
	NodeID string `yaml:"node_id"`
	// MemberID is another name for NodeID; after Validate both hold the
	// same value.
	MemberID   string `yaml:"member_id"`
	SubCluster string `yaml:"sub_cluster"`
	// EtcdEndpoints are normalized to "http(s)://host:port" by Validate.
	EtcdEndpoints     []string `yaml:"etcd_endpoints"`
	PrometheusBaseURL string   `yaml:"prometheus_base_url"`
	SharedMemoryPath  string   `yaml:"shared_memory_path"`
	SharedFilePath    string   `yaml:"shared_file_path"`
	// LogDir empty means console only.
	LogDir string `yaml:"log_dir"`
	// ContributeToClusterPoolSize is owner-only.
	ContributeToClusterPoolSize PoolSize      `yaml:"contribute_to_cluster_pool_size"`
	Pool                        PoolConfig    `yaml:"pool"`
	Listen                      ListenConfig  `yaml:"listen"`
	Network                     NetworkConfig `yaml:"network"`
	Master                      MasterConfig  `yaml:"master"`
	Lease                       LeaseConfig   `yaml:"lease"`

	// pos records where each field present in the document was written,
	// keyed by dotted path. nil for a Config built in code, in which case a
	// field counts as set when it is non-zero.
	pos map[string]pos
}

// PoolSize is the memory an owner contributes to the cluster pool.
type PoolSize struct {
	DRAM Size `yaml:"dram"`
	// VRAM is per device; the key is the device index "0", "1", ….
	VRAM map[string]Size `yaml:"vram"`
}

// PoolConfig shapes the owner's shared-memory pool. Owner-only.
type PoolConfig struct {
	// SegmentSize is the unit of RDMA registration and of accounting with
	// the master: a power of two from 1MiB to 1GiB; default 16MiB.
	SegmentSize Size `yaml:"segment_size"`
}

// ListenConfig holds the "host:port" addresses a process listens on. Port 0
// picks a free port at start.
type ListenConfig struct {
	// HTTP serves /metrics, /healthz and the panel; every role.
	HTTP string `yaml:"http"`
	// GRPC is the owner's and master's gRPC endpoint.
	GRPC string `yaml:"grpc"`
	// Transport is the owner's and external's data-plane endpoint.
	Transport string `yaml:"transport"`
	// RESP is the owner's RESP endpoint; empty disables it. Owner-only.
	RESP string `yaml:"resp"`
}

// NetworkConfig chooses how this process moves bytes.
type NetworkConfig struct {
	PollMode       string `yaml:"poll_mode"`
	TCPReactorMode string `yaml:"tcp_reactor_mode"`
	// Transports is the preference order.
	Transports []string `yaml:"transports"`
	// TransportsDefaulted: Transports is DefaultTransports because the
	// config names none (set by ApplyDefaults, never read from YAML). An
	// owner then leaves out what would be slower than tcp on its host
	// (ucx without an RDMA device); a list the config gives is offered
	// as it stands.
	TransportsDefaulted bool     `yaml:"-"`
	RDMADeviceNames     []string `yaml:"rdma_device_names"`
	// AdvertiseAddress is the host or IP other members use to reach this
	// one; by default the host part of listen.transport (listen.grpc on a
	// master), or this machine's hostname when that host is a wildcard.
	AdvertiseAddress string `yaml:"advertise_address"`
	// Relay makes an owner a relay for members without a direct path to
	// each other (another subnet, a firewall) and lets it dial through
	// relays itself. Default on for owners; a master cannot relay.
	Relay bool `yaml:"relay"`
	// RelayAddresses are the addresses (host, or host:port) the relay
	// listens on and advertises, in order of preference: one per network
	// when neighbours reach this member on different addresses. Empty: the
	// host of listen.transport, a free port. Owner-only, needs Relay.
	RelayAddresses []string `yaml:"relay_addresses"`
	// TLS is what the encrypted transports (quic, websocket as wss) present
	// and trust. Without it they use an in-memory self-signed certificate
	// and rely on Fluxon's own handshake (cluster name and incarnation),
	// which authenticates nothing against an active attacker.
	TLS TLSConfig `yaml:"tls"`
	// DPDK configures the dpdk transport of an owner. The owner offers
	// dpdk only when Address is set (and the binary has the dpdk build tag).
	DPDK DPDKConfig `yaml:"dpdk"`
}

// DPDKConfig is the dpdk transport's per-host setup: the EAL (DPDK's
// runtime, initialised once per process) and the port the owner listens on.
type DPDKConfig struct {
	// Address is where the owner listens: "dpdk://<device>:<port>", the
	// device a DPDK port name (a vdev such as net_af_packet0), the port a
	// service port of Fluxon's own framing (0: any free one). The address
	// advertised adds the port's MAC.
	Address string `yaml:"address"`
	// VDevs are virtual devices the EAL creates (--vdev), e.g.
	// "net_af_packet0,iface=eth1".
	VDevs []string `yaml:"vdevs"`
	// PCIDevices are the PCI NICs the EAL may probe (-a), each a PCI
	// address "<domain>:<bus>:<device>.<function>" with optional
	// ",devargs". Empty: the EAL runs with --no-pci (virtual devices only).
	PCIDevices []string `yaml:"pci_devices"`
	// EALArgs are passed to the EAL after Fluxon's own (core, file prefix,
	// memory, --no-huge, --vdev come from the other fields).
	EALArgs []string `yaml:"eal_args"`
	// NoHuge runs the EAL on plain memory instead of hugepages.
	NoHuge bool `yaml:"no_huge"`
	// Memory is the EAL's memory (-m); 0: cgo/dpdk's default (128MiB).
	Memory Size `yaml:"memory"`
}

// TLSConfig names PEM files: this member's certificate and key, and the CA
// that signs every member's certificate (peers are verified both ways).
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// MasterConfig is master-only.
type MasterConfig struct {
	ElectionTTL Duration `yaml:"election_ttl"`
}

// LeaseConfig governs member registration.
type LeaseConfig struct {
	TTL Duration `yaml:"ttl"`
}

// hostname is os.Hostname, replaced in tests so defaults are deterministic.
var hostname = os.Hostname

// Default returns a Config holding only defaults for role: required fields
// with no default (cluster_name and instance_key outside `up`, etcd_endpoints,
// an owner's contribute_to_cluster_pool_size.dram) stay empty, and derived
// fields (node_id, member_id, advertise_address) are left for Validate.
func Default(role Role) *Config {
	c := &Config{}
	c.ApplyDefaults(role)
	return c
}

// ApplyDefaults fills every field that has a constant default for role and
// is not set: absent from the document for a parsed Config, zero for one
// built in code. It never overwrites a value, and never fills another role's
// fields.
func (c *Config) ApplyDefaults(role Role) {
	str := func(path string, p *string, v string) {
		if *p == "" && !c.inDoc(path) {
			*p = v
		}
	}
	if role == RoleUp {
		str("cluster_name", &c.ClusterName, DefaultUpClusterName)
		str("instance_key", &c.InstanceKey, upInstanceKey())
	}
	str("shared_memory_path", &c.SharedMemoryPath, DefaultSharedMemoryPath)
	str("shared_file_path", &c.SharedFilePath, DefaultSharedFilePath)

	str("listen.http", &c.Listen.HTTP, DefaultListen)
	if role != RoleExternal {
		str("listen.grpc", &c.Listen.GRPC, DefaultListen)
	}
	if role != RoleMaster {
		str("listen.transport", &c.Listen.Transport, DefaultListen)
	}
	if role == RoleUp {
		str("listen.resp", &c.Listen.RESP, DefaultUpRESP)
	}

	poll := PollBusy
	if role == RoleExternal {
		poll = PollEventDriven
	}
	str("network.poll_mode", &c.Network.PollMode, poll)
	str("network.tcp_reactor_mode", &c.Network.TCPReactorMode, poll)
	if c.Network.Transports == nil && !c.inDoc("network.transports") {
		c.Network.Transports = append([]string(nil), DefaultTransports...)
		c.Network.TransportsDefaulted = true
	}

	if role.hasOwner() {
		if !c.Network.Relay && !c.inDoc("network.relay") {
			c.Network.Relay = true
		}
		if role == RoleUp && c.ContributeToClusterPoolSize.DRAM == 0 && !c.inDoc("contribute_to_cluster_pool_size.dram") {
			c.ContributeToClusterPoolSize.DRAM = DefaultUpPoolSize
		}
		if c.Pool.SegmentSize == 0 && !c.inDoc("pool.segment_size") {
			c.Pool.SegmentSize = DefaultSegmentSize
		}
	}
	if role.hasMaster() && c.Master.ElectionTTL == 0 && !c.inDoc("master.election_ttl") {
		c.Master.ElectionTTL = DefaultElectionTTL
	}
	if c.Lease.TTL == 0 && !c.inDoc("lease.ttl") {
		c.Lease.TTL = DefaultLeaseTTL
	}
}

// inDoc reports whether path was written in the document this Config was
// parsed from (false for a Config built in code).
func (c *Config) inDoc(path string) bool {
	_, ok := c.pos[path]
	return ok
}

// upInstanceKey is "<hostname>-up", with the hostname cut down to what
// ValidName accepts.
func upInstanceKey() string {
	h, err := hostname()
	if err != nil {
		h = ""
	}
	h = sanitizeName(h, MaxNameLen-len(upInstanceSuffix))
	if h == "" {
		h = "fluxon"
	}
	return h + upInstanceSuffix
}

// sanitizeName maps s onto the name alphabet: other bytes become '-', leading
// bytes that cannot start a name are dropped, and the result is cut to max.
func sanitizeName(s string, max int) string {
	b := []byte(s)
	for i, ch := range b {
		if !isNameByte(ch) {
			b[i] = '-'
		}
	}
	for len(b) > 0 && !isAlnum(b[0]) {
		b = b[1:]
	}
	if len(b) > max {
		b = b[:max]
	}
	return string(b)
}

// Parse decodes data strictly as a config for role, applies the defaults and
// validates the result. Every error is a *FieldError.
func Parse(data []byte, role Role) (*Config, error) {
	if !role.valid() {
		return nil, &FieldError{Msg: fmt.Sprintf("unknown role %s; use master, owner, external or up", quote(string(role))), Err: ErrRole}
	}
	if len(data) > MaxConfigSize {
		return nil, &FieldError{Msg: fmt.Sprintf("the config is %d bytes, more than the %d allowed; is this the right file?", len(data), MaxConfigSize), Err: ErrSyntax}
	}
	c, ferr := decode(data, role)
	if ferr != nil {
		return nil, ferr
	}
	c.ApplyDefaults(role)
	if err := c.Validate(role); err != nil {
		return nil, err
	}
	return c, nil
}

// Load reads the file at path and Parses it for role. Errors name the path.
func Load(path string, role Role) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(data, role)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.File = path
		}
		return nil, err
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fileError(path, err)
	}
	if len(data) > MaxConfigSize {
		return nil, &FieldError{File: path, Msg: fmt.Sprintf("the file is larger than the %d bytes allowed; is this the right file?", MaxConfigSize), Err: ErrSyntax}
	}
	return data, nil
}

func fileError(path string, err error) error {
	cause := err
	var pe *os.PathError
	if errors.As(err, &pe) {
		cause = pe.Err // the path is already in the message prefix
	}
	return &FieldError{File: path, Msg: fmt.Sprintf("cannot read the file: %v; check the path and its permissions", cause), Err: err}
}

// EtcdURLs returns the etcd endpoints as URLs ("http://host:port"). Validate
// has already normalized them in place; an endpoint that does not normalize
// (a Config never validated) is returned unchanged.
func (c *Config) EtcdURLs() []string {
	out := make([]string, 0, len(c.EtcdEndpoints))
	for _, ep := range c.EtcdEndpoints {
		if n, err := NormalizeEndpoint(ep); err == nil {
			ep = n
		}
		out = append(out, ep)
	}
	return out
}

// decodeYAML is the full yaml.v3 decode with KnownFields: a second, independent
// check behind the schema walk, which should already have rejected anything
// it would.
func decodeYAML(data []byte, c *Config) (ferr *FieldError) {
	defer func() {
		if r := recover(); r != nil {
			ferr = &FieldError{Msg: fmt.Sprintf("invalid YAML: the decoder failed (%v); simplify the document", r), Err: ErrSyntax}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		return yamlError(err, ErrType)
	}
	return nil
}

// yamlError turns a yaml.v3 error ("yaml: line 3: …", or a TypeError listing
// "line 3: …" entries) into a FieldError for its first problem.
func yamlError(err error, kind error) *FieldError {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ":"); ok {
			if _, serr := fmt.Sscanf(n, "%d", &line); serr == nil {
				msg = strings.TrimSpace(after)
			}
		}
	}
	if kind == ErrSyntax && isParserProblem(msg) {
		// yaml.v3 reports its parser's (not scanner's) errors with the
		// 0-based line, and none at all for the first line.
		line++
	}
	if kind == ErrSyntax {
		msg = "invalid YAML: " + msg + "; check the indentation (spaces, not tabs) and quoting"
	}
	return &FieldError{Line: line, Msg: msg, Err: kind}
}

// parserProblems are the messages of yaml.v3's parser stage (parserc.go);
// every other syntax error comes from its scanner, whose lines are 1-based.
var parserProblems = []string{
	"did not find expected",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

func isParserProblem(msg string) bool {
	for _, p := range parserProblems {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
