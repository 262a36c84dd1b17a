package fluxon

import "os"

func execName() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "fluxon-client"
}
