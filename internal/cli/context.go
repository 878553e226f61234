package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/edgehub/edgehub/internal/atomicfile"
	"github.com/edgehub/edgehub/internal/suggest"
)

func init() {
	register("context", "save hub targets (address, admin URL, CA, tokens) and pick one by name", func(ctx context.Context, args []string) error {
		return subcommand("context", ctx, args, map[string]func(context.Context, []string) error{
			"add":    contextAdd,
			"use":    contextUse,
			"list":   contextList,
			"ls":     contextList,
			"remove": contextRemove,
			"rm":     contextRemove,
		}, [][2]string{
			{"add NAME [--addr HOST:PORT] [--admin URL] [--ca FILE] [--token TOKEN] ...", "save a target under NAME"},
			{"use NAME", "make NAME the current context"},
			{"list", "list the saved contexts; * marks the current one"},
			{"remove NAME", "forget a context"},
		})
	})
}

// hubContext is a saved target. Empty fields leave the setting to its
// default. Paths are absolute, so a context works from any directory.
type hubContext struct {
	Addr          string `json:"addr,omitempty"`
	CA            string `json:"ca,omitempty"`
	Token         string `json:"token,omitempty"`
	Insecure      bool   `json:"insecure,omitempty"`
	Admin         string `json:"admin,omitempty"`
	AdminCA       string `json:"admin_ca,omitempty"`
	AdminToken    string `json:"admin_token,omitempty"`
	AdminInsecure bool   `json:"admin_insecure,omitempty"`
}

// contextFile is the saved contexts, in the file contextPath names.
type contextFile struct {
	Current  string                `json:"current,omitempty"`
	Contexts map[string]hubContext `json:"contexts"`
}

// contextPath is the contexts file: $HUB_CONFIG_DIR/contexts.json, else
// contexts.json in edgehub's directory under os.UserConfigDir
// (~/.config/edgehub on Linux).
func contextPath() (string, error) {
	if d := os.Getenv("HUB_CONFIG_DIR"); d != "" {
		return filepath.Join(d, "contexts.json"), nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no directory for the contexts file (set HUB_CONFIG_DIR): %w", err)
	}
	return filepath.Join(d, "edgehub", "contexts.json"), nil
}

// loadContexts reads the contexts file; a missing file is no contexts.
func loadContexts() (*contextFile, string, error) {
	path, err := contextPath()
	if err != nil {
		return nil, "", err
	}
	cf := &contextFile{Contexts: map[string]hubContext{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cf, path, nil
	}
	if err != nil {
		return nil, path, err
	}
	if err := json.Unmarshal(b, cf); err != nil {
		return nil, path, fmt.Errorf("contexts file %s: %w", path, err)
	}
	if cf.Contexts == nil {
		cf.Contexts = map[string]hubContext{}
	}
	return cf, path, nil
}

func (cf *contextFile) save(path string) error {
	b, err := json.MarshalIndent(cf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	// Tokens are secrets: the file is the user's alone.
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}

// lookup returns the named context, or an error naming the close ones.
func (cf *contextFile) lookup(name string) (hubContext, error) {
	c, ok := cf.Contexts[name]
	if !ok {
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range cf.Contexts {
				if !yield(n) {
					return
				}
			}
		})
		msg := fmt.Sprintf("no context %q", name)
		if s := suggest.Closest(name, names); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else if len(names) > 0 {
			msg += " (saved: " + strings.Join(names, ", ") + ")"
		} else {
			msg += " (none saved: hub context add NAME ...)"
		}
		return c, errors.New(msg)
	}
	return c, nil
}

// contextName is the --context flag, shared by the data-plane and admin
// flags of a command.
type contextName struct{ name string }

func (c *contextName) String() string     { return c.name }
func (c *contextName) Set(v string) error { c.name = v; return nil }

// contextFlag adds --context to fs once and returns it.
func contextFlag(fs *flag.FlagSet) *contextName {
	if f := fs.Lookup("context"); f != nil {
		return f.Value.(*contextName)
	}
	c := &contextName{}
	fs.Var(c, "context", "saved context `NAME` to use (env HUB_CONTEXT; default the current one, see hub context)")
	return c
}

// selected returns the context a command uses: --context, else
// HUB_CONTEXT, else the current one, else none (a zero hubContext).
func (c *contextName) selected() (hubContext, error) {
	name := c.name
	if name == "" {
		name = os.Getenv("HUB_CONTEXT")
	}
	// An unreadable file is an error even without a name: it may hold the
	// current context, and the defaults would reach another hub.
	cf, _, err := loadContexts()
	if err != nil {
		return hubContext{}, err
	}
	if name == "" {
		name = cf.Current
	}
	if name == "" {
		return hubContext{}, nil
	}
	return cf.lookup(name)
}

// pick returns the first non-empty value: a flag, an environment variable,
// the context's, the default.
func pick(flagVal, env, fromContext, def string) string {
	if flagVal != "" {
		return flagVal
	}
	if e := os.Getenv(env); e != "" {
		return e
	}
	if fromContext != "" {
		return fromContext
	}
	return def
}

func contextAdd(ctx context.Context, args []string) error {
	fs := newFlags("context add", "context add NAME [--addr HOST:PORT] [--ca FILE] [--token TOKEN] [--insecure] [--admin URL] [--admin-ca FILE] [--admin-token TOKEN] [--admin-insecure] [--use] [--replace]")
	var c hubContext
	fs.StringVar(&c.Addr, "addr", "", "hub QUIC `HOST:PORT`")
	fs.StringVar(&c.CA, "ca", "", "PEM `FILE` of certificates to trust for QUIC")
	fs.StringVar(&c.Token, "token", "", "data-plane bearer `TOKEN`")
	fs.BoolVar(&c.Insecure, "insecure", false, "do not verify the hub's QUIC certificate")
	fs.StringVar(&c.Admin, "admin", "", "admin API `URL`")
	fs.StringVar(&c.AdminCA, "admin-ca", "", "PEM `FILE` of certificates to trust for an https admin URL")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin `TOKEN`")
	fs.BoolVar(&c.AdminInsecure, "admin-insecure", false, "do not verify the admin API's certificate")
	use := fs.Bool("use", false, "also make it the current context")
	replace := fs.Bool("replace", false, "replace a context of that name")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "context NAME"); err != nil {
		return err
	}
	name := pos[0]
	if name == "" || strings.ContainsAny(name, " \t\n") {
		return usagef("invalid context name %q", name)
	}
	for _, p := range []*string{&c.CA, &c.AdminCA} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("context %s: %w", name, err)
			}
			*p = abs
		}
	}
	if c == (hubContext{}) {
		return usagef("nothing to save: give at least one of --addr, --admin, --ca, --token, --admin-ca, --admin-token")
	}
	cf, path, err := loadContexts()
	if err != nil {
		return err
	}
	if _, ok := cf.Contexts[name]; ok && !*replace {
		return fmt.Errorf("context %s exists: pass --replace to overwrite it", name)
	}
	cf.Contexts[name] = c
	if *use {
		cf.Current = name
	}
	if err := cf.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "saved context %s", name)
	if *use {
		fmt.Fprint(stdout, " (current)")
	}
	fmt.Fprintln(stdout)
	return nil
}

func contextUse(ctx context.Context, args []string) error {
	fs := newFlags("context use", "context use NAME")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "context NAME"); err != nil {
		return err
	}
	cf, path, err := loadContexts()
	if err != nil {
		return err
	}
	if _, err := cf.lookup(pos[0]); err != nil {
		return err
	}
	cf.Current = pos[0]
	if err := cf.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "using context %s\n", pos[0])
	return nil
}

func contextRemove(ctx context.Context, args []string) error {
	fs := newFlags("context remove", "context remove NAME")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "context NAME"); err != nil {
		return err
	}
	cf, path, err := loadContexts()
	if err != nil {
		return err
	}
	if _, err := cf.lookup(pos[0]); err != nil {
		return err
	}
	delete(cf.Contexts, pos[0])
	if cf.Current == pos[0] {
		cf.Current = ""
	}
	if err := cf.save(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "removed context %s\n", pos[0])
	return nil
}

func contextList(ctx context.Context, args []string) error {
	fs := newFlags("context list", "context list [--json]")
	asJSON := jsonFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, ""); err != nil {
		return err
	}
	cf, path, err := loadContexts()
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, cf)
	}
	if len(cf.Contexts) == 0 {
		fmt.Fprintf(stdout, "no contexts (hub context add NAME ...; saved in %s)\n", path)
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "CURRENT\tNAME\tADDR\tADMIN\tCA\tTOKEN\tADMIN TOKEN")
	names := make([]string, 0, len(cf.Contexts))
	for n := range cf.Contexts {
		names = append(names, n)
	}
	slices.Sort(names)
	secret := func(s string) string { return orDash("(set)", s == "") }
	for _, n := range names {
		c := cf.Contexts[n]
		cur := ""
		if n == cf.Current {
			cur = "*"
		}
		ca := orDash(c.CA, c.CA == "")
		if c.Insecure {
			ca = "(insecure)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cur, n, orDash(c.Addr, c.Addr == ""), orDash(c.Admin, c.Admin == ""), ca,
			secret(c.Token), secret(c.AdminToken))
	}
	return tw.Flush()
}
