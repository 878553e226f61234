package groups

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestSlowWriteHoldsUpOnlyItsGroup: while one group's creation, rebinding
// or deletion is being written (a slow fsync, held here by a hook inside
// the transaction), calls for other groups that write nothing go on. The
// coordinator's global lock used to be held across those writes, so a
// join to another group and even describing one waited for the disk.
func TestSlowWriteHoldsUpOnlyItsGroup(t *testing.T) {
	for _, tc := range []struct {
		name  string
		op    string
		setup func(t *testing.T, c *Coordinator)
		slow  func(c *Coordinator) error // the operation whose write is slow
	}{
		{"create", "create", func(*testing.T, *Coordinator) {}, func(c *Coordinator) error {
			_, err := c.Join(JoinRequest{Group: "a", Stream: "events", Shards: 4, Member: "x", SessionTimeout: time.Minute})
			return err
		}},
		{"rebind", "rebind", func(t *testing.T, c *Coordinator) {
			if err := c.Reset(ResetRequest{Group: "a", Stream: "events", Shards: 4, Incarnation: "01"}); err != nil {
				t.Fatal(err)
			}
		}, func(c *Coordinator) error {
			return c.Reset(ResetRequest{Group: "a", Stream: "events", Shards: 4, Incarnation: "02"})
		}},
		{"delete", "delete", func(t *testing.T, c *Coordinator) {
			if err := c.Reset(ResetRequest{Group: "a", Stream: "events", Shards: 4}); err != nil {
				t.Fatal(err)
			}
		}, func(c *Coordinator) error { return c.Delete("a") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := openTest(t, filepath.Join(t.TempDir(), "groups.db"))
			tc.setup(t, c)
			// Group b: m1 holds its only shard, so another member's join
			// changes no lease and writes nothing.
			if _, err := c.Join(JoinRequest{Group: "b", Stream: "other", Shards: 1, Member: "m1", SessionTimeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
			entered, release := make(chan struct{}), make(chan struct{})
			var enterOnce, releaseOnce sync.Once
			unblock := func() { releaseOnce.Do(func() { close(release) }) }
			defer unblock()
			c.testHookWrite = func(op string) {
				if op == tc.op {
					enterOnce.Do(func() { close(entered) })
					<-release
				}
			}
			slowDone := make(chan error, 1)
			go func() { slowDone <- tc.slow(c) }()
			<-entered

			others := make(chan error, 1)
			go func() {
				if gi, err := c.Group("b"); err != nil || len(gi.Members) != 1 {
					others <- errors.Join(err, errors.New("describe b: want one member"))
					return
				}
				s, err := c.Join(JoinRequest{Group: "b", Stream: "other", Shards: 1, Member: "m2", SessionTimeout: time.Minute})
				if err == nil && len(s.Assignment().Leases) != 0 {
					err = errors.New("m2 got a lease")
				}
				others <- err
			}()
			select {
			case err := <-others:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(waitBound):
				t.Fatalf("calls for group b waited for group a's %s write", tc.op)
			}
			select {
			case err := <-slowDone:
				t.Fatalf("the slow %s finished before its write was released: %v", tc.op, err)
			default:
			}
			unblock()
			if err := <-slowDone; err != nil {
				t.Fatalf("%s: %v", tc.op, err)
			}
		})
	}
}
