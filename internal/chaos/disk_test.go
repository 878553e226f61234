//go:build chaos

package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// loopDisk is an ext4 file system in an image file on a loop device: a
// disk whose power can be cut. The kernel keeps writes that were not
// fsynced as dirty pages of the mounted file system; only fsync (or the
// kernel's writeback, after 30 s, and the journal commit, here every 300 s)
// pushes them through the loop device into the image. A copy of the image
// taken after the hub is killed is therefore what a disk would hold after a
// power cut at that moment: fsynced data, and no more than what writeback
// happened to push. PowerCut mounts that copy in place of the disk.
type loopDisk struct {
	tb    testing.TB
	dir   string // holds the images
	mnt   string // the mount point: the "disk"
	image string
	dev   string
	gen   int
	cuts  int
}

// newLoopDisk makes and mounts a sizeMB disk, or skips the test when the
// machine cannot (not root, no loop devices).
func newLoopDisk(tb testing.TB, sizeMB int) *loopDisk {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("power-cut emulation needs root (loop devices and mount)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			tb.Skipf("power-cut emulation needs %s: %v", tool, err)
		}
	}
	d := &loopDisk{tb: tb, dir: tb.TempDir()}
	d.mnt = filepath.Join(d.dir, "mnt")
	if err := os.Mkdir(d.mnt, 0o755); err != nil {
		tb.Fatal(err)
	}
	d.image = filepath.Join(d.dir, "disk.0")
	if err := run("truncate", "-s", fmt.Sprintf("%dM", sizeMB), d.image); err != nil {
		tb.Fatal(err)
	}
	if err := run("mkfs.ext4", "-q", "-F", d.image); err != nil {
		tb.Fatal(err)
	}
	if err := d.attach(); err != nil {
		tb.Skipf("power-cut emulation: cannot mount a loop device: %v", err)
	}
	tb.Cleanup(d.detach)
	return d
}

func (d *loopDisk) attach() error {
	out, err := exec.Command("losetup", "--find", "--show", d.image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("losetup: %w: %s", err, out)
	}
	d.dev = strings.TrimSpace(string(out))
	if err := run("mount", "-t", "ext4", "-o", "commit=300", d.dev, d.mnt); err != nil {
		run("losetup", "-d", d.dev)
		d.dev = ""
		return err
	}
	return nil
}

func (d *loopDisk) detach() {
	if d.dev == "" {
		return
	}
	if err := run("umount", d.mnt); err != nil {
		run("umount", "-l", d.mnt)
	}
	run("losetup", "-d", d.dev)
	d.dev = ""
}

// PowerCut replaces the disk by what it would hold after a power cut now.
// Every process writing to it must be dead (SIGKILLed and waited for).
func (d *loopDisk) PowerCut() {
	d.tb.Helper()
	d.gen++
	next := filepath.Join(d.dir, fmt.Sprintf("disk.%d", d.gen))
	// The copy reads the image as the loop device left it: fsynced data
	// is in it, dirty pages of the mounted file system are not.
	if err := run("cp", "--sparse=always", d.image, next); err != nil {
		d.tb.Fatal(err)
	}
	d.detach() // unmounting flushes the dirty pages into the old image, which is dropped
	os.Remove(d.image)
	d.image = next
	if err := d.attach(); err != nil {
		d.tb.Fatal(err)
	}
	d.cuts++
}

// tmpfsDisk mounts a size-limited tmpfs at a new directory, or skips.
func tmpfsDisk(tb testing.TB, size string) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("disk-full test needs root to mount a small tmpfs")
	}
	dir := filepath.Join(tb.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := run("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir); err != nil {
		tb.Skipf("disk-full test: cannot mount tmpfs: %v", err)
	}
	tb.Cleanup(func() {
		if err := run("umount", dir); err != nil {
			run("umount", "-l", dir)
		}
	})
	return dir
}

// canPowerCut reports whether this machine can emulate power cuts.
func canPowerCut() bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return false
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "mount", "umount", "cp", "truncate"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false
		}
	}
	return true
}
