package rdma

import (
	"fmt"
	"strings"
)

// PortActive is ibv_port_state IBV_PORT_ACTIVE.
const PortActive = 4

// DeviceInfo describes one RDMA device (port 1).
type DeviceInfo struct {
	Name      string
	NodeGUID  uint64
	MaxQPWR   uint32
	MaxCQE    uint32
	Ports     uint32
	PortState uint32
	LinkLayer uint32 // 1 InfiniBand, 2 Ethernet (RoCE)
}

// Select picks the devices to use out of what the host has: all of them
// when names is empty (network.rdma_device_names unset), otherwise the named
// ones in the configured order. No devices at all, or none of the named
// ones present, is ErrNoDevice with the names that do exist.
func Select(have []DeviceInfo, names []string) ([]DeviceInfo, error) {
	if len(have) == 0 {
		return nil, fmt.Errorf("%w on this host", ErrNoDevice)
	}
	if len(names) == 0 {
		return have, nil
	}
	var missing []string
	var picked []DeviceInfo
	for _, n := range names {
		found := false
		for _, d := range have {
			if d.Name == n {
				picked = append(picked, d)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	if len(picked) == 0 {
		avail := make([]string, len(have))
		for i, d := range have {
			avail[i] = d.Name
		}
		return nil, fmt.Errorf("%w: none of network.rdma_device_names [%s] is present; this host has [%s]",
			ErrNoDevice, strings.Join(missing, ", "), strings.Join(avail, ", "))
	}
	return picked, nil
}
