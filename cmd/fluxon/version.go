package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/fluxon-dev/fluxon/cgo/core"
	"github.com/fluxon-dev/fluxon/control/node"
	"github.com/fluxon-dev/fluxon/services/transport/tcp"
)

// versionInfo is what `fluxon version` reports.
type versionInfo struct {
	Version    string   `json:"version"`
	Commit     string   `json:"commit,omitempty"`
	CommitTime string   `json:"commit_time,omitempty"`
	Modified   bool     `json:"modified,omitempty"`
	GoVersion  string   `json:"go_version"`
	Platform   string   `json:"platform"`
	NativeCore string   `json:"native_core"`
	Transports []string `json:"transports"`
	BuildTags  string   `json:"build_tags,omitempty"`
}

// compiledTransports lists the data-plane transports linked into this binary.
// rdma, ucx, dpdk, quic and websocket join this list as they land (issue 5).
var compiledTransports = []string{tcp.Name}

func currentVersion() versionInfo {
	v := versionInfo{
		Version: node.Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		NativeCore: core.Version(), Transports: append([]string{}, compiledTransports...),
	}
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
		Short: "Print build information and the transports compiled in",
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
				if len(v.Transports) == 0 {
					fmt.Fprintf(w, "  transports:  none compiled in yet\n")
				} else {
					fmt.Fprintf(w, "  transports:  %v\n", v.Transports)
				}
				return nil
			}
			return usageError{fmt.Errorf("-o %q: use text or json", output)}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}
