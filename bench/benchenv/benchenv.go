// Package benchenv starts, on this machine, the servers a benchmark compares:
// Debian's redis-server and Fluxon's single-host cluster (`fluxon up`), each
// in its own temporary directory, on free loopback ports, and stops them
// again. Every process runs in its own process group and dies with the
// benchmark (SIGKILL on parent death), so nothing outlives a crashed run.
package benchenv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts of process control.
const (
	// stopTimeout is how long a process has to exit after SIGTERM before it
	// is killed.
	stopTimeout = 20 * time.Second
	// pollInterval is how often readiness is checked.
	pollInterval = 50 * time.Millisecond
	// tailLines is how much of a failed process's output an error quotes.
	tailLines = 15
)

// ErrExited reports a server that exited while it was expected to run.
var ErrExited = errors.New("benchenv: process exited")

// FreeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func FreeAddr() (string, error) { return FreeAddrOn("127.0.0.1") }

// FreeAddrOn returns an address of host (an address of this namespace)
// whose port was free a moment ago.
func FreeAddrOn(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Proc is a child process whose output is kept in memory and in a log file.
type Proc struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer
	log     *os.File
	done    chan struct{}
	err     error
}

// Start starts bin with args; its stdout and stderr go to logPath and are
// kept for Output.
func Start(name, logPath string, env []string, bin string, args ...string) (*Proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: exec.Command(bin, args...), log: f, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	// Its own process group: the terminal's Ctrl-C reaches only the
	// benchmark, which then stops its servers in order.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.Stdout, p.cmd.Stderr = (*procWriter)(p), (*procWriter)(p)
	if err := p.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.log.Close()
		close(p.done)
	}()
	return p, nil
}

type procWriter Proc

func (w *procWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out.Write(b)
	return w.log.Write(b)
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Output returns everything the process wrote so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Tail returns the last lines of the output, for error messages.
func (p *Proc) Tail() string {
	lines := strings.Split(strings.TrimRight(p.Output(), "\n"), "\n")
	if len(lines) > tailLines {
		lines = lines[len(lines)-tailLines:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// Exited says whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitError describes an unexpected exit, quoting the output.
func (p *Proc) exitError() error {
	return fmt.Errorf("%w: %s (%v); its last output (full log %s):\n%s", ErrExited, p.Name, p.err, p.LogPath, p.Tail())
}

// WaitFor polls ready until it returns true, the process exits, ctx ends
// or timeout passes.
func (p *Proc) WaitFor(ctx context.Context, timeout time.Duration, what string, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if p.Exited() {
			return p.exitError()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s within %s; its last output (full log %s):\n%s", p.Name, what, timeout, p.LogPath, p.Tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// Stop sends SIGTERM to the process group, waits up to stopTimeout, then
// kills it. It returns nil after a clean exit (status 0, or death by the
// SIGTERM it was sent).
func (p *Proc) Stop() error {
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed it", p.Name, stopTimeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
			return nil
		}
		return fmt.Errorf("%s exited with %v after SIGTERM; log %s", p.Name, p.err, p.LogPath)
	}
	return p.err
}

// CPUTime returns the user+system CPU time process pid has used (all its
// threads), from /proc/<pid>/stat.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	d, err := ParseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// ParseStatCPU returns utime+stime of a /proc/<pid>/stat line.
func ParseStatCPU(b []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces and
	// parentheses: fields are counted after the last closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected format: no command name in parentheses")
	}
	f := strings.Fields(string(b[i+1:]))
	// After ")": state is field 3, utime field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// MemAvailable returns MemAvailable from /proc/meminfo in bytes.
func MemAvailable() (uint64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("/proc/meminfo has no MemAvailable")
}

// FreeSpace returns the bytes available to this user on the file system of
// path.
func FreeSpace(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}
