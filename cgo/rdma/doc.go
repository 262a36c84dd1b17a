// Package rdma wraps native/rdma (rdma-core's libibverbs) for the rdma
// transport, plus the device-free logic that transport needs: device
// selection (network.rdma_device_names), the address-exchange record, the
// memory-region cache and per-QP queue-depth credits.
//
// The verbs part is compiled only with the `rdma` build tag on Linux with
// cgo (it links -libverbs); other builds get a stub whose Devices and Open
// fail with an error matching both ErrNoDevice and ErrNotCompiled. On a host
// with the library but no device (no RDMA subsystem: ibv_get_device_list
// fails with ENOSYS) Devices fails with ErrNoDevice.
package rdma
