package cluster

import (
	"errors"
	"os"
)

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func createFile(path string) (*os.File, error) { return os.Create(path) }
