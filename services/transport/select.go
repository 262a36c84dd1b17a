package transport

import (
	"errors"
	"fmt"
	"strings"
)

// ErrNoTransport: no candidate transport can run on this host.
var ErrNoTransport = errors.New("transport: no transport available")

// Candidate is a transport FirstAvailable may pick: New builds it, or says
// why it cannot run here (rdma without a device: rdma.ErrNoDevice).
type Candidate struct {
	Name string
	New  func() (Transport, error)
}

// Skipped is a candidate FirstAvailable passed over, and why.
type Skipped struct {
	Name string
	Err  error
}

// FirstAvailable builds the candidates in order (network.transports order)
// and returns the first that succeeds, with the reasons the ones before it
// were skipped, so the caller can report them once at start ("rdma: no
// RDMA device") instead of pretending they run.
func FirstAvailable(candidates ...Candidate) (Transport, []Skipped, error) {
	var skipped []Skipped
	for _, c := range candidates {
		t, err := c.New()
		if err == nil {
			return t, skipped, nil
		}
		skipped = append(skipped, Skipped{Name: c.Name, Err: err})
	}
	reasons := make([]string, len(skipped))
	errs := []error{ErrNoTransport}
	for i, s := range skipped {
		reasons[i] = s.Name + ": " + s.Err.Error()
		errs = append(errs, s.Err)
	}
	return nil, skipped, fmt.Errorf("%w (%s); add tcp to network.transports: %w", ErrNoTransport, strings.Join(reasons, "; "), errors.Join(errs[1:]...))
}
