package plugins

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/store"
)

// Bindings tie a plugin's checkpoints to the incarnation of each input
// stream (docs/store.md, "Incarnations"): plugins.db bucket "bindings",
// plugin name ‖ 0 ‖ input → hex incarnation. A stream deleted and created
// again has a new incarnation: the plugin's checkpoints and keyed state of
// that input are dropped, its origins are forgotten in its output streams
// (their sequences derive from input sequences, which start again at 1), and
// its runners start over from the plugin's start position.
//
// A plugin also never runs with a stream it uses missing: it waits, with
// the reason in its status, and starts by itself once the stream exists. A
// stream deleted while the plugin runs is noticed at once (Stream.Done), not
// at the next append.
var bucketBindings = []byte("bindings")

// StatusWaiting: not paused, but a stream it reads or writes is missing
// (Info.Waiting says which); it starts when the stream exists again.
const StatusWaiting = "waiting"

// waitPoll is how often a waiting plugin looks for its streams.
const waitPoll = 250 * time.Millisecond

func bindingKey(plugin, input string) []byte { return []byte(plugin + "\x00" + input) }

// deleteBindings removes every binding of plugin.
func deleteBindings(tx *bolt.Tx, plugin string) error {
	b := tx.Bucket(bucketBindings)
	var keys [][]byte
	prefix := plugin + "\x00"
	c := b.Cursor()
	for k, _ := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, _ = c.Next() {
		keys = append(keys, []byte(string(k)))
	}
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// dropRunsOf deletes the checkpoints and state of one input of a plugin.
func dropRunsOf(tx *bolt.Tx, plugin, input string) error {
	pb := tx.Bucket(bucketRuns).Bucket([]byte(plugin))
	if pb == nil {
		return nil
	}
	var stale [][]byte
	pb.ForEach(func(k, _ []byte) error {
		if in, _, _ := strings.Cut(string(k), "/"); in == input {
			stale = append(stale, []byte(string(k)))
		}
		return nil
	})
	for _, k := range stale {
		if err := pb.DeleteBucket(k); err != nil {
			return err
		}
	}
	return nil
}

// streamsOf returns the streams def uses, each with its role, and the first
// missing one ("" if all exist).
func (m *Manager) streamsOf(def Definition) (ins, outs []*store.Stream, missing string) {
	for _, name := range def.Inputs {
		s, err := m.st.Stream(name)
		if err != nil {
			return nil, nil, fmt.Sprintf("input stream %q does not exist", name)
		}
		ins = append(ins, s)
	}
	seen := map[string]bool{}
	for _, name := range append(append([]string(nil), def.Outputs...), def.DeadLetter) {
		if name == "" || seen[name] {
			continue
		}
		seen[name] = true
		s, err := m.st.Stream(name)
		if err != nil {
			return nil, nil, fmt.Sprintf("output stream %q does not exist", name)
		}
		outs = append(outs, s)
	}
	return ins, outs, ""
}

// bind checks p's binding to input in and starts it over if the stream was
// recreated. Outputs forget the plugin's origins before the checkpoints are
// dropped, so a crash in between repeats the whole step at the next start.
func (m *Manager) bind(ctx context.Context, p *plugin, in *store.Stream, outs []*store.Stream) error {
	inc := in.Incarnation()
	old, err := loadBinding(m.db, p.name, in.Name())
	if err != nil {
		return err
	}
	if old == inc {
		return nil
	}
	recreated := old != ""
	origin := OriginHub(m.cfg.HubName, p.name, in.Name())
	for _, o := range outs {
		for _, h := range []string{origin, origin + "/timer"} {
			if !recreated && o.OriginIncarnation(h) == inc {
				continue
			}
			if _, err := o.SetOriginIncarnation(ctx, h, inc, recreated); err != nil {
				return fmt.Errorf("plugins: %s: output %q: %w", p.name, o.Name(), err)
			}
		}
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		if recreated {
			if err := dropRunsOf(tx, p.name, in.Name()); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketBindings).Put(bindingKey(p.name, in.Name()), []byte(inc))
	})
	if err != nil {
		return fmt.Errorf("plugins: %s: bind input %q: %w", p.name, in.Name(), err)
	}
	if recreated {
		p.logger.Warn("plugin input stream was deleted and created again: its checkpoints and state are dropped and the plugin starts over on it",
			"stream", in.Name(), "old_incarnation", old, "new_incarnation", inc)
		p.logs.add(LevelWarn, in.Name(), -1, fmt.Sprintf("input stream %q was deleted and created again (incarnation %s, was %s): starting over from the plugin's start position",
			in.Name(), inc, old))
	}
	return nil
}

// watch runs while p's runners run: when a stream p uses is closed (deleted,
// or the hub stopping), it restarts p, which then waits for the stream or,
// if it exists again, starts over on it.
func (m *Manager) watch(ctx context.Context, p *plugin, version int, streams []*store.Stream, roles []string) {
	done := make([]<-chan struct{}, len(streams))
	for i, s := range streams {
		done[i] = s.Done()
	}
	for {
		for i, ch := range done {
			select {
			case <-ch:
				if _, err := m.st.Stream(streams[i].Name()); errors.Is(err, store.ErrClosed) {
					return // the hub is stopping
				}
				reason := fmt.Sprintf("%s stream %q was deleted", roles[i], streams[i].Name())
				p.logger.Warn("plugin: "+reason+"; stopping its runners", "stream", streams[i].Name())
				p.logs.add(LevelWarn, streams[i].Name(), -1, reason)
				m.restartAsync(p, version, reason)
				return
			default:
			}
		}
		if !waitClosed(ctx, done) {
			return
		}
	}
}

// waitClosed blocks until one of chs is closed (true) or ctx ends (false).
func waitClosed(ctx context.Context, chs []<-chan struct{}) bool {
	stop := make(chan struct{})
	defer close(stop)
	fired := make(chan struct{}, 1)
	for _, ch := range chs {
		go func() {
			select {
			case <-ch:
				select {
				case fired <- struct{}{}:
				default:
				}
			case <-stop:
			}
		}()
	}
	select {
	case <-fired:
		return true
	case <-ctx.Done():
		return false
	}
}

// await runs while p waits for a missing stream: once every stream exists,
// it restarts p.
func (m *Manager) await(ctx context.Context, p *plugin, version int, def Definition) {
	t := time.NewTicker(waitPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, _, missing := m.streamsOf(def); missing == "" {
			p.logger.Info("plugin: its streams exist again; starting")
			m.restartAsync(p, version, "")
			return
		}
	}
}

// restartAsync stops p's runners and starts it again (from a new goroutine:
// stop waits for the caller), unless p was deleted, paused or upgraded
// meanwhile. waiting is shown in p's status until runners start.
func (m *Manager) restartAsync(p *plugin, version int, waiting string) {
	go func() {
		m.opMu.Lock()
		defer m.opMu.Unlock()
		if cur, err := m.lookup(p.name); err != nil || cur != p || p.definition().Version != version {
			return
		}
		m.stop(p)
		p.mu.Lock()
		p.waiting = waiting
		p.mu.Unlock()
		m.start(p)
	}()
}
