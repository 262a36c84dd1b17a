//go:build linux && cgo && dpdk

package dpdk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxon-dev/fluxon/internal/netlab"
)

// The EAL can start once per process, so every in-process test shares one
// configuration; tests that need other devices run children (in network
// namespaces) that start their own.
var testEAL = EAL{NoHuge: true, MemoryMB: 128, VDevs: []string{"net_ring0"}}

const testEtherType = 0x88B5

func TestMain(m *testing.M) {
	if role := os.Getenv("FLUXON_DPDK_CHILD"); role != "" {
		if err := child(role); err != nil {
			fmt.Fprintln(os.Stderr, "child", role+":", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// frame builds an L2 frame: dst, src, our ethertype, seq, crc, payload.
func frame(dst, src [6]byte, seq uint32, n int) []byte {
	b := make([]byte, 14+8+n)
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], testEtherType)
	binary.LittleEndian.PutUint32(b[14:], seq)
	for i := range n {
		b[22+i] = byte(int(seq) + i)
	}
	binary.LittleEndian.PutUint32(b[18:], crc32.ChecksumIEEE(b[22:]))
	return b
}

func parse(b []byte) (seq uint32, ok bool) {
	if len(b) < 22 || binary.BigEndian.Uint16(b[12:]) != testEtherType {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b[14:]), crc32.ChecksumIEEE(b[22:]) == binary.LittleEndian.Uint32(b[18:])
}

// TestRingLoopback: frames sent on a net_ring port come back intact, a
// burst at a time through the EAL thread. Twice: a vdev port closed in
// this process opens again (its device is created afresh).
func TestRingLoopback(t *testing.T) {
	for range 2 {
		ringLoopback(t)
	}
	if _, err := Open(EAL{FilePrefix: "other"}, PortConfig{Device: "x", Receive: func([]byte) {}}); err != ErrEALArgs {
		t.Errorf("a second EAL configuration = %v, want ErrEALArgs", err)
	}
}

func ringLoopback(t *testing.T) {
	var mu sync.Mutex
	got := map[uint32]bool{}
	bad := 0
	p, err := Open(testEAL, PortConfig{Device: "net_ring0", Receive: func(f []byte) {
		seq, ok := parse(f)
		mu.Lock()
		if ok {
			got[seq] = true
		} else {
			bad++
		}
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if Live() != 0 {
			t.Errorf("%d ports leaked", Live())
		}
	}()
	const n = 2000
	for i := range uint32(n) {
		if err := p.Send(frame(p.MAC(), p.MAC(), i, 1+int(i)%1400)); err != nil {
			t.Fatal(err)
		}
		if i%256 == 255 {
			time.Sleep(time.Millisecond) // keep within the tx queue
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		k, b := len(got), bad
		mu.Unlock()
		if b > 0 {
			t.Fatalf("%d frames came back corrupt", b)
		}
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames came back; stats %+v", k, n, p.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := p.Stats(); s.TxFrames < n {
		t.Errorf("stats %+v: fewer frames sent than %d", s, n)
	}
}

// A device the EAL did not create is a clear error, saying where ports
// come from, not a bare code.
func TestOpenUnknownPort(t *testing.T) {
	_, err := Open(testEAL, PortConfig{Device: "net_nosuch0", Receive: func([]byte) {}})
	var de *Error
	if !errors.As(err, &de) || de.Code != -4 || !strings.Contains(err.Error(), "the EAL has no port of that name") {
		t.Fatalf("open net_nosuch0 = %v, want the EAL's missing port explained", err)
	}
}

// pmd is the poll-mode driver of the veth tests' children: net_af_xdp for
// FLUXON_DPDK_PMD=af_xdp, net_af_packet otherwise.
func pmd() string {
	if os.Getenv("FLUXON_DPDK_PMD") == "af_xdp" {
		return "af_xdp"
	}
	return "af_packet"
}

// child runs one end of TestAFPacketVeth or TestAFXDPVeth in its own namespace and process:
// "echo" sends every frame back; "ping" sends frames and waits for them.
func child(role string) error {
	iface := os.Getenv("FLUXON_DPDK_IFACE")
	peer := os.Getenv("FLUXON_DPDK_PEER")
	var dst [6]byte
	if _, err := fmt.Sscanf(peer, "%x:%x:%x:%x:%x:%x", &dst[0], &dst[1], &dst[2], &dst[3], &dst[4], &dst[5]); err != nil {
		return fmt.Errorf("peer MAC %q: %w", peer, err)
	}
	e := EAL{NoHuge: true, MemoryMB: 128, FilePrefix: "flxt" + role + fmt.Sprint(os.Getpid()),
		VDevs: []string{"net_" + pmd() + "0,iface=" + iface}}
	var (
		mu   sync.Mutex
		got  = map[uint32]bool{}
		bad  int
		port *Port
		// foreign counts frames of other EtherTypes that reached Receive.
		foreign atomic.Int64
	)
	ready := make(chan struct{})
	recv := func(f []byte) {
		<-ready
		seq, ok := parse(f)
		if len(f) < 22 || binary.BigEndian.Uint16(f[12:]) != testEtherType {
			foreign.Add(1) // the kernel's own traffic: PortConfig.EtherType drops it
			return
		}
		if role == "echo" {
			out := append([]byte(nil), f...)
			copy(out, f[6:12])
			copy(out[6:], f[:6])
			_ = port.Send(out)
			return
		}
		mu.Lock()
		if ok {
			got[seq] = true
		} else {
			bad++
		}
		mu.Unlock()
	}
	var err error
	if port, err = Open(e, PortConfig{Device: "net_" + pmd() + "0", EtherType: testEtherType, Receive: recv}); err != nil {
		return err
	}
	close(ready)
	defer port.Close()
	if role == "echo" {
		fmt.Println("ready")         // the parent starts the ping now
		time.Sleep(30 * time.Second) // the parent kills it
		return nil
	}
	// Datagrams are unreliable: resend what has not come back.
	const n = 1000
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		missing := []uint32{}
		for i := range uint32(n) {
			if !got[i] {
				missing = append(missing, i)
			}
		}
		b := bad
		mu.Unlock()
		if b > 0 {
			return fmt.Errorf("%d frames came back corrupt", b)
		}
		if f := foreign.Load(); f > 0 {
			return fmt.Errorf("%d frames of other EtherTypes reached Receive", f)
		}
		if len(missing) == 0 {
			s := port.Stats()
			fmt.Printf("ping: %d frames echoed over %s; port %+v\n", n, iface, s)
			// The link is quiet but for us: a few resends are luck, many
			// mean the port loses frames (as net_af_xdp did when mbufs lay
			// outside its UMEM: 15x).
			if s.TxFrames > 3*n {
				return fmt.Errorf("%d frames sent to get %d echoed", s.TxFrames, n)
			}
			return nil
		}
		for i, s := range missing {
			_ = port.Send(frame(dst, port.MAC(), s, 64+int(s)%1400))
			if i%128 == 127 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("frames never came back; port %+v", port.Stats())
}

func macOf(t *testing.T, h *netlab.Host, iface string) string {
	out, err := h.Command("cat", "/sys/class/net/"+iface+"/address").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// TestAFPacketVeth: two processes, each with its own EAL (distinct
// --file-prefix) in its own network namespace, exchange raw frames over a
// veth pair through net_af_packet.
func TestAFPacketVeth(t *testing.T) { vethEcho(t, "af_packet") }

// TestAFXDPVeth is TestAFPacketVeth through net_af_xdp (an XDP program on
// each veth end redirects to the port's AF_XDP socket, in copy mode).
func TestAFXDPVeth(t *testing.T) {
	if err := AFXDPAvailable(); err != nil {
		t.Skip(err)
	}
	vethEcho(t, "af_xdp")
}

func vethEcho(t *testing.T, pmd string) {
	if err := netlab.Available(); err != nil {
		t.Skip(err)
	}
	lab := netlab.NewChain(t, 2)
	h1, h2 := lab.Hosts[0], lab.Hosts[1]
	m1, m2 := macOf(t, h1, "r1"), macOf(t, h2, "l1")
	run := func(h *netlab.Host, role, iface, peer string) *exec.Cmd {
		c := h.Command(os.Args[0], "-test.run=^$")
		c.Env = append(os.Environ(), "FLUXON_DPDK_CHILD="+role, "FLUXON_DPDK_IFACE="+iface,
			"FLUXON_DPDK_PEER="+peer, "FLUXON_DPDK_PMD="+pmd)
		return c
	}
	echo := run(h2, "echo", "l1", m1)
	pr, pw := io.Pipe()
	echo.Stdout, echo.Stderr = pw, pw
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	var echoOut strings.Builder
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			echoOut.WriteString(sc.Text() + "\n")
			if sc.Text() == "ready" {
				close(ready)
			}
		}
	}()
	defer func() {
		_ = echo.Process.Kill()
		_ = echo.Wait()
		_ = pw.Close()
		<-done
	}()
	// Frames sent before the echo's port is up would be lost and resent.
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the echo's port did not open in 30 s")
	}
	out, err := run(h1, "ping", "r1", m2).CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		_ = echo.Process.Kill()
		_ = pw.Close()
		<-done
		t.Fatalf("ping: %v\necho: %s", err, echoOut.String())
	}
}
