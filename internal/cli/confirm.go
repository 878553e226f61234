package cli

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strings"
)

// Destructive commands (stream delete, group reset, group delete, plugin
// delete) ask before acting when stdin is a terminal, and take --yes for
// scripts; with neither they refuse, so a script that forgot --yes fails
// loudly instead of deleting by accident or hanging on a prompt.

// isTerminal reports whether stdin is an interactive terminal; tests
// replace it.
var isTerminal = func() bool {
	f, ok := stdin.(*os.File)
	return ok && terminal(f)
}

// yesFlag adds --yes to a destructive command.
func yesFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("yes", false, "do not ask for confirmation (for scripts)")
}

// confirm asks "what? [y/N]" on a terminal unless yes; without a terminal
// and without --yes it refuses. what describes the action ("delete stream
// events and its 40 records").
func confirm(yes bool, what string) error {
	if yes {
		return nil
	}
	if !isTerminal() {
		return usagef("refusing to %s without confirmation: stdin is not a terminal; pass --yes", what)
	}
	fmt.Fprintf(stderr, "%s? [y/N] ", strings.ToUpper(what[:1])+what[1:])
	line, _ := bufio.NewReader(stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("not confirmed: nothing was changed")
}
