package cli

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestEndToEndConsistency runs the hub binary on mistakes a user makes and
// checks how it answers: one line naming the whole command, a "did you
// mean" where a name was mistyped, and for a bad command line (exit 2) the
// synopsis in one line, never the whole flag list.
func TestEndToEndConsistency(t *testing.T) {
	dir := t.TempDir()
	env := []string{"HUB_ADMIN=http://127.0.0.1:1", "HUB_CONFIG_DIR=" + dir}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // exact
	}{
		{"mistyped command", []string{"strem", "list"}, 2,
			"hub: unknown command \"strem\" (did you mean \"stream\"?)\nRun 'hub help' for the list of commands.\n"},
		{"unknown command", []string{"frobnicate"}, 2,
			"hub: unknown command \"frobnicate\"\nRun 'hub help' for the list of commands.\n"},
		{"help for a mistyped command", []string{"help", "consme"}, 2,
			"hub help: unknown command \"consme\" (did you mean \"consume\"?)\nRun 'hub help' for the list of commands.\n"},
		{"mistyped subcommand", []string{"stream", "lsit"}, 2,
			"hub stream: unknown command \"lsit\" (did you mean \"list\"?)\nRun 'hub stream --help' for more.\n"},
		{"mistyped context subcommand", []string{"context", "ad", "x"}, 2,
			"hub context: unknown command \"ad\" (did you mean \"add\"?)\nRun 'hub context --help' for more.\n"},
		{"mistyped flag", []string{"stream", "create", "x", "--shard", "2"}, 2,
			"hub stream create: unknown flag --shard (did you mean \"--shards\"?)\n" +
				"Usage: hub stream create NAME [--shards N] [--retention DURATION] [--max-bytes SIZE] [--compact] [--tombstone-retention DURATION] [--replicate POLICY] [--copies N [--copies-at TAGS] [--copies-timeout DURATION] [--copies-shortfall fail|ack]] [--json]\n" +
				"Run 'hub stream create --help' for more.\n"},
		{"zero shards", []string{"stream", "create", "x", "--shards", "0"}, 2,
			"hub stream create: invalid --shards 0: a stream has 1 to 1024 shards\n" +
				"Usage: hub stream create NAME [--shards N] [--retention DURATION] [--max-bytes SIZE] [--compact] [--tombstone-retention DURATION] [--replicate POLICY] [--copies N [--copies-at TAGS] [--copies-timeout DURATION] [--copies-shortfall fail|ack]] [--json]\n" +
				"Run 'hub stream create --help' for more.\n"},
		{"bad value", []string{"consume", "s", "-n", "many"}, 2,
			"hub consume: invalid value \"many\" for -n: parse error\n" +
				"Usage: hub " + consumeSynopsis + "\n" +
				"Run 'hub consume --help' for more.\n"},
		{"missing value", []string{"group", "reset", "g", "--stream"}, 2,
			"hub group reset: flag --stream needs a value\n" +
				"Usage: hub group reset NAME --stream STREAM --to earliest|latest|SEQ|RFC3339 [--shard N]... [--yes] [--json]\n" +
				"Run 'hub group reset --help' for more.\n"},
		{"failure names the subcommand", []string{"stream", "describe", "x"}, 1,
			"hub stream describe: cannot reach the hub admin API at http://127.0.0.1:1 (is `hub serve` running? set --admin or HUB_ADMIN): Get \"http://127.0.0.1:1/v1/streams/x\": dial tcp 127.0.0.1:1: connect: connection refused\n"},
		{"missing argument", []string{"group", "describe"}, 2,
			"hub group describe: missing group NAME\nUsage: hub group describe NAME [--json]\nRun 'hub group describe --help' for more.\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runHubIn(t, dir, env, tc.args...)
			if code != tc.code || errOut != tc.stderr {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit %d, stderr:\n%s", code, errOut, tc.code, tc.stderr)
			}
		})
	}
}

// commandLines lists every command and subcommand by running their help.
func commandLines(t *testing.T) [][]string {
	t.Helper()
	var cmds [][]string
	for name := range commands {
		code, errOut, _ := capture(t, name, "--help") // help asked for is on stdout
		if code != 0 {
			t.Fatalf("hub %s --help: exit %d\n%s", name, code, errOut)
		}
		if !strings.HasPrefix(errOut, "Usage: hub "+name+" COMMAND") {
			cmds = append(cmds, []string{name})
			continue
		}
		_, list, _ := strings.Cut(errOut, "Commands:\n")
		for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
			cmds = append(cmds, []string{name, strings.Fields(l)[0]})
		}
	}
	slices.SortFunc(cmds, func(a, b []string) int { return strings.Compare(strings.Join(a, " "), strings.Join(b, " ")) })
	return cmds
}

// singleDashFlag is a long flag with one dash; -n and -f are one letter.
var singleDashFlag = regexp.MustCompile(`(?m)^  -[^-\s][^\s]`)

// TestHelpSpellsFlagsAsTheReadme: every command's --help lists its flags
// as --flag (the README's spelling), and --json says the same everywhere.
func TestHelpSpellsFlagsAsTheReadme(t *testing.T) {
	cmds := commandLines(t)
	if len(cmds) < 20 {
		t.Fatalf("found only %d commands: %v", len(cmds), cmds)
	}
	jsonHelp := ""
	for _, c := range cmds {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			code, help, _ := capture(t, append(c, "--help")...)
			if code != 0 || !strings.HasPrefix(help, "Usage: hub ") {
				t.Fatalf("exit %d:\n%s", code, help)
			}
			if singleDashFlag.MatchString(help) || regexp.MustCompile(`(?m)^  --[^-\s](\s|$)`).MatchString(help) {
				t.Errorf("a flag spelled -flag, or a one-letter one --f:\n%s", help)
			}
			// plugin.go's commands have their own --json texts (plugin
			// bench's, also hub bench plugin, shapes its input); the rest
			// share one.
			plugin := c[0] == "plugin" || slices.Equal(c, []string{"bench", "plugin"})
			if i := strings.Index(help, "\n  --json\n"); i >= 0 && !plugin {
				line, _, _ := strings.Cut(help[i+len("\n  --json\n"):], "\n")
				if jsonHelp == "" {
					jsonHelp = line
				}
				if line != jsonHelp {
					t.Errorf("--json: %q, elsewhere %q", line, jsonHelp)
				}
			}
		})
	}
	if jsonHelp == "" {
		t.Error("no command has --json")
	}
}

// TestSynopsisListsFlags: every command's synopsis names each of its own
// flags (serve lacked --quic-listen and --admin-listen, stream update
// --tombstone-retention); the connection flags every data-plane or admin
// command shares are left to the Flags list, and so are the flags after a
// synopsis' "[LIMIT FLAGS]" (plugin deploy's tuning).
func TestSynopsisListsFlags(t *testing.T) {
	shared := map[string]bool{}
	for _, f := range []string{"addr", "ca", "insecure", "token", "cert", "key-file", "context", "admin", "admin-token", "admin-ca", "admin-insecure",
		"admin-admin", "admin-admin-token", "admin-admin-ca", "admin-admin-insecure", "f", "h", "help"} {
		shared[f] = true
	}
	flagRE := regexp.MustCompile(`(?m)^  (--?[^\s=]+)`)
	for _, c := range commandLines(t) {
		code, help, _ := capture(t, append(c, "--help")...)
		if code != 0 {
			t.Fatalf("hub %v --help: exit %d", c, code)
		}
		usage, rest, _ := strings.Cut(help, "\n")
		_, flags, _ := strings.Cut(rest, "Flags:\n")
		flags, _, _ = strings.Cut(flags, "\n\n")
		for _, m := range flagRE.FindAllStringSubmatch(flags, -1) {
			if shared[strings.TrimLeft(m[1], "-")] || strings.Contains(usage, "[LIMIT FLAGS]") {
				continue
			}
			if !regexp.MustCompile(regexp.QuoteMeta(m[1]) + `\b`).MatchString(usage) {
				t.Errorf("hub %s: %s is not in the synopsis %q", strings.Join(c, " "), m[1], usage)
			}
		}
	}
}
