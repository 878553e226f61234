package hub

import (
	"context"
	"errors"
	"net/http"

	"github.com/edgehub/edgehub/internal/groups"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
	"github.com/edgehub/edgehub/wasmhost"
)

// Errors of package hub. Store errors (store.ErrStreamNotFound, ...) pass
// through wrapped.
var (
	// ErrShardsFixed: a declared stream's shard count differs from the
	// existing stream's; shards cannot change in place.
	ErrShardsFixed = errors.New("the shard count of an existing stream cannot change (use `hub stream reshard`)")
	// ErrNameChanged: [hub] name differs from the name recorded in the data
	// directory (IdentityFile) when it was first used; see checkIdentity.
	ErrNameChanged = errors.New("the hub name differs from the name its data directory was created with")
)

// CodeStorageFull (507) is the admin API's code for a full disk: nothing of
// the request was stored (HTTP ingest; docs/admin-api.md, "Errors").
const CodeStorageFull = "storage_full"

// errorCode is one row of the error table: a sentinel error and what a
// client is told about an error that wraps it.
type errorCode struct {
	err    error
	name   string    // the sentinel's Go name (TestErrorTableComplete checks it against the source)
	wire   quic.Code // the wire protocol's code (docs/protocol.md, section 8)
	status int       // the admin API's HTTP status (docs/admin-api.md, "Errors")
	api    string    // the admin API's code
}

// errorCodes is the hub's one table from errors to what clients are told:
// toWire reads it for the QUIC data plane (produce, consume, groups,
// replication pulls), errorStatus for the admin API. Every exported sentinel
// of the packages the hub composes that can reach a client has a row
// (TestErrorTableComplete fails on a new one without); a sentinel that never
// reaches a client is listed, with the reason, in that test.
//
// Internal (quic.CodeInternal, 500 internal) is what an error without a row
// gets, so a row saying internal never hides a later one: each column takes
// the first matching row that says more. Order matters only for an error
// wrapping two sentinels: the groups' before the plugins', the store's, and
// last the transport's and the standard library's, whose wire codes
// quic.ToError decides (quic owns them, and serves them without the hub).
var errorCodes = []errorCode{
	// The group coordinator's (member sessions, OpGroup; the admin API's
	// groups routes).
	{groups.ErrStaleEpoch, "groups.ErrStaleEpoch", quic.CodeStaleEpoch, http.StatusInternalServerError, CodeInternal},
	{groups.ErrSessionExpired, "groups.ErrSessionExpired", quic.CodeSessionExpired, http.StatusInternalServerError, CodeInternal},
	{groups.ErrReplaced, "groups.ErrReplaced", quic.CodeSessionExpired, http.StatusInternalServerError, CodeInternal},
	{groups.ErrLeft, "groups.ErrLeft", quic.CodeSessionExpired, http.StatusInternalServerError, CodeInternal},
	{groups.ErrStreamRecreated, "groups.ErrStreamRecreated", quic.CodeSessionExpired, http.StatusInternalServerError, CodeInternal},
	{groups.ErrInvalid, "groups.ErrInvalid", quic.CodeInvalidArgument, http.StatusBadRequest, CodeInvalid},
	{groups.ErrStreamMismatch, "groups.ErrStreamMismatch", quic.CodeInvalidArgument, http.StatusConflict, CodeConflict},
	{groups.ErrShardsChanged, "groups.ErrShardsChanged", quic.CodeInvalidArgument, http.StatusConflict, CodeConflict},
	{groups.ErrTooManyMembers, "groups.ErrTooManyMembers", quic.CodeLimit, http.StatusInternalServerError, CodeInternal},
	{groups.ErrClosed, "groups.ErrClosed", quic.CodeUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
	{groups.ErrDeleted, "groups.ErrDeleted", quic.CodeUnavailable, http.StatusInternalServerError, CodeInternal},
	{groups.ErrNotFound, "groups.ErrNotFound", quic.CodeInternal, http.StatusNotFound, CodeNotFound},
	{groups.ErrActive, "groups.ErrActive", quic.CodeInternal, http.StatusConflict, CodeConflict},
	{groups.ErrCorrupt, "groups.ErrCorrupt", quic.CodeInternal, http.StatusInternalServerError, CodeCorrupt},

	// The plugin manager's and the sandbox's (the admin API's plugin
	// routes: a module the host refuses is the request's fault).
	{plugins.ErrNotFound, "plugins.ErrNotFound", quic.CodeInternal, http.StatusNotFound, CodeNotFound},
	{plugins.ErrInvalidDefinition, "plugins.ErrInvalidDefinition", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{plugins.ErrClosed, "plugins.ErrClosed", quic.CodeInternal, http.StatusServiceUnavailable, CodeUnavailable},
	{plugins.ErrCorrupt, "plugins.ErrCorrupt", quic.CodeInternal, http.StatusInternalServerError, CodeCorrupt},
	{wasmhost.ErrInvalidModule, "wasmhost.ErrInvalidModule", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{wasmhost.ErrABI, "wasmhost.ErrABI", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{wasmhost.ErrGuest, "wasmhost.ErrGuest", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{wasmhost.ErrTrap, "wasmhost.ErrTrap", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{wasmhost.ErrTimeout, "wasmhost.ErrTimeout", quic.CodeInternal, http.StatusBadRequest, CodeInvalid},
	{wasmhost.ErrClosed, "wasmhost.ErrClosed", quic.CodeInternal, http.StatusInternalServerError, CodeInternal},
	{wasmhost.ErrBroken, "wasmhost.ErrBroken", quic.CodeInternal, http.StatusInternalServerError, CodeInternal},

	// The hub's own.
	{ErrShardsFixed, "hub.ErrShardsFixed", quic.CodeInternal, http.StatusConflict, CodeConflict},

	// The store's (every data-plane operation; the admin API's stream
	// routes).
	{store.ErrStreamNotFound, "store.ErrStreamNotFound", quic.CodeNotFound, http.StatusNotFound, CodeNotFound},
	{store.ErrInvalidShard, "store.ErrInvalidShard", quic.CodeInvalidArgument, http.StatusBadRequest, CodeInvalid},
	{store.ErrInvalidName, "store.ErrInvalidName", quic.CodeInvalidArgument, http.StatusBadRequest, CodeInvalid},
	{store.ErrInvalidConfig, "store.ErrInvalidConfig", quic.CodeInvalidArgument, http.StatusBadRequest, CodeInvalid},
	{store.ErrRecordTooLarge, "store.ErrRecordTooLarge", quic.CodeRecordTooLarge, http.StatusRequestEntityTooLarge, CodeTooLarge},
	{store.ErrSequenceGap, "store.ErrSequenceGap", quic.CodeSequenceGap, http.StatusConflict, CodeConflict},
	{store.ErrDuplicateTooOld, "store.ErrDuplicateTooOld", quic.CodeDuplicateTooOld, http.StatusConflict, CodeConflict},
	{store.ErrSequenceConflict, "store.ErrSequenceConflict", quic.CodeSequenceConflict, http.StatusConflict, CodeConflict},
	{store.ErrClosed, "store.ErrClosed", quic.CodeUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
	{store.ErrCorrupt, "store.ErrCorrupt", quic.CodeCorrupt, http.StatusInternalServerError, CodeCorrupt},
	{store.ErrNoSpace, "store.ErrNoSpace", quic.CodeStorageFull, http.StatusInsufficientStorage, CodeStorageFull},
	{store.ErrStreamExists, "store.ErrStreamExists", quic.CodeInternal, http.StatusConflict, CodeExists},
	{store.ErrShardClosed, "store.ErrShardClosed", quic.CodeShardClosed, http.StatusConflict, CodeConflict},
	{store.ErrNotAdjacent, "store.ErrNotAdjacent", quic.CodeInvalidArgument, http.StatusBadRequest, CodeInvalid},
	{store.ErrTooManyShards, "store.ErrTooManyShards", quic.CodeLimit, http.StatusConflict, CodeConflict},
	{store.ErrReshardBusy, "store.ErrReshardBusy", quic.CodeUnavailable, http.StatusConflict, CodeConflict},

	// The transport's and the standard library's: quic.ToError gives their
	// wire codes.
	quicRow(quic.ErrMalformed, "quic.ErrMalformed", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrFrameTooLarge, "quic.ErrFrameTooLarge", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrUnexpectedFrame, "quic.ErrUnexpectedFrame", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrFrameTimeout, "quic.ErrFrameTimeout", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrOpenTimeout, "quic.ErrOpenTimeout", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrBudget, "quic.ErrBudget", http.StatusInternalServerError, CodeInternal),
	quicRow(quic.ErrClosed, "quic.ErrClosed", http.StatusInternalServerError, CodeInternal),
	quicRow(context.Canceled, "context.Canceled", http.StatusServiceUnavailable, CodeUnavailable),
}

// quicRow is a row whose wire code the wire protocol package decides.
func quicRow(err error, name string, status int, api string) errorCode {
	return errorCode{err: err, name: name, wire: quic.ToError(err).Code, status: status, api: api}
}

// toWire maps any non-nil error to the *quic.Error a client sees: an
// *quic.Error in its chain, else the code of errorCodes, else quic.ToError's
// (timeouts; internal for anything else).
func toWire(err error) *quic.Error {
	var e *quic.Error
	if errors.As(err, &e) {
		return e
	}
	for _, c := range errorCodes {
		if c.wire != quic.CodeInternal && errors.Is(err, c.err) {
			return &quic.Error{Code: c.wire, Message: err.Error()}
		}
	}
	return quic.ToError(err)
}

// wireErr is toWire as an error, nil for nil.
func wireErr(err error) error {
	if err == nil {
		return nil
	}
	return toWire(err)
}

// errorStatus maps an error to the admin API's HTTP status and code: an
// explicit *apiError, a request body over its limit, else errorCodes, else
// 500 internal.
func errorStatus(err error) (int, string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.code
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, CodeTooLarge
	}
	for _, c := range errorCodes {
		if c.api != CodeInternal && errors.Is(err, c.err) {
			return c.status, c.api
		}
	}
	return http.StatusInternalServerError, CodeInternal
}
