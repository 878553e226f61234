package plugins

import "errors"

// Sentinel errors. The manager wraps them with the operation and the plugin.
var (
	// ErrNotFound: no plugin has that name.
	ErrNotFound = errors.New("plugin not found")
	// ErrInvalidDefinition: a definition that cannot be deployed.
	ErrInvalidDefinition = errors.New("invalid plugin definition")
	// ErrUndeclaredStream: the plugin emitted to a stream it did not
	// declare as an output. The call is stopped and the error policy applies.
	ErrUndeclaredStream = errors.New("emit to undeclared stream")
	// ErrClosed: the manager is closed.
	ErrClosed = errors.New("plugin manager closed")
	// ErrStateLimit: a call wrote more keyed state than max_state_delta, or
	// would take the plugin's state past its state_quota. The call is
	// stopped, its effects dropped, and the error policy applies.
	ErrStateLimit = errors.New("state limit exceeded")
	// ErrStateConflict: a merge of input shards found a state key held by
	// two parents with different values, and the module exports no
	// eh_state_merge (or it failed). The plugin is paused with the key in
	// its reason (docs/plugins.md, "Resharded inputs").
	ErrStateConflict = errors.New("state_conflict")
	// ErrCorrupt: plugins.db holds data the manager cannot read.
	ErrCorrupt = errors.New("corrupt plugin data")
)
