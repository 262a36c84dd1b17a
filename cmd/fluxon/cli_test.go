package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
)

// Every command explains itself: a short line, a long text or examples, and
// a --help that works.
func TestEveryCommandHasHelp(t *testing.T) {
	root := newRoot()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			return
		}
		require.NotEmpty(t, c.Short, "%s has no short help", c.CommandPath())
		if c != root {
			require.NotEmpty(t, c.Example, "%s has no example", c.CommandPath())
		}
		args := append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "fluxon")), "--help")
		r := newRoot()
		var out bytes.Buffer
		r.SetOut(&out)
		r.SetArgs(args)
		require.NoError(t, r.Execute(), "%s --help", c.CommandPath())
		require.Contains(t, out.String(), "Usage:")
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

func TestVersionJSON(t *testing.T) {
	r := newRoot()
	var out bytes.Buffer
	r.SetOut(&out)
	r.SetArgs([]string{"version", "-o", "json"})
	require.NoError(t, r.Execute())
	var v versionInfo
	require.NoError(t, json.Unmarshal(out.Bytes(), &v))
	require.Equal(t, "0.1.0", v.NativeCore)
	require.NotEmpty(t, v.GoVersion)
	// Pure Go transports are always in; each native one is either listed
	// or said to be missing, with how to build it in.
	require.Subset(t, v.Transports, []string{"tcp", "quic", "websocket"})
	for _, name := range []string{"rdma", "ucx", "dpdk"} {
		_, missing := v.NotCompiled[name]
		require.NotEqual(t, slices.Contains(v.Transports, name), missing, "%s: listed %v, not compiled %v", name, v.Transports, v.NotCompiled)
		if missing {
			require.Contains(t, v.NotCompiled[name], "-tags "+name)
		}
	}
	require.Equal(t, cgordma.Compiled, slices.Contains(v.Transports, "rdma"))
	if _, err := cgordma.Devices(); cgordma.Compiled && err != nil {
		require.Contains(t, v.Unavailable["rdma"], "no RDMA device")
	} else {
		require.NotContains(t, v.Unavailable, "rdma")
	}

	r = newRoot()
	r.SetOut(&out)
	r.SetArgs([]string{"version", "-o", "yaml"})
	var ue usageError
	err := r.Execute()
	require.ErrorAs(t, err, &ue)
}
