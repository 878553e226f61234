//go:build !linux

package cli

import "os"

// terminal reports whether f looks like a terminal: a character device
// (this also admits /dev/null; pass --yes in scripts).
func terminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
