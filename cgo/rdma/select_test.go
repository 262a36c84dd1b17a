package rdma

import (
	"errors"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	have := []DeviceInfo{{Name: "mlx5_0"}, {Name: "mlx5_1"}, {Name: "rxe0"}}
	names := func(ds []DeviceInfo) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.Name)
		}
		return strings.Join(s, ",")
	}
	cases := []struct {
		have  []DeviceInfo
		names []string
		want  string
		err   string
	}{
		{have, nil, "mlx5_0,mlx5_1,rxe0", ""},
		{have, []string{"rxe0", "mlx5_0"}, "rxe0,mlx5_0", ""},
		{have, []string{"mlx5_9", "mlx5_1"}, "mlx5_1", ""},
		{have, []string{"mlx5_9"}, "", "none of network.rdma_device_names [mlx5_9] is present; this host has [mlx5_0, mlx5_1, rxe0]"},
		{nil, nil, "", "no RDMA device on this host"},
		{nil, []string{"mlx5_0"}, "", "no RDMA device on this host"},
	}
	for _, c := range cases {
		got, err := Select(c.have, c.names)
		if c.err != "" {
			if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Select(%v): err %v, want ErrNoDevice with %q", c.names, err, c.err)
			}
			continue
		}
		if err != nil || names(got) != c.want {
			t.Errorf("Select(%v) = %s, %v; want %s", c.names, names(got), err, c.want)
		}
	}
}
