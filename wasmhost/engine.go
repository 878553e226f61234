package wasmhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Engine compiles modules. It owns the compilation cache, which every
// Module's runtime shares: each plugin gets its own wazero runtime (the
// memory cap is a runtime setting), but compiled machine code is reused
// across runtimes and, with Config.CacheDir, across restarts.
type Engine struct {
	cfg    Config
	logger *slog.Logger
	cache  wazero.CompilationCache

	mu     sync.Mutex
	closed bool
}

// New returns an Engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("wasmhost: cache dir %s: %w", cfg.CacheDir, err)
		}
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasmhost: cache dir %s: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	return &Engine{cfg: cfg, logger: cfg.Logger, cache: cache}, nil
}

// Close releases the compilation cache. Modules compiled by the engine must be
// closed first. Close is idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	return e.cache.Close(context.Background())
}

// Module is a compiled plugin module inside its own runtime. Its instances
// share the compiled code. It is safe for concurrent use.
type Module struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	lim      Limits
	hasInit  bool
	hasTimer bool
	hasMerge bool

	closeOnce sync.Once
	closeErr  error
}

// Compile validates wasm against ABI v1 and compiles it under lim.
func (e *Engine) Compile(ctx context.Context, wasm []byte, lim Limits) (*Module, error) {
	lim = lim.WithDefaults()
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("wasmhost: compile: %w", ErrClosed)
	}
	rcfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(e.cache).
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(lim.MemoryPages).
		WithCoreFeatures(api.CoreFeaturesV2)
	rt := wazero.NewRuntimeWithConfig(ctx, rcfg)
	m := &Module{rt: rt, lim: lim}
	if err := m.compile(ctx, wasm); err != nil {
		rt.Close(context.Background())
		return nil, err
	}
	return m, nil
}

func (m *Module) compile(ctx context.Context, wasm []byte) error {
	compiled, err := m.rt.CompileModule(ctx, wasm)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidModule, err)
	}
	m.compiled = compiled
	if err := m.checkABI(); err != nil {
		return err
	}
	// WASI is offered because language runtimes (Go, TinyGo, wasi-libc)
	// import it to start up. No directory is mounted and no socket exists,
	// and the module config below keeps clocks fake and randomness
	// deterministic: the edgehub_v1 time import is the only real clock.
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.rt); err != nil {
		return fmt.Errorf("wasmhost: instantiate wasi: %w", err)
	}
	if err := instantiateHostModule(ctx, m.rt); err != nil {
		return fmt.Errorf("wasmhost: instantiate %s: %w", ImportModule, err)
	}
	return nil
}

type sig struct{ params, results []api.ValueType }

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

// requiredExports and optionalExports are ABI v1's guest exports.
var (
	requiredExports = map[string]sig{
		ExportAlloc: {[]api.ValueType{i32}, []api.ValueType{i32}},
		ExportBatch: {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
	}
	optionalExports = map[string]sig{
		ExportInit:       {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
		ExportTimer:      {[]api.ValueType{i64}, []api.ValueType{i32}},
		ExportStateMerge: {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
		ExportReactor:    {nil, nil},
	}
)

func (m *Module) checkABI() error {
	var errs []error
	if _, ok := m.compiled.ExportedMemories()[ExportMemory]; !ok {
		errs = append(errs, fmt.Errorf("%w: no exported memory %q", ErrABI, ExportMemory))
	}
	fns := m.compiled.ExportedFunctions()
	check := func(name string, want sig, required bool) bool {
		f, ok := fns[name]
		if !ok {
			if required {
				errs = append(errs, fmt.Errorf("%w: missing export %q", ErrABI, name))
			}
			return false
		}
		if !sameTypes(f.ParamTypes(), want.params) || !sameTypes(f.ResultTypes(), want.results) {
			errs = append(errs, fmt.Errorf("%w: export %q has type %s, want %s", ErrABI, name,
				typeString(f.ParamTypes(), f.ResultTypes()), typeString(want.params, want.results)))
			return false
		}
		return true
	}
	for name, s := range requiredExports {
		check(name, s, true)
	}
	m.hasInit = check(ExportInit, optionalExports[ExportInit], false)
	m.hasTimer = check(ExportTimer, optionalExports[ExportTimer], false)
	m.hasMerge = check(ExportStateMerge, optionalExports[ExportStateMerge], false)
	check(ExportReactor, optionalExports[ExportReactor], false)
	for _, f := range m.compiled.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch mod {
		case importWASI:
		case ImportModule:
			want, ok := hostFuncs[name]
			if !ok {
				errs = append(errs, fmt.Errorf("%w: unknown import %s.%s (module built for a newer hub?)", ErrABI, mod, name))
				continue
			}
			if !sameTypes(f.ParamTypes(), want.params) || !sameTypes(f.ResultTypes(), want.results) {
				errs = append(errs, fmt.Errorf("%w: import %s.%s has type %s, want %s", ErrABI, mod, name,
					typeString(f.ParamTypes(), f.ResultTypes()), typeString(want.params, want.results)))
			}
		default:
			errs = append(errs, fmt.Errorf("%w: import from unknown module %q (%s)", ErrABI, mod, name))
		}
	}
	for _, mem := range m.compiled.ImportedMemories() {
		mod, name, _ := mem.Import()
		errs = append(errs, fmt.Errorf("%w: imported memory %s.%s: the guest must export its memory", ErrABI, mod, name))
	}
	return errors.Join(errs...)
}

func sameTypes(a, b []api.ValueType) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func typeString(params, results []api.ValueType) string {
	s := "("
	for i, p := range params {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(p)
	}
	s += ") -> ("
	for i, r := range results {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(r)
	}
	return s + ")"
}

// HasTimer reports whether the module exports eh_on_timer.
func (m *Module) HasTimer() bool { return m.hasTimer }

// HasStateMerge reports whether the module exports eh_state_merge.
func (m *Module) HasStateMerge() bool { return m.hasMerge }

// HasInit reports whether the module exports eh_init.
func (m *Module) HasInit() bool { return m.hasInit }

// Limits returns the module's limits.
func (m *Module) Limits() Limits { return m.lim }

// Close closes the module's runtime and every instance of it; calls in flight
// fail. Close is idempotent.
func (m *Module) Close() error {
	m.closeOnce.Do(func() {
		m.closeErr = m.rt.Close(context.Background())
	})
	return m.closeErr
}
