//go:build linux || darwin || freebsd

package hub

import "golang.org/x/sys/unix"

// fsSpace returns the size of the file system holding dir and the bytes
// available on it to this process; zeros if it cannot tell.
func fsSpace(dir string) (total, free uint64) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0
	}
	return uint64(st.Blocks) * uint64(st.Bsize), uint64(st.Bavail) * uint64(st.Bsize)
}
