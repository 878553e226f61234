package hub

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgehub/edgehub/internal/groups"
	"github.com/edgehub/edgehub/plugins"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// notForClients lists the exported sentinels that never reach a client (a
// producer, consumer, group member, pulling peer or admin API caller), so
// they need no row in errorCodes. Anything else without a row fails
// TestErrorTableComplete.
var notForClients = map[string]string{
	"hub.ErrNameChanged":          "only at startup: the hub refuses to start",
	"store.ErrLocked":             "only at startup: a second process on the data directory refuses to start",
	"store.ErrNotDamaged":         "only from Replace, which the replicator's repair calls on the pulling side",
	"store.ErrIncomplete":         "only from Replace, which the replicator's repair calls on the pulling side",
	"plugins.ErrUndeclaredStream": "told to the guest through the ABI, not to a client",
	"plugins.ErrStateLimit":       "told to the guest through the ABI, not to a client",
	"plugins.ErrStateConflict":    "a handoff's reason to pause the plugin, shown as its pause reason, never returned to a caller",
	"record.ErrCorrupt":           "mapped where a batch is decoded (quic.Errorf at the call site); damage in stored data reaches clients as store.ErrCorrupt",
	"record.ErrEmpty":             "mapped where a batch is decoded (quic.Errorf at the call site)",
	"replicate.ErrBadPolicy":      "configuration: a stream's policy is checked when it is declared",
	"replicate.ErrInvalidConfig":  "configuration, at startup",
	"replicate.ErrTrimmed":        "the pulling side's own state; the serving side refuses with explicit *quic.Error codes (internal/replicate/serve.go)",
	"replicate.ErrClosed":         "the replicator's own shutdown; pulls it serves end with explicit *quic.Error codes",
	"gossip.ErrInvalidConfig":     "configuration, at startup",
	"gossip.ErrBadKeyFile":        "configuration, at startup",
	"gossip.ErrUnencrypted":       "configuration, at startup",
	"gossip.ErrBadMessage":        "a peer's malformed gossip is dropped and counted, never answered",
	"gossip.ErrMetaTooLarge":      "the hub's own metadata, at startup or when streams change (logged)",
	"gossip.ErrClosed":            "membership's own shutdown",
}

// sentinelPackages are the packages whose errors can reach the hub's
// clients, relative to hub/.
var sentinelPackages = []string{".", "../store", "../plugins", "../wasmhost", "../quic",
	"../internal/groups", "../internal/names", "../internal/record", "../internal/replicate", "../gossip"}

// declaredAliases are sentinels declared through a function (so that go doc
// does not show an internal package), with the sentinel each returns.
var declaredAliases = map[string]string{
	"store.ErrInvalidName": "names.ErrInvalid", // store.invalidName
}

// sentinelDecl is an exported package-level Err* variable as written: its
// errors.New text, or the sentinel it aliases ("names.ErrInvalid").
type sentinelDecl struct {
	text, alias string
}

// parseSentinels reads the exported Err* variables of the packages in dirs.
func parseSentinels(t *testing.T, dirs []string) map[string]sentinelDecl {
	t.Helper()
	out := map[string]sentinelDecl{}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range file.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if !n.IsExported() || !strings.HasPrefix(n.Name, "Err") || i >= len(vs.Values) {
							continue
						}
						var decl sentinelDecl
						switch v := vs.Values[i].(type) {
						case *ast.CallExpr:
							if len(v.Args) == 1 {
								if lit, ok := v.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
									decl.text, _ = strconv.Unquote(lit.Value)
								}
							}
						case *ast.SelectorExpr:
							if x, ok := v.X.(*ast.Ident); ok {
								decl.alias = x.Name + "." + v.Sel.Name
							}
						}
						name := file.Name.Name + "." + n.Name
						if a, ok := declaredAliases[name]; ok && decl == (sentinelDecl{}) {
							decl.alias = a
						}
						out[name] = decl
					}
				}
			}
		}
	}
	return out
}

// TestErrorTableComplete checks errorCodes against the source: every
// exported sentinel of the packages the hub composes has a row or is listed
// in notForClients, every row names its sentinel correctly, and every row's
// codes exist.
func TestErrorTableComplete(t *testing.T) {
	decls := parseSentinels(t, sentinelPackages)
	if len(decls) < 40 {
		t.Fatalf("found only %d sentinels in %v: is the parser missing them?", len(decls), sentinelPackages)
	}
	for _, p := range errorTableProblems(decls) {
		t.Error(p)
	}
}

// TestErrorTableCompleteFails checks that the completeness test fails on a
// new sentinel without a row and on a row whose name is not its error's.
func TestErrorTableCompleteFails(t *testing.T) {
	dir := t.TempDir()
	src := "package store\n\nimport \"errors\"\n\nvar (\n\tErrBrandNew = errors.New(\"new\")\n\terrHidden = errors.New(\"unexported\")\n)\n"
	if err := os.WriteFile(filepath.Join(dir, "errors.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	added := parseSentinels(t, []string{dir})
	if len(added) != 1 || added["store.ErrBrandNew"].text != "new" {
		t.Fatalf("parsed %v, want only store.ErrBrandNew", added)
	}
	decls := parseSentinels(t, sentinelPackages)
	decls["store.ErrBrandNew"] = added["store.ErrBrandNew"]
	decls["store.ErrClosed"] = sentinelDecl{text: "store: something else"}
	problems := strings.Join(errorTableProblems(decls), "\n")
	for _, want := range []string{"store.ErrBrandNew has no row", `row "store.ErrClosed" holds the error`} {
		if !strings.Contains(problems, want) {
			t.Errorf("problems do not say %q:\n%s", want, problems)
		}
	}
}

// errorTableProblems checks errorCodes and notForClients against decls.
func errorTableProblems(decls map[string]sentinelDecl) []string {
	var out []string
	rows := map[string]bool{}
	seen := map[error]string{}
	for _, c := range errorCodes {
		if other, dup := seen[c.err]; dup {
			out = append(out, fmt.Sprintf("%s and %s are the same error: one row each", other, c.name))
		}
		seen[c.err] = c.name
		rows[c.name] = true
		if d, ok := decls[c.name]; ok && d.alias != "" {
			rows[d.alias] = true // store.ErrInvalidName is names.ErrInvalid
		}
		// The row's name is the sentinel it holds: its text is the one
		// written in the source.
		switch d, ok := decls[c.name]; {
		case c.name == "context.Canceled":
		case !ok:
			out = append(out, fmt.Sprintf("row %q names no exported sentinel of %v", c.name, sentinelPackages))
		case d.alias != "":
			if a, ok := decls[d.alias]; !ok || a.text != c.err.Error() {
				out = append(out, fmt.Sprintf("row %q: its error %q is not %s's", c.name, c.err, d.alias))
			}
		case d.text != c.err.Error():
			out = append(out, fmt.Sprintf("row %q holds the error %q; the source says %q", c.name, c.err, d.text))
		}
		if strings.HasPrefix(c.wire.String(), "code_") || c.wire == quic.CodeOK {
			out = append(out, fmt.Sprintf("row %q: wire code %v is not an error code", c.name, c.wire))
		}
		if want, ok := apiStatus[c.api]; !ok || want != c.status {
			out = append(out, fmt.Sprintf("row %q: admin code %q with status %d; the admin API answers it with %d", c.name, c.api, c.status, want))
		}
	}
	for name, d := range decls {
		_, exempt := notForClients[name]
		switch {
		case exempt && rows[name]:
			out = append(out, fmt.Sprintf("%s has a row in errorCodes and is listed in notForClients: which is it?", name))
		case !exempt && !rows[name]:
			alias := ""
			if d.alias != "" {
				alias = " (or the sentinel it is, " + d.alias + ")"
			}
			out = append(out, fmt.Sprintf("%s%s has no row in errorCodes (hub/errors.go): give it the wire code, HTTP status and admin code a client sees, or list it in notForClients with the reason it never reaches one", name, alias))
		}
	}
	for name := range notForClients {
		if _, ok := decls[name]; !ok {
			out = append(out, fmt.Sprintf("notForClients lists %s, which is not an exported sentinel any more", name))
		}
	}
	slices.Sort(out)
	return out
}

// apiStatus is the HTTP status of each admin API code (docs/admin-api.md,
// "Errors").
var apiStatus = map[string]int{
	CodeInvalid: 400, CodeUnauthenticated: 401, CodeForbidden: 403, CodePermissionDenied: 403,
	CodeNotFound: 404, CodeMethod: 405, CodeExists: 409, CodeConflict: 409, CodeInUse: 409,
	CodeTooLarge: 413, CodeInternal: 500, CodeCorrupt: 500, CodeUnavailable: 503, CodeStorageFull: 507,
}

// TestToWire checks what clients of the data plane are told, for each kind
// of row and for errors wrapping two sentinels.
func TestToWire(t *testing.T) {
	tests := []struct {
		name string
		err  error
		code quic.Code
	}{
		{name: "store sentinel", err: fmt.Errorf("store: stream %q: %w", "s", store.ErrStreamNotFound), code: quic.CodeNotFound},
		{name: "corrupt", err: &store.CorruptError{File: "f", Shard: 0, Err: io.ErrUnexpectedEOF}, code: quic.CodeCorrupt},
		{name: "group epoch", err: fmt.Errorf("commit: %w", groups.ErrStaleEpoch), code: quic.CodeStaleEpoch},
		{name: "group replaced", err: groups.ErrReplaced, code: quic.CodeSessionExpired},
		{name: "group expired and recreated", err: fmt.Errorf("%w: %w", groups.ErrSessionExpired, groups.ErrStreamRecreated), code: quic.CodeSessionExpired},
		{name: "admin-only row", err: groups.ErrNotFound, code: quic.CodeInternal},
		{name: "an internal row does not hide a later one", err: fmt.Errorf("%w: %w", plugins.ErrNotFound, store.ErrClosed), code: quic.CodeUnavailable},
		{name: "first row of two", err: fmt.Errorf("%w: %w", store.ErrNoSpace, quic.ErrClosed), code: quic.CodeStorageFull},
		{name: "explicit *quic.Error first", err: fmt.Errorf("%w: closed: %w", quic.ErrClosed, &quic.Error{Code: quic.CodeCanceled}), code: quic.CodeCanceled},
		{name: "transport sentinel", err: quic.ErrBudget, code: quic.CodeLimit},
		{name: "canceled", err: context.Canceled, code: quic.CodeUnavailable},
		{name: "standard library, through quic.ToError", err: io.ErrUnexpectedEOF, code: quic.CodeProtocol},
		{name: "other", err: io.ErrClosedPipe, code: quic.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := toWire(tt.err)
			if e.Code != tt.code {
				t.Errorf("toWire(%v).Code = %v, want %v", tt.err, e.Code, tt.code)
			}
			if tt.code != quic.CodeCanceled && e.Message != tt.err.Error() {
				t.Errorf("toWire(%v).Message = %q, want the error's text", tt.err, e.Message)
			}
		})
	}
	if wireErr(nil) != nil {
		t.Error("wireErr(nil) is not nil")
	}
}
