// Package cli implements the hub command. Each command group lives in its
// own file and registers itself from init() with register, so command files
// never need to edit each other.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/suggest"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the command failed
	exitUsage = 2 // bad command line
)

// command is one top-level subcommand.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

// register adds a top-level command. Call it from init().
func register(name, summary string, run func(ctx context.Context, args []string) error) {
	if _, dup := commands[name]; dup {
		panic("cli: command registered twice: " + name)
	}
	commands[name] = command{name, summary, run}
}

// Output streams, replaceable in tests of the package.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
	stdin  io.Reader = os.Stdin
)

// usageError is a bad command line: Main prints it with the command's
// synopsis and a hint, and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// commandError is an error of a subcommand ("stream create"), so that
// Main prefixes it with the whole command's name.
type commandError struct {
	name string
	err  error
}

func (e *commandError) Error() string { return e.err.Error() }
func (e *commandError) Unwrap() error { return e.err }

// synopsis is the usage line of the command being run, set by newFlags;
// Main prints it after a usage error. One command runs a process.
var synopsis string

// Main runs the hub command with args (without the program name) and returns
// the exit code. SIGINT and SIGTERM cancel the command's context; a second
// signal kills the process the default way.
func Main(args []string) int {
	if len(args) == 0 {
		printHelp(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			c, ok := commands[args[1]]
			if !ok {
				fmt.Fprintf(stderr, "hub help: unknown command %q%s\nRun 'hub help' for the list of commands.\n", args[1], didYouMean(args[1], slices.Collect(maps.Keys(commands))))
				return exitUsage
			}
			return runCommand(c, []string{"--help"})
		}
		printHelp(stdout)
		return exitOK
	case "version", "--version":
		fmt.Fprintf(stdout, "hub %s (%s %s/%s)\n", hub.BuildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "hub: unknown command %q%s\nRun 'hub help' for the list of commands.\n", name, didYouMean(name, slices.Collect(maps.Keys(commands))))
		return exitUsage
	}
	return runCommand(c, args[1:])
}

// didYouMean is ` (did you mean "x"?)` for the closest of known, or "".
func didYouMean(s string, known []string) string {
	slices.Sort(known)
	if c := suggest.Closest(s, known); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}

func runCommand(c command, args []string) int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		select {
		case sig := <-sigc:
			signal.Stop(sigc) // a second signal terminates the process
			cancel(&interrupted{sig.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	synopsis = ""
	err := c.run(ctx, args)
	name := c.name
	if ce, ok := errors.AsType[*commandError](err); ok {
		name = ce.name
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, new(*usageError)):
		fmt.Fprintf(stderr, "hub %s: %v\n", name, err)
		if synopsis != "" {
			fmt.Fprintf(stderr, "Usage: hub %s\n", synopsis)
		}
		fmt.Fprintf(stderr, "Run 'hub %s --help' for more.\n", name)
		return exitUsage
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.As(err, new(*interrupted))):
		// A command cut short by a signal exits as shells report a command
		// killed by it: 128+signal (130 SIGINT, 143 SIGTERM).
		in, ok := errors.AsType[*interrupted](context.Cause(ctx))
		if !ok {
			fmt.Fprintf(stderr, "hub %s: interrupted\n", name)
			return 130
		}
		if errors.Is(err, in) {
			fmt.Fprintf(stderr, "hub %s: %v\n", name, err)
		} else {
			fmt.Fprintf(stderr, "hub %s: %v\n", name, in)
		}
		code := 128 + int(in.sig)
		return code
	}
	fmt.Fprintf(stderr, "hub %s: %v\n", name, err)
	return exitError
}

// interrupted is the cause of a command's context cancelled by a signal.
type interrupted struct{ sig syscall.Signal }

func (e *interrupted) Error() string { return "interrupted by " + e.name() }

func (e *interrupted) name() string {
	if e.sig == syscall.SIGTERM {
		return "SIGTERM"
	}
	return "SIGINT"
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "hub runs and manages an edgehub server.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: hub COMMAND [ARGS] [FLAGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(tw, "  %s\t%s\n", n, commands[n].summary)
	}
	fmt.Fprintf(tw, "  %s\t%s\n", "help [COMMAND]", "show help for the hub or a command")
	fmt.Fprintf(tw, "  %s\t%s\n", "version", "print the version")
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'hub COMMAND --help' for a command's flags.")
}

// newFlags returns a FlagSet for a (sub)command whose usage (--help) shows
// the synopsis and the flags, spelled --flag as the README does. Errors are
// returned, not printed.
func newFlags(name, syn string) *flag.FlagSet {
	synopsis = syn
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: hub %s\n", syn)
		var b strings.Builder
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		if b.Len() > 0 {
			fmt.Fprintf(stderr, "\nFlags:\n%s", flagLineRE.ReplaceAllString(b.String(), "$1--$2"))
		}
	}
	return fs
}

// flagLineRE finds the long flag names PrintDefaults writes as "  -name";
// one-letter flags (-n, -f) keep their single dash, as the README writes them.
var flagLineRE = regexp.MustCompile(`(?m)^(  )-([^-\s][^\s=])`)

// flagErrRE picks the flag out of the flag package's parse errors.
var flagErrRE = regexp.MustCompile(`^(flag provided but not defined:|flag needs an argument:|invalid value "(.*)" for flag|invalid boolean value "(.*)" for) -+([^:\s]+)(: (.*))?$`)

// flagError rewrites a parse error of the flag package with --name and,
// for an unknown flag, the closest known one.
func flagError(fs *flag.FlagSet, err error) error {
	m := flagErrRE.FindStringSubmatch(err.Error())
	if m == nil {
		return usagef("%v", err)
	}
	name := m[4]
	dash := "--"
	if len(name) == 1 {
		dash = "-"
	}
	switch {
	case strings.HasPrefix(m[1], "flag provided"):
		var known []string
		fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
		if hint := didYouMean(name, known); hint != "" {
			return usagef("unknown flag %s%s%s", dash, name, strings.Replace(hint, `"`, `"--`, 1))
		}
		return usagef("unknown flag %s%s", dash, name)
	case strings.HasPrefix(m[1], "flag needs"):
		return usagef("flag %s%s needs a value", dash, name)
	case m[2] != "" || strings.HasPrefix(m[1], "invalid value"):
		return usagef("invalid value %q for %s%s: %s", m[2], dash, name, m[6])
	default:
		return usagef("invalid value %q for %s%s: want true or false", m[3], dash, name)
	}
}

// parseFlags parses args with flags and positional arguments interspersed
// ("stream create NAME --shards 4" and "stream create --shards 4 NAME" are
// the same); "--" ends flag parsing. It returns the positional arguments.
// --help prints the usage and returns flag.ErrHelp; other errors print
// nothing here (Main prints one line and the synopsis).
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	usage := fs.Usage
	fs.Usage = func() {} // the flag package calls it on every error
	defer func() { fs.Usage = usage }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				// Help asked for is the output, on stdout as hub help's;
				// the usage funcs write to stderr, which errors use.
				saved := stderr
				stderr = stdout
				usage()
				stderr = saved
				return nil, err
			}
			return nil, flagError(fs, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse stops at the first non-flag or after "--"; tell them apart.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(pos []string, n int, names string) error {
	if len(pos) < n {
		return usagef("missing %s", names)
	}
	if len(pos) > n {
		return usagef("unexpected argument %q", pos[n])
	}
	return nil
}

// subcommand dispatches "hub GROUP SUB ..." to the named function; its
// errors are reported as those of "hub GROUP SUB".
func subcommand(group string, ctx context.Context, args []string, subs map[string]func(context.Context, []string) error, summaries [][2]string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		w := stdout // help asked for
		if len(args) == 0 {
			w = stderr // a usage error
		}
		fmt.Fprintf(w, "Usage: hub %s COMMAND\n\nCommands:\n", group)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range summaries {
			fmt.Fprintf(tw, "  %s\t%s\n", s[0], s[1])
		}
		tw.Flush()
		if len(args) == 0 {
			return usagef("missing command")
		}
		return flag.ErrHelp
	}
	fn, ok := subs[args[0]]
	if !ok {
		return usagef("unknown command %q%s", args[0], didYouMean(args[0], slices.Collect(maps.Keys(subs))))
	}
	if err := fn(ctx, args[1:]); err != nil {
		return &commandError{name: group + " " + args[0], err: err}
	}
	return nil
}

// newTable returns a tabwriter for aligned human output; call Flush.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }
