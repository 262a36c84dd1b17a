package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// The example configs shipped with docker/compose.yaml must stay valid.
func TestDockerExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../../docker/configs/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no docker example configs found: %v", err)
	}
	for _, f := range files {
		role := RoleOwner
		if strings.Contains(filepath.Base(f), "master") {
			role = RoleMaster
		}
		if _, err := Load(f, role); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
