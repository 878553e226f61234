package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestConfirm(t *testing.T) {
	for _, tc := range []struct {
		name   string
		yes    bool
		tty    bool
		answer string
		ok     bool
		usage  bool
	}{
		{name: "--yes", yes: true, ok: true},
		{name: "no terminal", usage: true},
		{name: "terminal y", tty: true, answer: "y\n", ok: true},
		{name: "terminal YES", tty: true, answer: "YES\n", ok: true},
		{name: "terminal n", tty: true, answer: "n\n"},
		{name: "terminal empty", tty: true, answer: "\n"},
		{name: "terminal EOF", tty: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldIn, oldErr, oldTTY := stdin, stderr, isTerminal
			t.Cleanup(func() { stdin, stderr, isTerminal = oldIn, oldErr, oldTTY })
			var prompt bytes.Buffer
			stdin, stderr = strings.NewReader(tc.answer), &prompt
			isTerminal = func() bool { return tc.tty }
			err := confirm(tc.yes, "delete stream x")
			if (err == nil) != tc.ok {
				t.Fatalf("confirm = %v, want ok=%v", err, tc.ok)
			}
			var ue *usageError
			if isUsage := errors.As(err, &ue); isUsage != tc.usage {
				t.Fatalf("usage error %v, want %v (%v)", isUsage, tc.usage, err)
			}
			if tc.tty && !tc.yes && !strings.Contains(prompt.String(), "Delete stream x? [y/N]") {
				t.Fatalf("prompt %q", prompt.String())
			}
		})
	}
}
