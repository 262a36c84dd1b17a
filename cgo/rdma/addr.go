package rdma

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The address-exchange record: what one side of an RC connection sends the
// other over the control channel so both can move their QPs to RTR/RTS and
// the peer can address one-sided READ/WRITE to this side's registered pool
// segments. Layout (version 2, big-endian, fixed offsets):
//
//	0  magic "FXRA"      4
//	4  version u16       6
//	6  flags u16 (0)     8
//	8  lid u16          10
//	10 port u8          11
//	11 mtu u8           12  ibv_mtu: 1 (256) .. 5 (4096)
//	12 gid [16]         28
//	28 gid_index u32    32
//	32 qpn u32          36  24 bits
//	36 psn u32          40  24 bits
//	40 nregions u16     42
//	42 rd_atomic u8     43  READs this side serves at once, 1..MaxRdAtomic
//	43 reserved u8      44  (0)
//	44 regions, each 24 bytes: segment u32, rkey u32, addr u64, len u64
//
// Version 1 had a reserved u16 (0) at 42 and no rd_atomic: it is still
// read, as rd_atomic 1 (the depth every QP had then).
const (
	AddrMagic      = "FXRA"
	AddrVersion    = uint16(2)
	addrVersion1   = uint16(1)
	AddrHeaderSize = 44
	AddrRegionSize = 24
	// MaxAddrRegions bounds the regions one record may carry (a pool of
	// 64 GiB in 16 MiB segments has 4096), so a decoder allocates at most
	// AddrHeaderSize + MaxAddrRegions*AddrRegionSize bytes' worth.
	MaxAddrRegions = 8192
	maxQPN         = 1<<24 - 1
	// MaxRdAtomic caps the RDMA READs in flight on one QP, either way.
	MaxRdAtomic = 16
)

// ErrBadAddr: an address record failed validation.
var ErrBadAddr = errors.New("rdma: bad address record")

// RemoteRegion is a registered segment the peer may read or write.
type RemoteRegion struct {
	Segment uint32
	RKey    uint32
	Addr    uint64
	Len     uint64
}

// Addr is one side's RC endpoint.
type Addr struct {
	LID      uint16
	Port     uint8
	MTU      uint8
	GID      [16]byte
	GIDIndex uint32
	QPN      uint32
	PSN      uint32
	// RdAtomic is how many RDMA READs this side serves at once as their
	// target (its QP's max_dest_rd_atomic), 1..MaxRdAtomic; the peer keeps
	// at most that many in flight to it. 0 is sent as 1.
	RdAtomic uint8
	Regions  []RemoteRegion
}

func (a *Addr) validate() error {
	switch {
	case a.QPN > maxQPN:
		return fmt.Errorf("%w: qpn %d is above 24 bits", ErrBadAddr, a.QPN)
	case a.PSN > maxQPN:
		return fmt.Errorf("%w: psn %d is above 24 bits", ErrBadAddr, a.PSN)
	case a.MTU < 1 || a.MTU > 5:
		return fmt.Errorf("%w: mtu %d is not an ibv_mtu (1..5)", ErrBadAddr, a.MTU)
	case a.Port == 0:
		return fmt.Errorf("%w: port 0 (ports are 1-based)", ErrBadAddr)
	case a.RdAtomic > MaxRdAtomic:
		return fmt.Errorf("%w: rd_atomic %d, at most %d", ErrBadAddr, a.RdAtomic, MaxRdAtomic)
	case len(a.Regions) > MaxAddrRegions:
		return fmt.Errorf("%w: %d regions, at most %d", ErrBadAddr, len(a.Regions), MaxAddrRegions)
	}
	for i, r := range a.Regions {
		if r.Len == 0 || r.Addr+r.Len < r.Addr {
			return fmt.Errorf("%w: region %d (segment %d) has length %d at %#x", ErrBadAddr, i, r.Segment, r.Len, r.Addr)
		}
	}
	return nil
}

// MarshalBinary encodes a as a version-2 record.
func (a *Addr) MarshalBinary() ([]byte, error) {
	if err := a.validate(); err != nil {
		return nil, err
	}
	b := make([]byte, AddrHeaderSize+len(a.Regions)*AddrRegionSize)
	copy(b[0:4], AddrMagic)
	be := binary.BigEndian
	be.PutUint16(b[4:], AddrVersion)
	be.PutUint16(b[8:], a.LID)
	b[10] = a.Port
	b[11] = a.MTU
	copy(b[12:28], a.GID[:])
	be.PutUint32(b[28:], a.GIDIndex)
	be.PutUint32(b[32:], a.QPN)
	be.PutUint32(b[36:], a.PSN)
	be.PutUint16(b[40:], uint16(len(a.Regions)))
	b[42] = max(a.RdAtomic, 1)
	for i, r := range a.Regions {
		o := b[AddrHeaderSize+i*AddrRegionSize:]
		be.PutUint32(o[0:], r.Segment)
		be.PutUint32(o[4:], r.RKey)
		be.PutUint64(o[8:], r.Addr)
		be.PutUint64(o[16:], r.Len)
	}
	return b, nil
}

// UnmarshalBinary decodes and validates a record; it never allocates more
// than the record's own length implies.
func (a *Addr) UnmarshalBinary(b []byte) error {
	if len(b) < AddrHeaderSize {
		return fmt.Errorf("%w: %d bytes, a record is at least %d", ErrBadAddr, len(b), AddrHeaderSize)
	}
	if string(b[0:4]) != AddrMagic {
		return fmt.Errorf("%w: magic %q, want %q", ErrBadAddr, b[0:4], AddrMagic)
	}
	be := binary.BigEndian
	v := be.Uint16(b[4:])
	if v != AddrVersion && v != addrVersion1 {
		return fmt.Errorf("%w: version %d, this side speaks %d and %d; upgrade the older member", ErrBadAddr, v, addrVersion1, AddrVersion)
	}
	rdAtomic := uint8(1)
	if v == AddrVersion {
		rdAtomic = b[42]
		if rdAtomic == 0 {
			return fmt.Errorf("%w: rd_atomic 0", ErrBadAddr)
		}
		if f, r := be.Uint16(b[6:]), b[43]; f != 0 || r != 0 {
			return fmt.Errorf("%w: flags %#x / reserved %#x must be 0 in version %d", ErrBadAddr, f, r, v)
		}
	} else if f, r := be.Uint16(b[6:]), be.Uint16(b[42:]); f != 0 || r != 0 {
		return fmt.Errorf("%w: flags %#x / reserved %#x must be 0 in version %d", ErrBadAddr, f, r, v)
	}
	n := int(be.Uint16(b[40:]))
	if want := AddrHeaderSize + n*AddrRegionSize; len(b) != want {
		return fmt.Errorf("%w: %d regions need %d bytes, got %d", ErrBadAddr, n, want, len(b))
	}
	out := Addr{LID: be.Uint16(b[8:]), Port: b[10], MTU: b[11], GIDIndex: be.Uint32(b[28:]),
		QPN: be.Uint32(b[32:]), PSN: be.Uint32(b[36:]), RdAtomic: rdAtomic}
	copy(out.GID[:], b[12:28])
	if n > 0 {
		out.Regions = make([]RemoteRegion, n)
		for i := range out.Regions {
			o := b[AddrHeaderSize+i*AddrRegionSize:]
			out.Regions[i] = RemoteRegion{Segment: be.Uint32(o[0:]), RKey: be.Uint32(o[4:]),
				Addr: be.Uint64(o[8:]), Len: be.Uint64(o[16:])}
		}
	}
	if err := out.validate(); err != nil {
		return err
	}
	*a = out
	return nil
}

// Region returns the peer's region for segment.
func (a *Addr) Region(segment uint32) (RemoteRegion, bool) {
	for _, r := range a.Regions {
		if r.Segment == segment {
			return r, true
		}
	}
	return RemoteRegion{}, false
}
