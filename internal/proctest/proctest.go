// Package proctest pauses child processes in tests.
//
// kill(2) only queues a signal: a SIGSTOPped child may run on, on another
// core, for a while after the call returns (long enough to answer a request
// a test meant it to ignore). Stop returns once every thread has stopped.
package proctest

import (
	"fmt"
	"os"
	"syscall"
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
