package config_test

import (
	"fmt"

	"github.com/fluxon-dev/fluxon/control/config"
)

func ExampleParse() {
	c, err := config.Parse([]byte(`
cluster_name: prod
instance_key: host-a
etcd_endpoints: ["10.0.0.1:2379", "https://etcd-2:2379"]
contribute_to_cluster_pool_size:
  dram: 4GiB
`), config.RoleOwner)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.NodeID, c.ContributeToClusterPoolSize.DRAM, c.Pool.SegmentSize, c.EtcdURLs())
	// Output: host-a 4GiB 16MiB [http://10.0.0.1:2379 https://etcd-2:2379]
}

func ExampleParse_error() {
	_, err := config.Parse([]byte(`cluster_name: prod
instance_key: host-a
etcd_endpoints: ["10.0.0.1:2379"]
contribute_to_cluster_pool_size:
  dram: 12 parsecs
`), config.RoleOwner)
	fmt.Println(err)
	// Output: config line 5: contribute_to_cluster_pool_size.dram: cannot parse "12 parsecs" as a size; use bytes or a unit such as 512MiB, 4GiB
}

func ExampleSize_String() {
	for _, s := range []string{"1GiB", "1.5GiB", "1G", "100"} {
		v, _ := config.ParseSize(s)
		fmt.Println(s, "=", uint64(v), "=", v)
	}
	// Output:
	// 1GiB = 1073741824 = 1GiB
	// 1.5GiB = 1610612736 = 1536MiB
	// 1G = 1000000000 = 1000000000B
	// 100 = 100 = 100B
}

func ExampleNormalizeEndpoint() {
	for _, ep := range []string{"10.0.0.1:2379", "https://etcd:2379/", "etcd"} {
		n, err := config.NormalizeEndpoint(ep)
		fmt.Println(n, err)
	}
	// Output:
	// http://10.0.0.1:2379 <nil>
	// https://etcd:2379 <nil>
	//  "etcd" has no port; add one (etcd listens on 2379 by default), e.g. "etcd:2379"
}

func ExampleValidName() {
	fmt.Println(config.ValidName("cluster_name", "prod-eu.1"))
	fmt.Println(config.ValidName("cluster_name", "../etc"))
	// Output:
	// <nil>
	// config: cluster_name: "../etc" has characters unsafe for paths and etcd keys; use 1-63 of [A-Za-z0-9._-]
}
