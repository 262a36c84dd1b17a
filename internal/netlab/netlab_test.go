package netlab

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// serveEcho listens on addr inside the root namespace and echoes one line.
func serveEcho(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte(line))
			}()
		}
	}()
}

// reach runs a TCP round trip from host h to addr with bash's /dev/tcp.
func reach(h *Host, addr string) bool {
	host, port, _ := net.SplitHostPort(addr)
	cmd := h.Command("timeout", "2", "bash", "-c", "exec 3<>/dev/tcp/"+host+"/"+port+"; echo hi >&3; read -r l <&3; echo $l")
	out, err := cmd.CombinedOutput()
	return err == nil && strings.TrimSpace(string(out)) == "hi"
}

func TestStarReachabilityAndCut(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip("needs root and iproute2:", err)
	}
	l := NewStar(t, 3)
	require.Len(t, l.Hosts, 3)
	serveEcho(t, l.Gateway+":0")
	ln, err := net.Listen("tcp", l.Gateway+":0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	serveEcho(t, addr)
	for _, h := range l.Hosts {
		require.True(t, reach(h, addr), "%s reaches the gateway", h.Name)
	}
	require.NoError(t, l.Hosts[1].Cut())
	require.False(t, reach(l.Hosts[1], addr), "a cut host reaches nobody")
	require.True(t, reach(l.Hosts[0], addr))
	require.NoError(t, l.Hosts[1].Heal())
	deadline := time.Now().Add(5 * time.Second)
	for !reach(l.Hosts[1], addr) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	require.True(t, reach(l.Hosts[1], addr), "healed")
}

// echoIn runs a one-shot line echo server inside h on addr.
func echoIn(t *testing.T, h *Host, addr string) {
	host, port, _ := net.SplitHostPort(addr)
	cmd := h.Command("python3", "-c", "import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((sys.argv[1],int(sys.argv[2])))\ns.listen()\nprint('ready',flush=True)\nwhile True:\n c,_=s.accept()\n c.sendall(c.recv(100))\n c.close()", host, port)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, _ := bufio.NewReader(out).ReadString('\n')
	require.Equal(t, "ready\n", line)
}

func TestChainOnlyNeighbours(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip("needs root and iproute2:", err)
	}
	l := NewChain(t, 4)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	addr := l.ChainAddr(1, false) + ":7000" // h2's end of link 1
	echoIn(t, h2, addr)
	require.True(t, reach(h1, addr), "h1 reaches its neighbour h2")
	require.False(t, reach(h3, addr), "h3 does not reach h2's link-1 address: no forwarding")
	addr3 := l.ChainAddr(2, false) + ":7001" // h3's end of link 2
	echoIn(t, h3, addr3)
	require.True(t, reach(h2, addr3))
	require.False(t, reach(h1, addr3), "two hops away is unreachable")
}

func TestStartBadPrefix(t *testing.T) {
	for _, p := range []string{"", "toolongname", "a-b", "1ab", "a b"} {
		_, err := Start(p, 1)
		require.ErrorContains(t, err, "prefix", p)
	}
}

// nsList returns the namespaces that exist now.
func nsList(t *testing.T) string {
	out, err := exec.Command("ip", "netns", "list").Output()
	require.NoError(t, err)
	return string(out)
}

func TestStartAndCloseWithoutATest(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip("needs root and iproute2:", err)
	}
	l, err := Start("nlt", 2)
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			l.Close()
		}
	}()
	require.Len(t, l.Hosts, 2)
	for _, h := range l.Hosts {
		require.True(t, strings.HasPrefix(h.NS, "nlt"), h.NS)
		require.Contains(t, nsList(t), h.NS)
	}
	ln, err := net.Listen("tcp", l.Gateway+":0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	serveEcho(t, addr)
	require.True(t, reach(l.Hosts[1], addr))
	names := []string{l.Hosts[0].NS, l.Hosts[1].NS}
	l.Close()
	closed = true
	l.Close() // twice is harmless
	for _, ns := range names {
		require.NotContains(t, nsList(t), ns, "Close removes the namespaces")
	}
	require.Error(t, exec.Command("ip", "link", "show", l.bridge).Run(), "Close removes the bridge")
}

func TestStarChainReachesNeighboursOnly(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	lab := NewStarChain(t, 4)
	for _, h := range lab.Hosts {
		echoIn(t, h, h.Node+":7000")
	}
	for i, h := range lab.Hosts {
		for j, o := range lab.Hosts {
			if i == j {
				continue
			}
			want := i-j == 1 || j-i == 1
			require.Equal(t, want, reach(h, o.Node+":7000"), "h%d -> h%d's node address", i+1, j+1)
		}
	}
	serveEcho(t, lab.Gateway+":7001")
	for _, h := range lab.Hosts {
		require.True(t, reach(h, lab.Gateway+":7001"), "%s reaches the gateway (etcd)", h.Name)
	}
}

// In a star-links lab the middle host is reached on the address of the
// link each neighbour shares with it, and on no other: h1 does not reach
// h2's right-hand address, h3 not its left-hand one, h1 not h3 at all.
func TestStarLinksReachOnTheSharedLinkOnly(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	lab := NewStarLinks(t, 3)
	h1, h2, h3 := lab.Hosts[0], lab.Hosts[1], lab.Hosts[2]
	require.Empty(t, h2.Node, "no node address")
	addrs := map[string]string{
		"h1": lab.LinkAddr(1, true), "h2 left": lab.LinkAddr(1, false),
		"h2 right": lab.LinkAddr(2, true), "h3": lab.LinkAddr(2, false),
	}
	echoIn(t, h1, addrs["h1"]+":7000")
	echoIn(t, h2, addrs["h2 left"]+":7000")
	echoIn(t, h2, addrs["h2 right"]+":7000")
	echoIn(t, h3, addrs["h3"]+":7000")
	for _, c := range []struct {
		from *Host
		to   string
		want bool
	}{
		{h1, "h2 left", true}, {h1, "h2 right", false}, {h1, "h3", false},
		{h3, "h2 right", true}, {h3, "h2 left", false}, {h3, "h1", false},
		{h2, "h1", true}, {h2, "h3", true},
	} {
		require.Equal(t, c.want, reach(c.from, addrs[c.to]+":7000"), "%s -> %s", c.from.Name, c.to)
	}
	serveEcho(t, lab.Gateway+":7001")
	for _, h := range lab.Hosts {
		require.True(t, reach(h, lab.Gateway+":7001"), "%s reaches the gateway (etcd)", h.Name)
	}
}
