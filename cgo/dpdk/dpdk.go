//go:build linux && cgo && dpdk

package dpdk

/*
#cgo CFLAGS: -I${SRCDIR}/../../native/include -D_GNU_SOURCE -std=gnu11 -Wall -Wextra -Werror
#cgo pkg-config: libdpdk
#include <stdlib.h>
#include "fluxon/dpdk.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	burst = C.FLX_DPDK_BURST
	slot  = C.FLX_DPDK_SLOT
	// DefaultTxQueue bounds a port's queued frames.
	DefaultTxQueue = 1024
)

var live atomic.Int64

// Supported reports whether this build has DPDK.
func Supported() bool { return true }

// Live is the number of open ports, for leak checks.
func Live() int64 { return live.Load() }

func check(op string, rc C.int, errno error) error {
	if rc >= 0 {
		return nil
	}
	e := &Error{Op: op, Code: int(rc)}
	if rc == C.FLX_ESYS {
		if en, ok := errno.(syscall.Errno); ok {
			e.Errno = en
		}
	}
	return e
}

// The process's EAL thread and poller. Fields below mu are set once;
// ports is replaced (never changed in place) under pollMu, which the
// poller holds while it polls.
var eal struct {
	mu      sync.Mutex
	started bool
	args    []string
	vdevs   []string // the EAL's --vdev specs
	err     error
	cmds    chan func()
	wake    chan struct{}
	pollMu  sync.Mutex
	ports   []*Port
	polling bool
}

// Port is an ethdev port polled by the poller (pollLoop). Send and Stats are safe
// for concurrent use.
type Port struct {
	cfg PortConfig
	c   *C.flx_dpdk_port
	mac [6]byte

	txmu    sync.Mutex
	txbuf   []byte
	txlens  []C.uint32_t
	txn     int
	closed  bool
	dropped atomic.Uint64
	kicked  atomic.Bool // BeforeTx is due

	// The poller's own.
	rxbuf  []byte
	rxlens []C.uint32_t
	spare  []byte
	slens  []C.uint32_t
}

// startEAL runs rte_eal_init with e's arguments on a new locked thread,
// once per process.
func startEAL(e EAL) error {
	args := e.Args()
	eal.mu.Lock()
	defer eal.mu.Unlock()
	if eal.started {
		if !slices.Equal(args[1:], eal.args[1:]) && e.FilePrefix != "" {
			return ErrEALArgs
		}
		return eal.err
	}
	eal.started = true
	eal.args = args
	eal.vdevs = e.VDevs
	eal.cmds = make(chan func(), 16)
	eal.wake = make(chan struct{}, 1)
	errc := make(chan error, 1)
	go ealThread(args, errc)
	eal.err = <-errc
	return eal.err
}

func ealThread(args []string, errc chan<- error) {
	// Never unlocked: rte_eal_init pins this thread to its lcore, and every
	// DPDK call of the process runs here. When the goroutine ends, so does
	// the thread.
	runtime.LockOSThread()
	argv := make([]*C.char, len(args))
	for i, a := range args {
		argv[i] = C.CString(a)
	}
	rc, errno := C.flx_dpdk_eal_init(C.int(len(args)), &argv[0])
	// rte_eal_init may keep argv's strings (it does for some options), so
	// they stay allocated for the process's life.
	if err := check("rte_eal_init "+joinArgs(args), rc, errno); err != nil {
		errc <- err
		return
	}
	errc <- nil
	for f := range eal.cmds {
		f()
	}
}

func joinArgs(a []string) string {
	s := ""
	for i, x := range a {
		if i > 0 {
			s += " "
		}
		s += x
	}
	return s
}

// pollLoop moves frames while ports are open: it polls every port while
// frames flow and for Spin after, then parks for IdleSleep at a time.
//
// It is a plain goroutine, not the EAL thread: a goroutine that Receive
// wakes (a connection's reader) is queued on the waker's P, and a thread
// locked to a goroutine that never blocks would leave it there until
// another thread steals it (tens of µs, longer when the cores are busy).
// Here runtime.Gosched after every turn runs it at once on the same
// thread, with no OS thread switch. Polling from a thread that is not an
// EAL lcore is fine for ethdev rx/tx bursts (one poller per queue) and for
// the mbuf pool (no per-lcore cache then). While it spins with nothing to
// do, it also gives its core to other threads (sched_yield): on a shared
// host the peer's threads need it.
func pollLoop() {
	last := time.Now()
	for {
		eal.pollMu.Lock()
		ports := eal.ports
		if len(ports) == 0 {
			eal.polling = false
			eal.pollMu.Unlock()
			return
		}
		busy := false
		for _, p := range ports {
			if p.poll() {
				busy = true
			}
		}
		eal.pollMu.Unlock()
		runtime.Gosched()
		now := time.Now()
		if busy {
			last = now
			continue
		}
		p0 := ports[0].cfg
		if now.Sub(last) < p0.Spin {
			C.flx_dpdk_idle(0)
			continue
		}
		// Park in nanosleep, not on a Go timer: Go may round a timer this
		// short up to a millisecond, which would be every idle frame's
		// latency. Sends are looked at on the next turn.
		select {
		case <-eal.wake:
		default:
			C.flx_dpdk_idle(C.uint(p0.IdleSleep / time.Microsecond))
		}
	}
}

// vdevArgs finds device among the EAL's --vdev specs ("name,args") and
// returns its args.
func vdevArgs(specs []string, device string) (string, bool) {
	for _, spec := range specs {
		name, args, _ := strings.Cut(spec, ",")
		if name == device {
			return args, true
		}
	}
	return "", false
}

// onEAL runs f on the EAL thread and waits for it.
func onEAL(f func()) {
	done := make(chan struct{})
	eal.cmds <- func() { f(); close(done) }
	<-done
}

// Open initialises the EAL (the first call of the process; later calls
// must pass the same EAL or one with an empty FilePrefix) and starts the
// port cfg.Device.
func Open(e EAL, cfg PortConfig) (*Port, error) {
	if cfg.Receive == nil {
		return nil, &Error{Op: "open port: a Receive function is required", Code: int(C.FLX_EINVAL)}
	}
	if cfg.Mbufs <= 0 {
		cfg.Mbufs = DefaultMbufs
	}
	if cfg.Spin <= 0 {
		cfg.Spin = DefaultSpin
	}
	if cfg.IdleSleep <= 0 {
		cfg.IdleSleep = DefaultIdleSleep
	}
	if cfg.TxQueue <= 0 {
		cfg.TxQueue = DefaultTxQueue
	}
	if err := startEAL(e); err != nil {
		return nil, err
	}
	p := &Port{
		cfg:    cfg,
		txbuf:  make([]byte, cfg.TxQueue*slot),
		txlens: make([]C.uint32_t, cfg.TxQueue),
		spare:  make([]byte, cfg.TxQueue*slot),
		slens:  make([]C.uint32_t, cfg.TxQueue),
		rxbuf:  make([]byte, burst*slot),
		rxlens: make([]C.uint32_t, burst),
	}
	var err error
	onEAL(func() {
		name := C.CString(cfg.Device)
		defer C.free(unsafe.Pointer(name))
		var mac [6]C.uint8_t
		rc, errno := C.flx_dpdk_port_open(name, C.uint(cfg.Mbufs), &p.c, &mac[0])
		if rc == C.FLX_ENOTFOUND {
			// A vdev of the EAL's whose port was closed in this process:
			// created again, as at EAL start.
			if args, ok := vdevArgs(eal.vdevs, cfg.Device); ok {
				cargs := C.CString(args)
				rc, errno = C.flx_dpdk_vdev_recreate(name, cargs)
				C.free(unsafe.Pointer(cargs))
				if rc == 0 {
					rc, errno = C.flx_dpdk_port_open(name, C.uint(cfg.Mbufs), &p.c, &mac[0])
				} else {
					err = check("open port "+cfg.Device+": create its vdev again", rc, errno)
					return
				}
			}
		}
		if rc == C.FLX_ENOTFOUND {
			err = &Error{Op: "open port " + cfg.Device + ": the EAL has no port of that name (ports are the --vdev devices it was given, or the PCI NICs it probed; a closed PCI port is gone until the process restarts)", Code: int(rc)}
			return
		}
		if err = check("open port "+cfg.Device, rc, errno); err != nil {
			return
		}
		for i := range mac {
			p.mac[i] = byte(mac[i])
		}
	})
	if err != nil {
		return nil, err
	}
	eal.pollMu.Lock()
	eal.ports = append(slices.Clip(eal.ports), p)
	start := !eal.polling
	eal.polling = true
	eal.pollMu.Unlock()
	if start {
		go pollLoop()
	}
	live.Add(1)
	return p, nil
}

// MAC is the port's Ethernet address.
func (p *Port) MAC() [6]byte { return p.mac }

// Send queues a copy of frame for the poller to send. A full queue
// drops it (counted in Stats.TxDropped): the link is unreliable by
// contract, and the caller's protocol retransmits.
func (p *Port) Send(frame []byte) error {
	if len(frame) > slot {
		return &Error{Op: "send: frame over MaxFrame", Code: int(C.FLX_ETOOBIG)}
	}
	p.txmu.Lock()
	if p.closed {
		p.txmu.Unlock()
		return ErrClosed
	}
	if p.txn == len(p.txlens) {
		p.txmu.Unlock()
		p.dropped.Add(1)
		return nil
	}
	copy(p.txbuf[p.txn*slot:], frame)
	p.txlens[p.txn] = C.uint32_t(len(frame))
	p.txn++
	first := p.txn == 1
	p.txmu.Unlock()
	if first {
		select {
		case eal.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Kick makes the poller run BeforeTx on its next turn, waking it if
// it is parked.
func (p *Port) Kick() {
	if !p.kicked.Swap(true) {
		select {
		case eal.wake <- struct{}{}:
		default:
		}
	}
}

// poll moves one rx burst to Receive and every queued frame to the port.
// It runs on the poller and reports whether anything moved.
func (p *Port) poll() bool {
	n := C.flx_dpdk_rx(p.c, (*C.uint8_t)(unsafe.Pointer(&p.rxbuf[0])), &p.rxlens[0], burst)
	got := 0
	for i := 0; i < int(n); i++ {
		off := i * slot
		f := p.rxbuf[off : off+int(p.rxlens[i])]
		if t := p.cfg.EtherType; t != 0 && (len(f) < 14 || binary.BigEndian.Uint16(f[12:]) != t) {
			continue
		}
		got++
		p.cfg.Receive(f)
	}
	if p.cfg.BeforeTx != nil && p.kicked.Load() {
		p.kicked.Store(false)
		p.cfg.BeforeTx()
	}
	p.txmu.Lock()
	k := p.txn
	if k > 0 {
		p.txbuf, p.spare = p.spare, p.txbuf
		p.txlens, p.slens = p.slens, p.txlens
		p.txn = 0
	}
	p.txmu.Unlock()
	for off := 0; off < k; off += burst {
		m := min(burst, k-off)
		sent := C.flx_dpdk_tx(p.c, (*C.uint8_t)(unsafe.Pointer(&p.spare[off*slot])), &p.slens[off], C.uint(m))
		if int(sent) < m {
			p.dropped.Add(uint64(m - max(int(sent), 0)))
		}
	}
	return got > 0 || k > 0
}

// Stats returns the port's counters.
func (p *Port) Stats() Stats {
	var s Stats
	onEAL(func() {
		if p.c == nil {
			return
		}
		var in, out, errs C.uint64_t
		if C.flx_dpdk_port_stats(p.c, &in, &out, &errs) == 0 {
			s = Stats{RxFrames: uint64(in), TxFrames: uint64(out), Errors: uint64(errs)}
		}
	})
	s.TxDropped = p.dropped.Load()
	return s
}

// Close stops the port. The EAL stays up for the process's life (DPDK
// cannot initialise it twice).
func (p *Port) Close() error {
	p.txmu.Lock()
	if p.closed {
		p.txmu.Unlock()
		return ErrClosed
	}
	p.closed = true
	p.txmu.Unlock()
	// Once the poller no longer has it, the port is closed on the EAL
	// thread.
	eal.pollMu.Lock()
	eal.ports = slices.DeleteFunc(slices.Clone(eal.ports), func(q *Port) bool { return q == p })
	eal.pollMu.Unlock()
	onEAL(func() {
		C.flx_dpdk_port_close(p.c)
		p.c = nil
	})
	live.Add(-1)
	return nil
}

// AFXDPAvailable reports why net_af_xdp cannot run here: a kernel without
// AF_XDP sockets (CONFIG_XDP_SOCKETS) refuses to create one.
func AFXDPAvailable() error {
	const afXDP = 44 // AF_XDP, <linux/socket.h>
	fd, err := syscall.Socket(afXDP, syscall.SOCK_RAW, 0)
	if err != nil {
		return fmt.Errorf("this kernel cannot create an AF_XDP socket: %w", err)
	}
	return syscall.Close(fd)
}
