package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		pos    []string
		shards int
		json   bool
		err    string
	}{
		{name: "flags after positional", args: []string{"orders", "--shards", "4", "--json"}, pos: []string{"orders"}, shards: 4, json: true},
		{name: "flags before positional", args: []string{"--shards=4", "orders"}, pos: []string{"orders"}, shards: 4},
		{name: "interleaved", args: []string{"a", "-shards", "2", "b", "--json", "c"}, pos: []string{"a", "b", "c"}, shards: 2, json: true},
		{name: "double dash ends flags", args: []string{"--json", "--", "--shards", "x"}, pos: []string{"--shards", "x"}, shards: 1, json: true},
		{name: "no args", args: nil, shards: 1},
		{name: "unknown flag", args: []string{"orders", "--shard", "4"}, err: `unknown flag --shard (did you mean "--shards"?)`},
		{name: "bad value", args: []string{"--shards", "four"}, err: `invalid value "four" for --shards: parse error`},
		{name: "missing value", args: []string{"orders", "--shards"}, err: "flag --shards needs a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := newFlags("test", "test")
			shards := fs.Int("shards", 1, "")
			asJSON := fs.Bool("json", false, "")
			pos, err := parseFlags(fs, tt.args)
			if tt.err != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tt.pos) || *shards != tt.shards || *asJSON != tt.json {
				t.Errorf("pos %q shards %d json %v; want %q %d %v", pos, *shards, *asJSON, tt.pos, tt.shards, tt.json)
			}
		})
	}
}

// capture runs Main with stdout and stderr captured.
func capture(tb testing.TB, args ...string) (code int, out, errOut string) {
	tb.Helper()
	var o, e bytes.Buffer
	oldOut, oldErr := stdout, stderr
	stdout, stderr = &o, &e
	defer func() { stdout, stderr = oldOut, oldErr }()
	code = Main(args)
	return code, o.String(), e.String()
}

func TestMainExitCodes(t *testing.T) {
	register("test-fail", "a command that fails", func(ctx context.Context, args []string) error {
		if len(args) > 0 && args[0] == "usage" {
			return usagef("bad usage")
		}
		if len(args) > 0 && args[0] == "help" {
			return flag.ErrHelp
		}
		return errors.New("it broke")
	})
	defer delete(commands, "test-fail")

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{name: "no args prints help to stderr", args: nil, code: exitUsage, stderr: "Usage: hub COMMAND"},
		{name: "help", args: []string{"help"}, code: exitOK, stdout: "stream"},
		{name: "help lists registered commands", args: []string{"--help"}, code: exitOK, stdout: "test-fail"},
		{name: "version", args: []string{"version"}, code: exitOK, stdout: "hub "},
		{name: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{name: "failing command", args: []string{"test-fail"}, code: exitError, stderr: "hub test-fail: it broke"},
		{name: "usage error", args: []string{"test-fail", "usage"}, code: exitUsage, stderr: "hub test-fail: bad usage\nRun 'hub test-fail --help' for more.\n"},
		{name: "help is success", args: []string{"test-fail", "help"}, code: exitOK},
		{name: "stream without subcommand", args: []string{"stream"}, code: exitUsage, stderr: "create NAME"},
		{name: "stream unknown subcommand", args: []string{"stream", "frob"}, code: exitUsage, stderr: `unknown command "frob"`},
		{name: "stream create without name", args: []string{"stream", "create"}, code: exitUsage, stderr: "missing stream NAME"},
		{name: "stream create with two names", args: []string{"stream", "create", "a", "b"}, code: exitUsage, stderr: `unexpected argument "b"`},
		{name: "stream create bad size", args: []string{"stream", "create", "a", "--max-bytes", "lots"}, code: exitUsage, stderr: `--max-bytes: invalid size "lots"`},
		{name: "stream create bad policy", args: []string{"stream", "create", "a", "--replicate", "some"}, code: exitUsage, stderr: "--replicate: invalid replication policy"},
		{name: "stream update nothing", args: []string{"stream", "update", "a"}, code: exitUsage, stderr: "nothing to change"},
		{name: "stream create help", args: []string{"stream", "create", "--help"}, code: exitOK, stdout: "--retention DURATION"},
		{name: "bad admin URL", args: []string{"stream", "list", "--admin", "ftp://x"}, code: exitUsage, stderr: "invalid admin URL"},
		{name: "serve bad log level", args: []string{"serve", "--log-level", "loud"}, code: exitUsage, stderr: "invalid --log-level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := capture(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q does not contain %q", out, tt.stdout)
			}
			if !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr %q does not contain %q", errOut, tt.stderr)
			}
		})
	}
}

func TestAdminClientURL(t *testing.T) {
	tests := []struct {
		name, flag, env, want string
		err                   bool
	}{
		{name: "default", want: DefaultAdminURL},
		{name: "env", env: "http://10.0.0.1:9000", want: "http://10.0.0.1:9000"},
		{name: "flag beats env", flag: "http://a:1", env: "http://b:2", want: "http://a:1"},
		{name: "bare host:port", flag: "127.0.0.1:7441", want: "http://127.0.0.1:7441"},
		{name: "trailing slash", flag: "https://hub.example/", want: "https://hub.example"},
		{name: "bad scheme", flag: "ftp://x", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("HUB_ADMIN", tt.env)
			c, err := newAdminClient(adminOptions{URL: pick(tt.flag, "HUB_ADMIN", "", "")})
			if tt.err {
				if err == nil {
					t.Fatalf("got %s, want an error", c.base)
				}
				return
			}
			if err != nil || c.base.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", c, err, tt.want)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		name string
		in   int64
		want string
	}{
		{name: "bytes", in: 999, want: "999B"},
		{name: "kib", in: 1536, want: "1.5KiB"},
		{name: "mib", in: 10 << 20, want: "10.0MiB"},
		{name: "gib", in: 3 << 30, want: "3.0GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := humanBytes(tt.in); got != tt.want {
				t.Errorf("humanBytes(%d) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
