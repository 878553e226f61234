//go:build !(linux || darwin || freebsd)

package hub

// fsSpace cannot tell on this platform: the dashboard shows only the data
// directory's size.
func fsSpace(dir string) (total, free uint64) { return 0, 0 }
