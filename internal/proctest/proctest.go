// Package proctest pauses child processes in tests.
//
// kill(2) only queues a signal: a SIGSTOPped child may run on, on another
// core, for a while after the call returns (long enough to answer a request
// a test meant it to ignore). Stop returns once every thread has stopped.
package proctest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Stop sends SIGSTOP to p, a child of this process, and waits until the
// kernel reports it stopped (wait4 with WUNTRACED: the report comes when the
// group stop is complete, every thread parked). The child is not reaped.
func Stop(p *os.Process) error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(p.Pid, &ws, syscall.WUNTRACED, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("proctest: wait for %d to stop: %w", p.Pid, err)
		}
		if !ws.Stopped() {
			return fmt.Errorf("proctest: %d did not stop: wait status %#x", p.Pid, uint32(ws))
		}
		return nil
	}
}

// StartSelf runs this test binary again as a helper child, with env=1 in
// its environment (the helper's TestMain looks for it), its stderr on
// ours, and returns it with a scanner over its stdout (lines up to 1 MiB).
// The helper is expected to serve until its stdin closes: when the test
// ends it is resumed (it may be stopped), its stdin closed and it is
// waited for.
func StartSelf(t testing.TB, env string) (*os.Process, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	lines := bufio.NewScanner(stdout)
	lines.Buffer(nil, 1<<20)
	return cmd.Process, lines
}
