package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
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
	require.NotNil(t, v.Transports)

	r = newRoot()
	r.SetOut(&out)
	r.SetArgs([]string{"version", "-o", "yaml"})
	var ue usageError
	err := r.Execute()
	require.ErrorAs(t, err, &ue)
}
