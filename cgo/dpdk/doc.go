// Package dpdk wraps native/dpdk: DPDK's EAL, initialised once per process
// from Go-built arguments, and ethdev ports moving raw L2 frames in bursts.
//
// One goroutine, locked to its OS thread (runtime.LockOSThread), calls
// rte_eal_init and then sets ports up and tears them down: it is the
// process's EAL lcore. Another goroutine, not locked (see pollLoop for
// why), busy-polls each open port's rx queue and drains the Go-side tx
// queue for a bounded spin after the last frame, yielding its core between
// empty polls, then parks for IdleSleep, so an idle process costs little
// CPU (this host shares its cores). Frames cross the cgo boundary a burst
// at a time.
//
// It is built with the "dpdk" build tag on Linux with cgo and Debian's
// libdpdk-dev (22.11); every other build gets a stub whose calls return
// ErrNotSupported. It needs no hugepages (EAL{NoHuge: true}) and no NIC:
// virtual devices such as net_af_packet (a kernel interface, e.g. a veth
// end) and net_ring (in-process loopback) are enough.
package dpdk

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ErrNotSupported: this build has no DPDK.
var ErrNotSupported = errors.New("dpdk: not in this build; build with -tags dpdk on Linux with cgo and libdpdk-dev installed")

// ErrClosed: use of a closed port.
var ErrClosed = errors.New("dpdk: use of a closed port")

// ErrEALArgs: the EAL is already running with other arguments (DPDK
// initialises it once per process).
var ErrEALArgs = errors.New("dpdk: the EAL is already initialised with other arguments; one set per process")

// Defaults.
const (
	DefaultMemoryMB  = 128
	DefaultMbufs     = 4095
	DefaultSpin      = 50 * time.Microsecond
	DefaultIdleSleep = 100 * time.Microsecond
	// MaxFrame is the largest frame a port moves (a burst buffer slot).
	MaxFrame = 2048
)

// EAL is the EAL configuration, turned into rte_eal_init's arguments by Args.
type EAL struct {
	// NoHuge runs without hugepages (--no-huge), on MemoryMB of plain memory.
	NoHuge   bool
	MemoryMB int
	// FilePrefix keeps this process's runtime files apart from other DPDK
	// processes' (--file-prefix); empty means "fluxon<pid>".
	FilePrefix string
	// VDevs are virtual devices, e.g. "net_af_packet0,iface=veth0".
	VDevs []string
	// PCI are the PCI devices the EAL may probe, each "<domain:bus:dev.fn>"
	// with optional ",devargs" (-a). None: --no-pci, virtual devices only
	// (a probe of every PCI NIC would take over ports the kernel is using).
	PCI []string
	// Lcore is the core the EAL thread is pinned to (-l).
	Lcore int
	// Extra arguments are passed as they are (e.g. "--log-level=...").
	Extra []string
}

// Args is the argument vector (argv[0] included) for rte_eal_init.
func (e EAL) Args() []string {
	prefix := e.FilePrefix
	if prefix == "" {
		prefix = "fluxon" + strconv.Itoa(os.Getpid())
	}
	mem := e.MemoryMB
	if mem <= 0 {
		mem = DefaultMemoryMB
	}
	a := []string{"fluxon", "-l", strconv.Itoa(e.Lcore), "--file-prefix=" + prefix, "--no-shconf",
		"-m", strconv.Itoa(mem), "--no-telemetry", "--log-level=lib.eal:error"}
	if len(e.PCI) == 0 {
		a = append(a, "--no-pci")
	}
	for _, d := range e.PCI {
		a = append(a, "-a", d)
	}
	if e.NoHuge {
		a = append(a, "--no-huge")
	}
	for _, v := range e.VDevs {
		a = append(a, "--vdev="+v)
	}
	return append(a, e.Extra...)
}

// PortConfig configures a port.
type PortConfig struct {
	// Device is the ethdev name, a vdev's name before its comma
	// ("net_af_packet0").
	Device string
	// Mbufs sizes the port's mbuf pool.
	Mbufs int
	// Spin is how long the poller keeps polling after the last frame
	// before it parks for IdleSleep.
	Spin, IdleSleep time.Duration
	// Receive gets every received frame, on the poller; frame is valid
	// only during the call. It must not block.
	Receive func(frame []byte)
	// EtherType, if set, drops received frames of other EtherTypes
	// before Receive, and they do not count as traffic that keeps the
	// poller spinning: a net_af_packet port also sees the kernel's own
	// traffic on its interface (a TCP flow, say), which would otherwise
	// keep it busy-polling for nothing.
	EtherType uint16
	// BeforeTx, if set, runs on the poller on every turn that follows
	// a Kick, just before the queued frames are sent: a protocol that
	// coalesces sends what it gathered (with Send) there, so everything it
	// queued since the last turn leaves in one burst.
	BeforeTx func()
	// TxQueue bounds the frames waiting to be sent; Send drops beyond it.
	TxQueue int
}

// Stats are a port's counters.
type Stats struct {
	RxFrames, TxFrames, Errors uint64
	// TxDropped counts frames Send dropped for a full queue or a port that
	// would not take them.
	TxDropped uint64
}

// Error is a native/dpdk call that failed.
type Error struct {
	Op    string
	Code  int
	Errno error
}

func (e *Error) Error() string {
	if e.Errno != nil {
		return fmt.Sprintf("dpdk: %s: code %d: %v", e.Op, e.Code, e.Errno)
	}
	return fmt.Sprintf("dpdk: %s: code %d", e.Op, e.Code)
}

func (e *Error) Unwrap() error { return e.Errno }
