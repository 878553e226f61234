package store

import (
	"errors"
	"fmt"

	"github.com/edgehub/edgehub/internal/boltcheck"
)

// precheck checks a stream file's structure before bbolt maps it
// (internal/boltcheck says why): damage is a *CorruptError naming the file.
func precheck(path string) error {
	err := boltcheck.Check(path)
	if errors.Is(err, boltcheck.ErrDamaged) {
		return &CorruptError{File: path, Shard: -1, Err: err}
	}
	if err != nil {
		return fmt.Errorf("store: check %s: %w", path, err)
	}
	return nil
}
