//go:build !linux || !cgo

package ring

import (
	"context"
	"errors"
)

// Sentinel errors; in this build only ErrNotSupported is ever returned.
var (
	ErrAgain   = errors.New("ring: full or empty")
	ErrClosed  = errors.New("ring: closed")
	ErrCorrupt = errors.New("ring: corrupt region")
	ErrVersion = errors.New("ring: layout version mismatch")
	ErrInvalid = errors.New("ring: invalid argument")
	ErrTooBig  = errors.New("ring: slot too big")
)

// Ring is unavailable in this build; see ErrNotSupported.
type Ring struct{}

// Info is a snapshot of a ring's shared state.
type Info struct {
	SlotSize, Slots        int
	Head, Tail             uint64
	Closed                 bool
	ConsWaiters            uint32
	ProdWaiters            uint32
	ConsSleeps, ProdSleeps uint64
	ConsWakes, ProdWakes   uint64
}

// Len returns the number of slots in the ring when the snapshot was taken.
func (i Info) Len() int { return int(i.Tail - i.Head) }

// Size returns 0: no geometry is valid in this build.
func Size(slotSize, slots int) int { return 0 }

// Init returns ErrNotSupported.
func Init(mem []byte, slotSize, slots int) (*Ring, error) { return nil, ErrNotSupported }

// Open returns ErrNotSupported.
func Open(mem []byte) (*Ring, error) { return nil, ErrNotSupported }

func (r *Ring) SlotSize() int                                         { return 0 }
func (r *Ring) Slots() int                                            { return 0 }
func (r *Ring) Push(slot []byte) error                                { return ErrNotSupported }
func (r *Ring) PushBatch(src []byte) (int, error)                     { return 0, ErrNotSupported }
func (r *Ring) Pop(dst []byte) error                                  { return ErrNotSupported }
func (r *Ring) PopBatch(dst []byte, max int) (int, error)             { return 0, ErrNotSupported }
func (r *Ring) WaitNonEmpty(ctx context.Context, mode PollMode) error { return ErrNotSupported }
func (r *Ring) WaitNonFull(ctx context.Context, mode PollMode) error  { return ErrNotSupported }
func (r *Ring) ClosePeer() error                                      { return ErrNotSupported }
func (r *Ring) Closed() bool                                          { return false }
func (r *Ring) Stat() Info                                            { return Info{} }
