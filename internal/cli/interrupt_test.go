package cli

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
)

// TestEndToEndProduceInterrupt: SIGTERM or SIGINT stops `hub produce`
// while its stdin is idle (it used to wait for stdin to close), after the
// lines read are acknowledged, with 143 or 130 as shells report such a
// command. `hub consume --follow` stops too, with 0: following until
// interrupted is what it is for.
func TestEndToEndProduceInterrupt(t *testing.T) {
	base := t.TempDir()
	s := startServer(t, filepath.Join(base, "hub-data"))
	env := []string{"HUB_ADDR=" + s.quicAddr(t), "HUB_ADMIN=" + s.admin}
	for _, tc := range []struct {
		name string
		sig  syscall.Signal
		code int
	}{{"SIGTERM", syscall.SIGTERM, 143}, {"SIGINT", syscall.SIGINT, 130}} {
		t.Run(tc.name, func(t *testing.T) {
			stream := strings.ToLower(tc.name)
			if code, _, errOut := runHubIn(t, base, env, "stream", "create", stream); code != 0 {
				t.Fatalf("stream create: %s", errOut)
			}
			cmd := exec.Command(hubBin(t), "produce", stream)
			cmd.Dir = base
			cmd.Env = append(os.Environ(), env...)
			in, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer in.Close() // stdin stays open until the end of the test
			var errOut bytes.Buffer
			cmd.Stderr = &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if _, err := in.Write([]byte("a1\na2\n")); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, "two records stored", func() bool {
				_, out, _ := runHubIn(t, base, env, "consume", stream)
				return out == "a1\na2\n"
			})
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(testutil.Deadline):
				cmd.Process.Kill()
				<-done
				t.Fatalf("produce did not stop after %v with stdin open: %s", tc.sig, errOut.String())
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Fatalf("produce after %v: %v, want exit %d\n%s", tc.sig, err, tc.code, errOut.String())
			}
			if want := "acked 2 records\nhub produce: stdin after line 2: interrupted by " + tc.name + "\n"; errOut.String() != want {
				t.Errorf("stderr %q, want %q", errOut.String(), want)
			}
		})
	}

	// consume --follow: prints what it has, stops on the signal with 0.
	cmd := exec.Command(hubBin(t), "consume", "sigterm", "--follow")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), env...)
	var out, errOut testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "consume --follow printed the records", func() bool { return out.String() == "a1\na2\n" })
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("consume --follow after SIGTERM: %v\n%s", err, errOut.String())
		}
	case <-time.After(testutil.Deadline):
		cmd.Process.Kill()
		<-done
		t.Fatalf("consume --follow did not stop after SIGTERM")
	}
}
