package apicheck

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/api")

const module = "github.com/edgehub/edgehub"

// public lists the packages whose exported identifiers are API
// (docs/RATIONALE.md). A new public package is added here with its golden
// file; everything else of the module lives under internal/, cmd/ or
// examples/.
var public = []string{
	".", // package edgehub: the data model
	"gossip",
	"hub",
	"plugins",
	"quic",
	"sdk",
	"sdk/plugin",
	"store",
	"wasmhost",
}

func TestPublicAPI(t *testing.T) {
	pkgs := load(t)
	for _, rel := range public {
		t.Run(rel, func(t *testing.T) {
			pkg := pkgs[importPath(rel)]
			if pkg == nil {
				t.Fatalf("%s: not loaded", rel)
			}
			lines, bad := surface(pkg)
			for _, b := range bad {
				t.Errorf("%s: %s", rel, b)
			}
			got := strings.Join(lines, "\n") + "\n"
			golden := filepath.Join("testdata", "api", pkg.Name()+".txt")
			if rel != "." {
				golden = filepath.Join("testdata", "api", strings.ReplaceAll(rel, "/", "_")+".txt")
			}
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/apicheck -update and commit the file)", err)
			}
			if got != string(want) {
				t.Errorf("the exported API of %s differs from %s (if intended: go test ./internal/apicheck -update, commit the diff):\n%s",
					rel, golden, diff(strings.Split(string(want), "\n"), strings.Split(got, "\n")))
			}
		})
	}
}

// TestPublicListIsComplete fails when the module grows a package outside
// internal/, cmd/ and examples/ that is not listed in public: it would be
// API nobody decided on.
func TestPublicListIsComplete(t *testing.T) {
	out, err := goCmd(t, "list", "./...")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p, module), "/")
		if rel == "" {
			rel = "."
		}
		if isInternal(p) || strings.HasPrefix(rel, "cmd/") || strings.HasPrefix(rel, "examples/") {
			continue
		}
		if !slices.Contains(public, rel) {
			t.Errorf("%s is a public package not listed in apicheck's public (and docs/RATIONALE.md): move it under internal/ or list it", rel)
		}
	}
}

func goCmd(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	// go test puts its own toolchain first on PATH.
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// load type-checks nothing itself: it imports the public packages from the
// export data the go command writes, which holds every type they name.
func load(t *testing.T) map[string]*types.Package {
	t.Helper()
	args := []string{"list", "-export", "-deps", "-json=ImportPath,Export"}
	for _, rel := range public {
		args = append(args, "./"+rel)
	}
	out, err := goCmd(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	exports := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct{ ImportPath, Export string }
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(f)
	})
	pkgs := map[string]*types.Package{}
	for _, rel := range public {
		pkg, err := imp.Import(importPath(rel))
		if err != nil {
			t.Fatal(err)
		}
		pkgs[pkg.Path()] = pkg
	}
	return pkgs
}

func importPath(rel string) string {
	if rel == "." {
		return module
	}
	return module + "/" + rel
}

// forbidden reports whether a public signature may not name a type of the
// package at path.
func forbidden(path string) bool {
	if isInternal(path) {
		return true
	}
	if path == module || strings.HasPrefix(path, module+"/") {
		return false
	}
	first, _, _ := strings.Cut(path, "/")
	return strings.Contains(first, ".") // not the standard library
}

func isInternal(path string) bool {
	return slices.Contains(strings.Split(path, "/"), "internal")
}

// surface returns one line per exported identifier of pkg, sorted, and the
// lines that name a type of an internal package.
func surface(pkg *types.Package) (lines, bad []string) {
	qual := func(p *types.Package) string {
		switch {
		case p == pkg:
			return ""
		case p.Path() == module:
			return p.Name()
		}
		return strings.TrimPrefix(p.Path(), module+"/")
	}
	str := func(t types.Type) string { return types.TypeString(t, qual) }
	add := func(line string, ts ...types.Type) {
		lines = append(lines, line)
		for _, t := range ts {
			switch p := foreignIn(t); {
			case p == "":
			case isInternal(p):
				bad = append(bad, "names a type of internal package "+p+": "+line)
			default:
				bad = append(bad, "names a type of dependency "+p+" (its changes would be ours): "+line)
			}
		}
	}
	scope := pkg.Scope()
	for _, name := range scope.Names() {
		obj := scope.Lookup(name)
		if !obj.Exported() {
			continue
		}
		switch obj := obj.(type) {
		case *types.Const:
			add(fmt.Sprintf("const %s %s", name, str(obj.Type())), obj.Type())
		case *types.Var:
			add(fmt.Sprintf("var %s %s", name, str(obj.Type())), obj.Type())
		case *types.Func:
			sig := obj.Type().(*types.Signature)
			add("func "+name+strings.TrimPrefix(str(sig), "func"), sig)
		case *types.TypeName:
			if obj.IsAlias() {
				rhs := types.Unalias(obj.Type())
				add(fmt.Sprintf("type %s = %s", name, str(rhs)), rhs)
				continue
			}
			named := obj.Type().(*types.Named)
			typeLines(name, named, str, add)
		}
	}
	slices.Sort(lines)
	return lines, bad
}

func typeLines(name string, named *types.Named, str func(types.Type) string, add func(string, ...types.Type)) {
	tparams := ""
	if tp := named.TypeParams(); tp.Len() > 0 {
		var ps []string
		for i := range tp.Len() {
			ps = append(ps, tp.At(i).Obj().Name()+" "+str(tp.At(i).Constraint()))
		}
		tparams = "[" + strings.Join(ps, ", ") + "]"
	}
	switch u := named.Underlying().(type) {
	case *types.Struct:
		add("type " + name + tparams + " struct")
		for i := range u.NumFields() {
			f := u.Field(i)
			if !f.Exported() {
				continue
			}
			embedded := ""
			if f.Embedded() {
				embedded = " embedded"
			}
			add(fmt.Sprintf("field %s.%s %s%s", name, f.Name(), str(f.Type()), embedded), f.Type())
		}
	case *types.Interface:
		add("type " + name + tparams + " interface")
		for i := range u.NumEmbeddeds() {
			e := u.EmbeddedType(i)
			add(fmt.Sprintf("embed %s %s", name, str(e)), e)
		}
		for i := range u.NumExplicitMethods() {
			m := u.ExplicitMethod(i)
			if !m.Exported() {
				add(fmt.Sprintf("method %s.%s (unexported: the interface cannot be implemented outside)", name, m.Name()))
				continue
			}
			sig := m.Type().(*types.Signature)
			add(fmt.Sprintf("method %s.%s%s", name, m.Name(), strings.TrimPrefix(str(sig), "func")), sig)
		}
	default:
		add(fmt.Sprintf("type %s%s %s", name, tparams, str(u)), u)
	}
	for i := range named.NumMethods() {
		m := named.Method(i)
		if !m.Exported() {
			continue
		}
		sig := m.Type().(*types.Signature)
		recv := name
		if _, ptr := sig.Recv().Type().(*types.Pointer); ptr {
			recv = "*" + name
		}
		add(fmt.Sprintf("method (%s) %s%s", recv, m.Name(), strings.TrimPrefix(str(sig), "func")), sig)
	}
}

// foreignIn returns the path of a package whose type t names although a
// public signature must not: an internal package (no importer outside the
// module can name it) or a package of another module (a dependency's type
// in our API makes its changes ours; docs/RATIONALE.md). It returns "" if
// t names only the standard library and public packages of this module.
// It does not descend into named types (their packages answer for their
// own surface; this package's are listed, and checked, line by line).
func foreignIn(t types.Type) string {
	seen := map[types.Type]bool{}
	var walk func(t types.Type) string
	walk = func(t types.Type) string {
		if t == nil || seen[t] {
			return ""
		}
		seen[t] = true
		switch t := t.(type) {
		case *types.Alias:
			if p := t.Obj().Pkg(); p != nil && forbidden(p.Path()) {
				return p.Path()
			}
			return walk(types.Unalias(t))
		case *types.Named:
			if p := t.Obj().Pkg(); p != nil && forbidden(p.Path()) {
				return p.Path()
			}
			if args := t.TypeArgs(); args != nil {
				for i := range args.Len() {
					if p := walk(args.At(i)); p != "" {
						return p
					}
				}
			}
			return ""
		case *types.Pointer:
			return walk(t.Elem())
		case *types.Slice:
			return walk(t.Elem())
		case *types.Array:
			return walk(t.Elem())
		case *types.Map:
			if p := walk(t.Key()); p != "" {
				return p
			}
			return walk(t.Elem())
		case *types.Chan:
			return walk(t.Elem())
		case *types.Signature:
			for _, tup := range []*types.Tuple{t.Params(), t.Results()} {
				for i := range tup.Len() {
					if p := walk(tup.At(i).Type()); p != "" {
						return p
					}
				}
			}
			return ""
		case *types.Struct:
			for i := range t.NumFields() {
				if f := t.Field(i); f.Exported() {
					if p := walk(f.Type()); p != "" {
						return p
					}
				}
			}
			return ""
		case *types.Interface:
			for i := range t.NumMethods() {
				if p := walk(t.Method(i).Type()); p != "" {
					return p
				}
			}
			for i := range t.NumEmbeddeds() {
				if p := walk(t.EmbeddedType(i)); p != "" {
					return p
				}
			}
			return ""
		case *types.Union:
			for i := range t.Len() {
				if p := walk(t.Term(i).Type()); p != "" {
					return p
				}
			}
			return ""
		case *types.TypeParam:
			return walk(t.Constraint())
		}
		return ""
	}
	return walk(t)
}

// diff is a small line diff (longest common subsequence), enough for
// golden files of a few hundred lines.
func diff(a, b []string) string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&sb, "+ %s\n", b[j])
			j++
		default:
			fmt.Fprintf(&sb, "- %s\n", a[i])
			i++
		}
	}
	return sb.String()
}
