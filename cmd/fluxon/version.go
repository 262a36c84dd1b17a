package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/cgo/core"
	cdpdk "github.com/fluxon-dev/fluxon/cgo/dpdk"
	cgordma "github.com/fluxon-dev/fluxon/cgo/rdma"
	cucx "github.com/fluxon-dev/fluxon/cgo/ucx"
	"github.com/fluxon-dev/fluxon/control/config"
	"github.com/fluxon-dev/fluxon/control/node"
)

// versionInfo is what `fluxon version` reports.
type versionInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commit_time,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	GoVersion  string `json:"go_version"`
	Platform   string `json:"platform"`
	NativeCore string `json:"native_core"`
	// Transports: the data-plane transports linked into this binary, in
	// the default preference order.
	Transports []string `json:"transports"`
	// NotCompiled: the transports this binary lacks, and how to get them.
	NotCompiled map[string]string `json:"not_compiled,omitempty"`
	// Unavailable: compiled-in transports that cannot run on this host,
	// and why (rdma without an RDMA device).
	Unavailable map[string]string `json:"unavailable,omitempty"`
	BuildTags   string            `json:"build_tags,omitempty"`
}

// compiled says whether this binary has transport name: tcp, quic and
// websocket always do; rdma, ucx and dpdk need their build tag (set by
// `make build` where their libraries are installed) and cgo.
func compiled(name string) (bool, string) {
	switch name {
	case config.TransportRDMA:
		return cgordma.Compiled, cgordma.ErrNotCompiled.Error()
	case config.TransportUCX:
		return cucx.Supported(), cucx.ErrNotSupported.Error()
	case config.TransportDPDK:
		return cdpdk.Supported(), cdpdk.ErrNotSupported.Error()
	}
	return true, ""
}

// hostTransports fills v's transport fields. Only rdma depends on the host
// as such (a device); dpdk needs its port in the config, and ucx always
// has its TCP and shared-memory transports.
func (v *versionInfo) hostTransports() {
	v.Transports = []string{}
	for _, name := range config.DefaultTransports {
		ok, why := compiled(name)
		if !ok {
			if v.NotCompiled == nil {
				v.NotCompiled = map[string]string{}
			}
			v.NotCompiled[name] = why
			continue
		}
		v.Transports = append(v.Transports, name)
		if name == config.TransportRDMA {
			if _, err := cgordma.Devices(); err != nil {
				v.Unavailable = map[string]string{name: err.Error()}
			}
		}
	}
}

func currentVersion() versionInfo {
	v := versionInfo{
		Version: node.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		NativeCore: core.Version(),
	}
	v.hostTransports()
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.CommitTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "-tags":
				v.BuildTags = s.Value
			}
		}
	}
	return v
}

func newVersionCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print build information, the transports compiled in, and those that cannot run on this host",
		Example: `  fluxon version
  fluxon version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := currentVersion()
			w := cmd.OutOrStdout()
			switch output {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(v)
			case "text", "":
				fmt.Fprintf(w, "fluxon %s\n", v.Version)
				if v.Commit != "" {
					dirty := ""
					if v.Modified {
						dirty = " (modified)"
					}
					fmt.Fprintf(w, "  commit:      %s%s %s\n", v.Commit, dirty, v.CommitTime)
				}
				fmt.Fprintf(w, "  go:          %s %s\n", v.GoVersion, v.Platform)
				fmt.Fprintf(w, "  native core: %s\n", v.NativeCore)
				fmt.Fprintf(w, "  transports:  %s\n", strings.Join(v.Transports, " "))
				if v.BuildTags != "" {
					fmt.Fprintf(w, "  build tags:  %s\n", v.BuildTags)
				}
				for _, name := range slices.Sorted(maps.Keys(v.Unavailable)) {
					fmt.Fprintf(w, "  not on this host: %s (%s)\n", name, v.Unavailable[name])
				}
				for _, name := range slices.Sorted(maps.Keys(v.NotCompiled)) {
					fmt.Fprintf(w, "  not compiled in: %s (%s)\n", name, v.NotCompiled[name])
				}
				return nil
			}
			return usageError{fmt.Errorf("-o %q: use text or json", output)}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
