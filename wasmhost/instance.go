package wasmhost

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
)

// Host is what an instance's imports call. The plugin manager implements it
// per input shard. Methods run on the goroutine that made the call into the
// guest, never concurrently for one instance. Byte slices passed in alias
// guest memory and are valid only until the method returns: copy to keep.
// An error returned by a method stops the guest call, which then fails with
// that error, and breaks the instance.
type Host interface {
	// Emit receives one output record. input is the index in the current
	// batch of the record it derives from (0 in a timer call); index counts
	// the outputs of that input (of the whole call, in a timer call).
	Emit(stream []byte, rec OutputRecord, input, index int) error
	// StateGet returns the value of key; the slice need only stay valid
	// until the next Host call.
	StateGet(key []byte) (value []byte, ok bool, err error)
	StateSet(key, value []byte) error
	StateDelete(key []byte) error
	// StateNext returns the smallest key that starts with prefix and sorts
	// after after (every key with the prefix when after is empty).
	StateNext(prefix, after []byte) (key []byte, ok bool, err error)
	Log(level Level, msg []byte)
	// Now is the host's wall clock in Unix nanoseconds.
	Now() int64
	// Input names the input stream and shard the instance serves
	// (input_stream, input_shard imports).
	Input() (stream string, shard uint32)
}

type callKind int

const (
	callInit callKind = iota
	callAlloc
	callBatch
	callTimer
	callMerge
)

func (k callKind) String() string {
	return [...]string{ExportInit, ExportAlloc, ExportBatch, ExportTimer, ExportStateMerge}[k]
}

// Instance is one instantiation of a Module, with its own memory. It is not
// safe for concurrent use: the plugin manager runs one per input shard.
//
// After a failed call (other than a non-zero status) an instance is broken:
// the guest may have been stopped half-way, so its memory is not trusted.
// Close it and instantiate again; the durable state lives in the host.
type Instance struct {
	m      *Module
	host   Host
	mod    api.Module
	mem    api.Memory
	alloc  api.Function
	init   api.Function
	batch  api.Function
	timer  api.Function
	merge  api.Function
	stderr *tail
	stack  [2]uint64
	broken bool

	// Call state, reset by each call.
	kind     callKind
	count    int // records in the batch
	input    int // input index of the last emit
	outputs  int // outputs of that input (of the call, for timers)
	outBytes int
	abort    error  // set by an import that stopped the call
	errLog   string // the guest's last error-level log line in this call
	hdrs     []Header
	// eh_state_merge's key and its answer (state_set or state_delete of
	// that key during the call).
	mergeKey  []byte
	mergeVal  []byte
	mergeSet  bool
	mergeDone bool
}

type instanceKey struct{}

// Instantiate creates an instance and runs the module's WASI reactor
// initialiser (_initialize), under the call deadline. The caller then runs
// Init.
func (m *Module) Instantiate(ctx context.Context, host Host) (*Instance, error) {
	inst := &Instance{m: m, host: host, stderr: newTail(m.lim.StderrBytes), kind: callInit}
	// No FS, no args, no env; fake walltime/nanotime and a deterministic
	// random source are wazero's defaults and are kept on purpose.
	mcfg := wazero.NewModuleConfig().
		WithName("").
		WithStartFunctions(ExportReactor).
		WithStderr(inst.stderr)
	cctx, cancel := context.WithTimeout(ctx, m.lim.CallTimeout)
	defer cancel()
	mod, err := m.rt.InstantiateModule(context.WithValue(cctx, instanceKey{}, inst), m.compiled, mcfg)
	if err != nil {
		if inst.abort != nil {
			return nil, fmt.Errorf("wasmhost: instantiate: %w", inst.abort)
		}
		return nil, fmt.Errorf("wasmhost: instantiate: %w", inst.classify(ctx, cctx, err))
	}
	inst.mod = mod
	inst.mem = mod.Memory()
	inst.alloc = mod.ExportedFunction(ExportAlloc)
	inst.batch = mod.ExportedFunction(ExportBatch)
	if m.hasInit {
		inst.init = mod.ExportedFunction(ExportInit)
	}
	if m.hasTimer {
		inst.timer = mod.ExportedFunction(ExportTimer)
	}
	if m.hasMerge {
		inst.merge = mod.ExportedFunction(ExportStateMerge)
	}
	if inst.mem == nil || inst.alloc == nil || inst.batch == nil {
		mod.Close(context.Background())
		return nil, fmt.Errorf("wasmhost: instantiate: %w: exports vanished", ErrABI)
	}
	return inst, nil
}

// Init passes the encoded config (AppendConfig) to eh_init, if exported.
func (i *Instance) Init(ctx context.Context, config []byte) error {
	if i.init == nil {
		return nil
	}
	ptr, err := i.write(ctx, config)
	if err != nil {
		return err
	}
	i.stack[0], i.stack[1] = uint64(ptr), uint64(len(config))
	return i.status(i.call(ctx, callInit, i.init, i.stack[:]))
}

// OnBatch passes an encoded batch (AppendBatch) of count records to
// eh_on_batch. Emits arrive at the Host before it returns.
func (i *Instance) OnBatch(ctx context.Context, batch []byte, count int) error {
	ptr, err := i.write(ctx, batch)
	if err != nil {
		return err
	}
	i.count = count
	i.stack[0], i.stack[1] = uint64(ptr), uint64(len(batch))
	return i.status(i.call(ctx, callBatch, i.batch, i.stack[:]))
}

// OnTimer calls eh_on_timer(now). It is a no-op for modules without it.
func (i *Instance) OnTimer(ctx context.Context, now int64) error {
	if i.timer == nil {
		return nil
	}
	i.stack[0] = uint64(now)
	return i.status(i.call(ctx, callTimer, i.timer, i.stack[:]))
}

// StateMerge calls eh_state_merge with a keyed-state conflict: key holds
// a in one parent shard and b in another (docs/plugin-abi.md). It returns
// the value the guest chose with state_set (keep true), or keep false if
// it chose state_delete. A call that answers neither fails with ErrABI.
// The value is the instance's own copy, valid until the next call.
func (i *Instance) StateMerge(ctx context.Context, key, a, b []byte) (value []byte, keep bool, err error) {
	if i.merge == nil {
		return nil, false, fmt.Errorf("wasmhost: %w: module does not export %s", ErrABI, ExportStateMerge)
	}
	buf := AppendMergeRequest(nil, key, a, b)
	ptr, err := i.write(ctx, buf)
	if err != nil {
		return nil, false, err
	}
	i.mergeKey = append(i.mergeKey[:0], key...)
	i.mergeVal, i.mergeSet, i.mergeDone = i.mergeVal[:0], false, false
	i.stack[0], i.stack[1] = uint64(ptr), uint64(len(buf))
	if err := i.status(i.call(ctx, callMerge, i.merge, i.stack[:])); err != nil {
		return nil, false, err
	}
	if !i.mergeDone {
		return nil, false, fmt.Errorf("wasmhost: %s: %w: returned without state_set or state_delete of the key", ExportStateMerge, ErrABI)
	}
	return i.mergeVal, i.mergeSet, nil
}

// MemoryBytes is the current size of the instance's linear memory.
func (i *Instance) MemoryBytes() int {
	if i.mem == nil {
		return 0
	}
	return int(i.mem.Size())
}

// Broken reports whether an earlier call failed in a way that leaves the
// instance unusable.
func (i *Instance) Broken() bool { return i.broken }

// Close releases the instance. It is idempotent.
func (i *Instance) Close() error {
	i.broken = true
	if i.mod == nil {
		return nil
	}
	return i.mod.Close(context.Background())
}

func (i *Instance) status(rc int32, err error) error {
	switch {
	case err != nil:
		return err
	case rc != 0 && i.errLog != "":
		return fmt.Errorf("wasmhost: %s: %w: status %d: %s", i.kind, ErrGuest, rc, i.errLog)
	case rc != 0:
		return fmt.Errorf("wasmhost: %s: %w: status %d", i.kind, ErrGuest, rc)
	}
	return nil
}

// write copies data into guest memory at a buffer from eh_alloc.
func (i *Instance) write(ctx context.Context, data []byte) (uint32, error) {
	if len(data) == 0 {
		return 0, nil
	}
	i.stack[0] = uint64(len(data))
	rc, err := i.call(ctx, callAlloc, i.alloc, i.stack[:])
	if err != nil {
		return 0, err
	}
	ptr := uint32(rc)
	if ptr == 0 || !i.mem.Write(ptr, data) {
		i.broken = true
		return 0, fmt.Errorf("wasmhost: %s(%d): %w: returned %#x, outside memory of %d bytes", ExportAlloc, len(data), ErrABI, ptr, i.mem.Size())
	}
	return ptr, nil
}

func (i *Instance) call(ctx context.Context, kind callKind, fn api.Function, stack []uint64) (int32, error) {
	if i.broken {
		return 0, fmt.Errorf("wasmhost: %s: %w", kind, ErrBroken)
	}
	i.kind, i.input, i.outputs, i.outBytes, i.abort, i.errLog = kind, 0, 0, 0, nil, ""
	cctx, cancel := context.WithTimeout(ctx, i.m.lim.CallTimeout)
	defer cancel()
	err := fn.CallWithStack(context.WithValue(cctx, instanceKey{}, i), stack)
	if err != nil {
		i.broken = true
		return 0, fmt.Errorf("wasmhost: %s: %w", kind, i.classify(ctx, cctx, err))
	}
	return int32(uint32(stack[0])), nil
}

// classify maps a failed call to the package's sentinels. A cancelled parent
// context is the host shutting down, not the guest's fault, and is returned
// as the context's error.
func (i *Instance) classify(parent, call context.Context, err error) error {
	if i.abort != nil {
		return i.abort
	}
	if perr := parent.Err(); perr != nil {
		return perr
	}
	var exit *sys.ExitError
	isExit := errors.As(err, &exit)
	if call.Err() != nil || (isExit && exit.ExitCode() == sys.ExitCodeDeadlineExceeded) {
		return fmt.Errorf("%w (%s)", ErrTimeout, i.m.lim.CallTimeout)
	}
	msg := err.Error()
	if isExit {
		msg = fmt.Sprintf("exited with code %d", exit.ExitCode())
	} else if n := strings.IndexByte(msg, '\n'); n > 0 {
		msg = msg[:n] // drop wazero's stack trace: the stderr tail says more
	}
	if i.mem != nil {
		msg += fmt.Sprintf("; memory %d of %d pages", i.mem.Size()/65536, i.m.lim.MemoryPages)
	}
	if s := i.stderr.String(); s != "" {
		msg += "; stderr: " + s
	}
	return fmt.Errorf("%w: %s", ErrTrap, msg)
}

func instanceFrom(ctx context.Context) *Instance {
	i, _ := ctx.Value(instanceKey{}).(*Instance)
	if i == nil {
		panic("wasmhost: import called outside a host call")
	}
	return i
}

// stop ends the current guest call with err: wazero unwinds the panic and the
// call returns, where call() reports i.abort.
func (i *Instance) stop(err error) {
	i.abort = err
	panic(err)
}

func (i *Instance) read(mod api.Module, ptr, n uint32, what string) []byte {
	b, ok := mod.Memory().Read(ptr, n)
	if !ok {
		i.stop(fmt.Errorf("%w: %s at %#x+%d is outside memory", ErrABI, what, ptr, n))
	}
	return b
}

func (i *Instance) readKey(mod api.Module, ptr, n uint32) []byte {
	if n == 0 || n > MaxStateKey {
		i.stop(fmt.Errorf("%w: state key of %d bytes (1..%d)", ErrABI, n, MaxStateKey))
	}
	return i.read(mod, ptr, n, "state key")
}

// Host functions of ABI v1, with their types. checkABI verifies the guest's
// imports against hostFuncs, so a mistyped import fails at deploy.
var hostFuncs = map[string]sig{
	"emit":         {[]api.ValueType{i32, i32, i32, i32, i32}, nil},
	"state_get":    {[]api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}},
	"state_set":    {[]api.ValueType{i32, i32, i32, i32}, nil},
	"state_delete": {[]api.ValueType{i32, i32}, nil},
	"state_next":   {[]api.ValueType{i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}},
	"log":          {[]api.ValueType{i32, i32, i32}, nil},
	"now":          {nil, []api.ValueType{i64}},
	"input_shard":  {nil, []api.ValueType{i32}},
	"input_stream": {[]api.ValueType{i32, i32}, []api.ValueType{i32}},
}

var hostImpls = map[string]api.GoModuleFunc{
	"emit":         hostEmit,
	"state_get":    hostStateGet,
	"state_set":    hostStateSet,
	"state_delete": hostStateDelete,
	"state_next":   hostStateNext,
	"log":          hostLog,
	"now":          hostNow,
	"input_shard":  hostInputShard,
	"input_stream": hostInputStream,
}

func instantiateHostModule(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(ImportModule)
	for name, s := range hostFuncs {
		b.NewFunctionBuilder().WithGoModuleFunction(hostImpls[name], s.params, s.results).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// emit(stream_ptr, stream_len, rec_ptr, rec_len, input_index)
func hostEmit(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	switch i.kind {
	case callBatch, callTimer:
	default:
		i.stop(fmt.Errorf("%w: emit during %s", ErrABI, i.kind))
	}
	stream := i.read(mod, uint32(stack[0]), uint32(stack[1]), "emit stream name")
	raw := i.read(mod, uint32(stack[2]), uint32(stack[3]), "emit record")
	if i.kind == callBatch {
		idx := int(uint32(stack[4]))
		switch {
		case idx >= i.count:
			i.stop(fmt.Errorf("%w: emit for input %d of a batch of %d", ErrABI, idx, i.count))
		case idx < i.input:
			i.stop(fmt.Errorf("%w: emit for input %d after input %d: outputs must follow input order", ErrABI, idx, i.input))
		case idx > i.input:
			i.input, i.outputs = idx, 0
		}
		if i.outputs >= MaxOutputsPerInput {
			i.stop(fmt.Errorf("%w: more than %d outputs for one input record", ErrABI, MaxOutputsPerInput))
		}
	} else if i.outputs >= 1<<32-1 {
		i.stop(fmt.Errorf("%w: more than %d outputs in one timer call", ErrABI, 1<<32-1))
	}
	i.outBytes += len(raw)
	if i.outBytes > i.m.lim.MaxOutputBytes {
		i.stop(fmt.Errorf("%w: call emitted more than %d bytes", ErrABI, i.m.lim.MaxOutputBytes))
	}
	rec, err := DecodeOutput(raw, i.hdrs)
	if err != nil {
		i.stop(err)
	}
	i.hdrs = rec.Headers
	if err := i.host.Emit(stream, rec, i.input, i.outputs); err != nil {
		i.stop(err)
	}
	i.outputs++
}

// state_get(key_ptr, key_len, buf_ptr, buf_cap) -> len | -1
func hostStateGet(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	i.readable("state_get")
	key := i.readKey(mod, uint32(stack[0]), uint32(stack[1]))
	v, ok, err := i.host.StateGet(key)
	if err != nil {
		i.stop(err)
	}
	stack[0] = i.copyOut(mod, v, ok, uint32(stack[2]), uint32(stack[3]))
}

// copyOut implements the "length, copied only if it fits" convention of
// state_get and state_next.
func (i *Instance) copyOut(mod api.Module, v []byte, ok bool, ptr, capacity uint32) uint64 {
	if !ok {
		return uint64(uint32(0xFFFFFFFF)) // -1
	}
	if uint64(len(v)) <= uint64(capacity) && len(v) > 0 && !mod.Memory().Write(ptr, v) {
		i.stop(fmt.Errorf("%w: buffer at %#x+%d is outside memory", ErrABI, ptr, capacity))
	}
	return uint64(uint32(len(v)))
}

func (i *Instance) mutable(op string) {
	if i.kind != callBatch && i.kind != callTimer && i.kind != callMerge {
		i.stop(fmt.Errorf("%w: %s during %s", ErrABI, op, i.kind))
	}
}

// readable refuses state reads during eh_state_merge: the merged shard's
// state is being built, and the answer must depend on the key and the two
// values alone.
func (i *Instance) readable(op string) {
	if i.kind == callMerge {
		i.stop(fmt.Errorf("%w: %s during %s", ErrABI, op, i.kind))
	}
}

// mergeAnswer records a state_set (keep) or state_delete of the key during
// eh_state_merge; any other key stops the call.
func (i *Instance) mergeAnswer(key, val []byte, keep bool) {
	if !bytes.Equal(key, i.mergeKey) {
		i.stop(fmt.Errorf("%w: %s may only set or delete the key it merges", ErrABI, ExportStateMerge))
	}
	i.mergeVal, i.mergeSet, i.mergeDone = append(i.mergeVal[:0], val...), keep, true
}

// state_set(key_ptr, key_len, val_ptr, val_len)
func hostStateSet(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	i.mutable("state_set")
	key := i.readKey(mod, uint32(stack[0]), uint32(stack[1]))
	if n := uint32(stack[3]); n > MaxStateValue {
		i.stop(fmt.Errorf("%w: state value of %d bytes (max %d)", ErrABI, n, MaxStateValue))
	}
	val := i.read(mod, uint32(stack[2]), uint32(stack[3]), "state value")
	if i.kind == callMerge {
		i.mergeAnswer(key, val, true)
		return
	}
	if err := i.host.StateSet(key, val); err != nil {
		i.stop(err)
	}
}

// state_delete(key_ptr, key_len)
func hostStateDelete(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	i.mutable("state_delete")
	key := i.readKey(mod, uint32(stack[0]), uint32(stack[1]))
	if i.kind == callMerge {
		i.mergeAnswer(key, nil, false)
		return
	}
	if err := i.host.StateDelete(key); err != nil {
		i.stop(err)
	}
}

// state_next(prefix_ptr, prefix_len, after_ptr, after_len, buf_ptr, buf_cap) -> len | -1
func hostStateNext(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	i.readable("state_next")
	if uint32(stack[1]) > MaxStateKey || uint32(stack[3]) > MaxStateKey {
		i.stop(fmt.Errorf("%w: state_next prefix or cursor longer than %d bytes", ErrABI, MaxStateKey))
	}
	prefix := i.read(mod, uint32(stack[0]), uint32(stack[1]), "state_next prefix")
	after := i.read(mod, uint32(stack[2]), uint32(stack[3]), "state_next cursor")
	k, ok, err := i.host.StateNext(prefix, after)
	if err != nil {
		i.stop(err)
	}
	stack[0] = i.copyOut(mod, k, ok, uint32(stack[4]), uint32(stack[5]))
}

// log(level, ptr, len)
func hostLog(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	n := min(uint32(stack[2]), MaxLogLine)
	msg := i.read(mod, uint32(stack[1]), n, "log message")
	level := Level(int32(uint32(stack[0])))
	if level >= LevelError {
		i.errLog = string(msg)
	}
	i.host.Log(level, msg)
}

// now() -> i64
func hostNow(ctx context.Context, _ api.Module, stack []uint64) {
	stack[0] = uint64(instanceFrom(ctx).host.Now())
}

// input_shard() -> shard
func hostInputShard(ctx context.Context, _ api.Module, stack []uint64) {
	_, shard := instanceFrom(ctx).host.Input()
	stack[0] = uint64(shard)
}

// input_stream(buf_ptr, buf_cap) -> len: the stream's name, copied if it
// fits (the state_get convention).
func hostInputStream(ctx context.Context, mod api.Module, stack []uint64) {
	i := instanceFrom(ctx)
	stream, _ := i.host.Input()
	stack[0] = i.copyOut(mod, []byte(stream), true, uint32(stack[0]), uint32(stack[1]))
}

// tail keeps the first and the last n/2 bytes written to it: a Go guest
// prints the reason of a crash first ("panic: ...", "fatal error: out of
// memory") and then every goroutine's stack.
type tail struct {
	mu    sync.Mutex
	n     int
	head  []byte
	buf   []byte
	total int
}

func newTail(n int) *tail { return &tail{n: n} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	half := t.n / 2
	if half == 0 {
		return len(p), nil
	}
	t.total += len(p)
	rest := p
	if room := half - len(t.head); room > 0 {
		k := min(room, len(rest))
		t.head = append(t.head, rest[:k]...)
		rest = rest[k:]
	}
	t.buf = append(t.buf, rest...)
	if len(t.buf) > half {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-half:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.head)
	if skipped := t.total - len(t.head) - len(t.buf); skipped > 0 {
		s += fmt.Sprintf(" [... %d bytes ...] ", skipped)
	}
	return string(bytes.TrimSpace([]byte(s + string(t.buf))))
}
