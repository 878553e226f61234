package wasmhost

import "errors"

// Sentinel errors. A failed call wraps exactly one of ErrTimeout, ErrTrap,
// ErrGuest or ErrABI (or the error a Host method returned), so the plugin
// manager can tell a hostile module from a bug in the hub.
var (
	// ErrClosed: the engine, module or instance was closed.
	ErrClosed = errors.New("closed")
	// ErrInvalidModule: the bytes are not a Wasm module this host can run
	// (decoding or validation failed, or its memory exceeds the limit).
	ErrInvalidModule = errors.New("invalid module")
	// ErrABI: the module does not follow ABI v1: a missing or mistyped
	// export, an unknown import, or malformed data passed to an import.
	ErrABI = errors.New("ABI violation")
	// ErrTimeout: a call ran past its deadline and the instance was stopped.
	ErrTimeout = errors.New("call deadline exceeded")
	// ErrTrap: the guest trapped, exited (a Go panic exits), or hit its
	// memory limit. The instance is unusable afterwards.
	ErrTrap = errors.New("guest trapped")
	// ErrGuest: the guest returned a non-zero status from a handler.
	ErrGuest = errors.New("guest reported failure")
	// ErrBroken: a call on an instance that failed before; create a new one.
	ErrBroken = errors.New("instance broken by an earlier failure")
)
