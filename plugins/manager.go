package plugins

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgehub/edgehub/internal/tokenbucket"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// Manager deploys plugins and runs them: one runner per plugin and input
// shard. It is safe for concurrent use.
//
// Lock order: opMu (lifecycle operations, one at a time) → mu (the plugin
// table) → plugin.mu. Runners never take opMu: a runner that must pause its
// plugin asks for it from a new goroutine and returns.
type Manager struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	db     *bolt.DB
	engine *wasmhost.Engine
	st     *store.Store

	slots      chan struct{} // guest-execution slots (Config.MaxConcurrentCalls)
	quarantine chan struct{} // one slot shared by runners whose calls fail
	commits    chan *commitReq
	commitQuit chan struct{}
	commitDone chan struct{}

	opMu    sync.Mutex
	mu      sync.RWMutex
	plugins map[string]*plugin
	runCtx  context.Context // set while Run runs
	closed  bool

	// Drain: drainCh closes once; draining (under opMu) stops starts;
	// runWG counts running runners (added under opMu or startMu, before
	// draining). startMu lets the lineage loops start runners without
	// opMu (which stop holds while it waits for them).
	drainOnce sync.Once
	drainCh   chan struct{}
	draining  bool // written under opMu and startMu
	startMu   sync.Mutex
	runWG     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// plugin is one deployed plugin and its runners.
type plugin struct {
	name   string
	logs   *logRing
	logger *slog.Logger

	mu      sync.Mutex
	def     Definition
	mod     *wasmhost.Module
	cancel  context.CancelFunc // stops the runners; nil when stopped
	runners []*runner
	waiting string // why it waits for a stream (binding.go); "" when not
	wg      sync.WaitGroup
	lim     *tokenbucket.Bucket // guest log lines forwarded to the hub's logger
	// stateUsed is the committed keyed state of the running runners (keys
	// and values), checked against Definition.StateQuota.
	stateUsed atomic.Int64
	// lineageWaiting counts, per input stream, the shards not finished
	// whose parents are not all finished for the plugin (under mu).
	lineageWaiting map[string]int
}

func (p *plugin) definition() Definition {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.def.clone()
}

// New opens the plugin database and loads every definition, compiling the
// modules (from the compilation cache when possible). Runners start with Run.
func New(cfg Config) (*Manager, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	db, err := openDB(cfg.Dir, 5*time.Second)
	if err != nil {
		return nil, err
	}
	engine, err := wasmhost.New(wasmhost.Config{CacheDir: filepath.Join(cfg.Dir, "wasmcache"), Logger: cfg.Logger})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("plugins: %w", err)
	}
	m := &Manager{
		cfg: cfg, logger: cfg.Logger, now: cfg.Now, db: db, engine: engine, st: cfg.Store,
		commits: make(chan *commitReq, 256), commitQuit: make(chan struct{}), commitDone: make(chan struct{}),
		drainCh:    make(chan struct{}),
		plugins:    map[string]*plugin{},
		slots:      make(chan struct{}, cfg.MaxConcurrentCalls),
		quarantine: make(chan struct{}, 1),
	}
	go m.committer()
	if err := m.load(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

func (m *Manager) load() error {
	type stored struct {
		def  Definition
		wasm []byte
	}
	var defs []stored
	err := m.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDefs).ForEach(func(k, v []byte) error {
			var d Definition
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("%w: definition %q: %w", ErrCorrupt, k, err)
			}
			wasm := tx.Bucket(bucketModules).Get([]byte(d.SHA256))
			if wasm == nil {
				return fmt.Errorf("%w: module %s of plugin %q is missing", ErrCorrupt, d.SHA256, d.Name)
			}
			if sum := sha256.Sum256(wasm); hex.EncodeToString(sum[:]) != d.SHA256 {
				return fmt.Errorf("%w: module of plugin %q does not match its SHA-256", ErrCorrupt, d.Name)
			}
			// Settings added since the definition was stored take
			// their defaults.
			defs = append(defs, stored{d.WithDefaults(), slices.Clone(wasm)})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("plugins: load: %w", err)
	}
	for _, s := range defs {
		t0 := time.Now()
		mod, err := m.engine.Compile(context.Background(), s.wasm, s.def.limits())
		if err != nil {
			// A module that compiled at deploy should compile now; if it
			// does not (a wazero upgrade?), keep the hub up with the
			// plugin paused and say why.
			m.logger.Error("plugin module no longer compiles; pausing it", "plugin", s.def.Name, "err", err)
			s.def.Paused, s.def.PauseReason = true, "compile at load: "+err.Error()
		}
		p := m.newPlugin(s.def, mod)
		m.plugins[s.def.Name] = p
		m.logger.Info("plugin loaded", "plugin", s.def.Name, "version", s.def.Version, "sha256", s.def.SHA256[:12],
			"paused", s.def.Paused, "compile", time.Since(t0).Round(time.Millisecond))
	}
	return nil
}

func (m *Manager) newPlugin(def Definition, mod *wasmhost.Module) *plugin {
	rate := float64(m.cfg.GuestLogRate)
	return &plugin{name: def.Name, def: def, mod: mod, logs: newLogRing(m.cfg.LogLines),
		logger: m.logger.With("plugin", def.Name), lim: tokenbucket.New(rate, rate)}
}

// Run starts the runners of every plugin that is not paused and blocks until
// ctx ends; then it stops them and returns nil. Plugins deployed or resumed
// while Run runs start at once.
func (m *Manager) Run(ctx context.Context) error {
	m.opMu.Lock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		m.opMu.Unlock()
		return ErrClosed
	}
	m.runCtx = ctx
	ps := make([]*plugin, 0, len(m.plugins))
	for _, p := range m.plugins {
		ps = append(ps, p)
	}
	m.mu.Unlock()
	for _, p := range ps {
		m.start(p)
	}
	m.opMu.Unlock()

	<-ctx.Done()

	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	m.runCtx = nil
	ps = ps[:0]
	for _, p := range m.plugins {
		ps = append(ps, p)
	}
	m.mu.Unlock()
	for _, p := range ps {
		m.stop(p)
	}
	return nil
}

// Drain is the plugins' part of a graceful shutdown: each runner finishes
// the call it is in and commits it (outputs and checkpoint), then stops;
// no batch is begun after. It returns when every runner has stopped or
// ctx ends; Run's context ending stops the rest (watchers, waits). Calls
// cut off at ctx's end are redone after the restart, as after a crash.
func (m *Manager) Drain(ctx context.Context) error {
	m.opMu.Lock()
	m.startMu.Lock()
	m.draining = true
	m.startMu.Unlock()
	m.drainOnce.Do(func() { close(m.drainCh) })
	m.opMu.Unlock()
	done := make(chan struct{})
	go func() {
		m.runWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("plugins: runners still in a call: %w", context.Cause(ctx))
	}
}

// start launches p's runners under the run context (caller holds opMu).
// A plugin whose streams are not all there waits for them instead
// (binding.go); inputs created again since the last start are rebound.
func (m *Manager) start(p *plugin) {
	if m.draining {
		return // shutting down: nothing starts
	}
	m.mu.RLock()
	parent := m.runCtx
	m.mu.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if parent == nil || p.cancel != nil || p.def.Paused || p.mod == nil {
		return
	}
	ctx, cancel := context.WithCancel(parent)
	p.cancel = cancel
	p.runners = p.runners[:0]
	def := p.def
	ins, outs, missing := m.streamsOf(def)
	for _, in := range ins {
		if missing != "" {
			break
		}
		if err := m.bind(ctx, p, in, outs); err != nil {
			missing = "binding input " + in.Name() + ": " + err.Error()
		}
	}
	if missing != "" {
		if p.waiting == "" {
			// Keep the reason that stopped it ("... was deleted"), if any.
			p.logger.Warn("plugin waits: "+missing, "version", def.Version)
			p.logs.add(LevelWarn, "", -1, "waiting: "+missing)
			p.waiting = missing
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			m.await(ctx, p, def.Version, def)
		}()
		return
	}
	p.waiting = ""
	var watched []*store.Stream
	var roles []string
	for _, s := range ins {
		watched, roles = append(watched, s), append(roles, "input")
		// The runners the layout allows now start here, as they always
		// have; the lineage loop starts the others as parents finish.
		l := s.Layout()
		var runnable []uint32
		if err := m.db.View(func(tx *bolt.Tx) error {
			runs, err := loadRuns(tx, def.Name, s.Name(), l)
			if err != nil {
				return err
			}
			runnable = planLineage(l, runs, nil, firstsOf(s), false).runnable
			return nil
		}); err != nil {
			p.logger.Error("plugin: reading its runs failed", "input", s.Name(), "err", err)
		}
		lin := &lineage{m: m, p: p, def: def, mod: p.mod, in: s, inName: s.Name(), started: map[uint32]bool{}, exited: make(chan uint32, 16)}
		for _, id := range runnable {
			lin.startRunner(ctx, id, false)
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			lin.run(ctx)
		}()
	}
	for _, s := range outs {
		watched, roles = append(watched, s), append(roles, "output")
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		m.watch(ctx, p, def.Version, watched, roles)
	}()
	p.logger.Info("plugin started", "runners", len(p.runners), "version", p.def.Version)
}

// stop cancels p's runners and waits for them (caller holds opMu).
func (m *Manager) stop(p *plugin) {
	p.mu.Lock()
	cancel := p.cancel
	p.cancel = nil
	p.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	p.wg.Wait()
}

func (m *Manager) isClosed() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.closed
}

func (m *Manager) lookup(name string) (*plugin, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	p, ok := m.plugins[name]
	if !ok {
		return nil, fmt.Errorf("plugins: %q: %w", name, ErrNotFound)
	}
	return p, nil
}

// Deploy installs a plugin, or upgrades it in place when one with that name
// exists: the new module and definition replace the old ones while every
// checkpoint and all keyed state are kept. Input streams must exist; output
// and dead-letter streams are created (with the first input's shard count)
// when missing. The module is compiled and its eh_init run with the config
// before anything is stored, so a bad module or config is refused whole.
func (m *Manager) Deploy(ctx context.Context, def Definition, wasm []byte) (Info, error) {
	def = def.clone().WithDefaults()
	if err := def.Validate(); err != nil {
		return Info{}, fmt.Errorf("plugins: deploy %q: %w", def.Name, err)
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	if m.isClosed() {
		return Info{}, ErrClosed
	}
	var shards int
	for i, in := range def.Inputs {
		s, err := m.st.Stream(in)
		if err != nil {
			return Info{}, fmt.Errorf("plugins: deploy %q: input: %w", def.Name, err)
		}
		if i == 0 {
			shards = len(s.Layout().Open())
		}
	}
	// The module is compiled and initialised before any output stream is
	// created: a refused deploy leaves nothing behind.
	mod, err := m.engine.Compile(ctx, wasm, def.limits())
	if err != nil {
		return Info{}, fmt.Errorf("plugins: deploy %q: %w", def.Name, err)
	}
	if err := checkInit(ctx, mod, def); err != nil {
		mod.Close()
		return Info{}, fmt.Errorf("plugins: deploy %q: %w", def.Name, err)
	}
	for _, out := range append(slices.Clone(def.Outputs), def.DeadLetter) {
		if out == "" {
			continue
		}
		if _, err := m.st.Stream(out); errors.Is(err, store.ErrStreamNotFound) {
			if _, err := m.st.CreateStream(ctx, store.StreamConfig{Name: out, Shards: shards}); err != nil {
				mod.Close()
				return Info{}, fmt.Errorf("plugins: deploy %q: create output: %w", def.Name, err)
			}
			m.logger.Info("created plugin output stream", "plugin", def.Name, "stream", out, "shards", shards)
		} else if err != nil {
			mod.Close()
			return Info{}, fmt.Errorf("plugins: deploy %q: output: %w", def.Name, err)
		}
	}
	sum := sha256.Sum256(wasm)
	now := m.now().UTC()
	def.SHA256, def.ModuleSize, def.Updated = hex.EncodeToString(sum[:]), len(wasm), now
	def.Paused, def.PauseReason = false, ""

	m.mu.RLock()
	old := m.plugins[def.Name]
	m.mu.RUnlock()
	def.Version, def.Created = 1, now
	if old != nil {
		od := old.definition()
		def.Version, def.Created = od.Version+1, od.Created
		m.stop(old)
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketModules).Put([]byte(def.SHA256), wasm); err != nil {
			return err
		}
		if err := putDefinition(tx, def); err != nil {
			return err
		}
		if err := dropRunsExcept(tx, def.Name, def.Inputs); err != nil {
			return err
		}
		if err := m.pinStarts(tx, def); err != nil {
			return err
		}
		if err := clearQuarantines(tx, def.Name); err != nil {
			return err
		}
		return gcModules(tx)
	})
	if err != nil {
		mod.Close()
		if old != nil {
			m.start(old) // keep the old version running
		}
		return Info{}, fmt.Errorf("plugins: deploy %q: store: %w", def.Name, err)
	}
	p := old
	if p == nil {
		p = m.newPlugin(def, mod)
		m.mu.Lock()
		m.plugins[def.Name] = p
		m.mu.Unlock()
	} else {
		p.mu.Lock()
		oldMod := p.mod
		p.def, p.mod = def, mod
		p.mu.Unlock()
		if oldMod != nil {
			oldMod.Close()
		}
	}
	verb := "deployed"
	if def.Version > 1 {
		verb = "upgraded"
	}
	p.logs.add(LevelInfo, "", -1, fmt.Sprintf("%s version %d (sha256 %s, %d bytes)", verb, def.Version, def.SHA256[:12], len(wasm)))
	p.logger.Info("plugin "+verb, "version", def.Version, "sha256", def.SHA256[:12], "inputs", def.Inputs, "outputs", def.Outputs)
	m.start(p)
	return m.info(p), nil
}

// pinStarts writes the first checkpoint of every input shard the plugin
// has none for and may start on, so that "latest" means the end of the
// input when Deploy returns: a record produced after that is processed
// even if it is stored before the runner first runs. Across a reshard: a
// shard with parents gets its run from the handoff (lineage.go), with the
// parents' state; only a plugin new to the input (no run of it at all)
// pins every shard, for "latest" (closed shards as done at their end).
func (m *Manager) pinStarts(tx *bolt.Tx, def Definition) error {
	for _, in := range def.Inputs {
		s, err := m.st.Stream(in)
		if err != nil {
			return err
		}
		l := s.Layout()
		runs, err := loadRuns(tx, def.Name, in, l)
		if err != nil {
			return err
		}
		fresh := len(runs) == 0
		for _, sh := range l.Shards {
			if runs[sh.ID].exists || sh.State == store.ShardRetired {
				continue
			}
			done := false
			var cp checkpoint
			switch {
			case len(sh.Parents) == 0 && sh.State == store.ShardOpen, len(sh.Parents) == 0 && def.Start == StartEarliest:
				if cp, err = startCheckpoint(s, int(sh.ID), def.Start); err != nil {
					return err
				}
			case fresh && def.Start == StartLatest && sh.State == store.ShardOpen:
				if cp, err = startCheckpoint(s, int(sh.ID), def.Start); err != nil {
					return err
				}
			case fresh && def.Start == StartLatest:
				cp, done = checkpoint{Next: sh.End + 1}, true
			default:
				continue // the handoff creates it
			}
			rb, err := runBucket(tx, def.Name, in, int(sh.ID), true)
			if err != nil {
				return err
			}
			if err := rb.Put(keyCheckpoint, cp.encode()); err != nil {
				return err
			}
			if done {
				if err := rb.Put(keyDone, []byte{1}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// dropRunsExcept deletes the checkpoints and state of inputs a plugin no
// longer reads.
func dropRunsExcept(tx *bolt.Tx, name string, inputs []string) error {
	pb := tx.Bucket(bucketRuns).Bucket([]byte(name))
	if pb == nil {
		return nil
	}
	var stale [][]byte
	pb.ForEach(func(k, _ []byte) error {
		in, _, _ := strings.Cut(string(k), "/")
		if !slices.Contains(inputs, in) {
			stale = append(stale, slices.Clone(k))
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

// checkInit instantiates the module once and runs eh_init with the config,
// so deploy reports a config the plugin rejects.
func checkInit(ctx context.Context, mod *wasmhost.Module, def Definition) error {
	h := &initHost{input: def.Inputs[0]}
	inst, err := mod.Instantiate(ctx, h)
	if err != nil {
		return err
	}
	defer inst.Close()
	return inst.Init(ctx, wasmhost.AppendConfig(nil, def.guestConfig()))
}

// initHost serves eh_init at deploy: no state exists yet for a new plugin.
type initHost struct{ input string }

func (initHost) Emit([]byte, wasmhost.OutputRecord, int, int) error { return nil }
func (initHost) StateGet([]byte) ([]byte, bool, error)              { return nil, false, nil }
func (initHost) StateSet(_, _ []byte) error                         { return nil }
func (initHost) StateDelete([]byte) error                           { return nil }
func (initHost) StateNext(_, _ []byte) ([]byte, bool, error)        { return nil, false, nil }
func (initHost) Log(wasmhost.Level, []byte)                         {}
func (initHost) Now() int64                                         { return time.Now().UnixNano() }

// Input: the deploy-time eh_init serves no shard; it is told the first
// input and shard 0 (docs/plugin-abi.md).
func (h initHost) Input() (string, uint32) { return h.input, 0 }

// Delete stops a plugin and removes its definition, module, checkpoints and
// state. Its output streams are kept.
func (m *Manager) Delete(ctx context.Context, name string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	p, err := m.lookup(name)
	if err != nil {
		return err
	}
	m.stop(p)
	err = m.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketDefs).Delete([]byte(name)); err != nil {
			return err
		}
		if tx.Bucket(bucketRuns).Bucket([]byte(name)) != nil {
			if err := tx.Bucket(bucketRuns).DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := deleteBindings(tx, name); err != nil {
			return err
		}
		return gcModules(tx)
	})
	if err != nil {
		m.start(p)
		return fmt.Errorf("plugins: delete %q: %w", name, err)
	}
	m.mu.Lock()
	delete(m.plugins, name)
	m.mu.Unlock()
	p.mu.Lock()
	if p.mod != nil {
		p.mod.Close()
	}
	p.mu.Unlock()
	m.logger.Info("plugin deleted", "plugin", name)
	return nil
}

// Pause stops a plugin's runners and records the pause (with reason) durably.
func (m *Manager) Pause(ctx context.Context, name, reason string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.setPaused(name, true, reason)
}

// Resume clears a pause and starts the runners; they continue from their
// checkpoints.
func (m *Manager) Resume(ctx context.Context, name string) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.setPaused(name, false, "")
}

func (m *Manager) setPaused(name string, paused bool, reason string) error {
	p, err := m.lookup(name)
	if err != nil {
		return err
	}
	if paused {
		m.stop(p)
	}
	p.mu.Lock()
	def := p.def.clone()
	p.mu.Unlock()
	if !paused && p.mod == nil {
		return fmt.Errorf("plugins: resume %q: module does not compile; deploy a new version", name)
	}
	def.Paused, def.PauseReason = paused, reason
	if err := m.db.Update(func(tx *bolt.Tx) error { return putDefinition(tx, def) }); err != nil {
		return fmt.Errorf("plugins: pause %q: %w", name, err)
	}
	p.mu.Lock()
	p.def = def
	p.mu.Unlock()
	if paused {
		p.logs.add(LevelWarn, "", -1, "paused: "+reason)
		p.logger.Warn("plugin paused", "reason", reason)
	} else {
		p.logs.add(LevelInfo, "", -1, "resumed")
		p.logger.Info("plugin resumed")
		m.start(p)
	}
	return nil
}

// pauseAsync is how a runner pauses its own plugin: from another goroutine,
// since Pause waits for the runner to return. version is the definition the
// runner ran: a pause requested by an old version's runner does not pause
// the upgrade that replaced it meanwhile.
func (m *Manager) pauseAsync(p *plugin, version int, reason string) {
	go func() {
		m.opMu.Lock()
		defer m.opMu.Unlock()
		if cur, err := m.lookup(p.name); err != nil || cur != p || p.definition().Version != version {
			return
		}
		if err := m.setPaused(p.name, true, reason); err != nil && !errors.Is(err, ErrClosed) {
			p.logger.Error("pausing plugin failed", "err", err)
		}
	}()
}

// Module returns a plugin's module bytes.
func (m *Manager) Module(name string) ([]byte, error) {
	p, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	sha := p.definition().SHA256
	var wasm []byte
	err = m.db.View(func(tx *bolt.Tx) error {
		wasm = slices.Clone(tx.Bucket(bucketModules).Get([]byte(sha)))
		return nil
	})
	if err == nil && wasm == nil {
		err = fmt.Errorf("%w: module %s missing", ErrCorrupt, sha)
	}
	return wasm, err
}

// Logs returns up to n of a plugin's most recent log lines, oldest first.
func (m *Manager) Logs(name string, n int) ([]LogLine, error) {
	p, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	return p.logs.last(n), nil
}

// Close stops every runner and releases modules, the engine and plugins.db.
// It is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		m.opMu.Lock()
		defer m.opMu.Unlock()
		m.mu.Lock()
		m.closed = true
		ps := make([]*plugin, 0, len(m.plugins))
		for _, p := range m.plugins {
			ps = append(ps, p)
		}
		m.mu.Unlock()
		for _, p := range ps {
			m.stop(p)
			if p.mod != nil {
				p.mod.Close()
			}
		}
		close(m.commitQuit)
		<-m.commitDone
		m.closeErr = errors.Join(m.engine.Close(), m.db.Close())
	})
	return m.closeErr
}
