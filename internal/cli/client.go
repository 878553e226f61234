package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/edgehub/edgehub/hub"
)

// DefaultAdminURL is where the CLI looks for the admin API without --admin
// or HUB_ADMIN.
const DefaultAdminURL = "http://" + hub.DefaultAdminAddr

// adminFlag adds --admin to fs; resolve it with newAdminClient.
func adminFlag(fs *flag.FlagSet) *string {
	return fs.String("admin", "", "admin API `URL` (env HUB_ADMIN, default "+DefaultAdminURL+")")
}

// adminCommand is the prelude of a management command: it adds --admin to
// fs, parses args, checks that there are n positional arguments (named
// names in the error) and returns a client for the admin API with them.
func adminCommand(fs *flag.FlagSet, args []string, n int, names string) (*adminClient, []string, error) {
	admin := adminFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := wantArgs(pos, n, names); err != nil {
		return nil, nil, err
	}
	c, err := newAdminClient(*admin)
	return c, pos, err
}

// adminClient calls the hub's admin API, turning its JSON errors into
// *apiError with the hub's message and code.
type adminClient struct {
	base *url.URL
	http *http.Client
}

// newAdminClient resolves the admin URL: the flag, else $HUB_ADMIN, else
// DefaultAdminURL. A bare host:port is accepted.
func newAdminClient(flagValue string) (*adminClient, error) {
	raw := flagValue
	if raw == "" {
		raw = os.Getenv("HUB_ADMIN")
	}
	if raw == "" {
		raw = DefaultAdminURL
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usagef("invalid admin URL %q: want http://HOST:PORT", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return &adminClient{base: u, http: &http.Client{Timeout: time.Minute}}, nil
}

// apiError is an error answered by the hub.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// do sends a request with in (if not nil) as the JSON body and decodes a
// successful JSON response into out (if not nil).
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base.String() + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var op *net.OpError
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial") {
			return fmt.Errorf("cannot reach the hub admin API at %s (is `hub serve` running? set --admin or HUB_ADMIN): %w", c.base, err)
		}
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, u, err)
	}
	if resp.StatusCode >= 300 {
		var eb hub.ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
			return &apiError{Status: resp.StatusCode, Code: eb.Code, Message: eb.Error}
		}
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &apiError{Status: resp.StatusCode, Code: "http", Message: msg}
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode response: %w", method, u, err)
		}
	}
	return nil
}

// get, post, patch and del are do with a method.
func (c *adminClient) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, http.MethodGet, path, nil, out)
}

func (c *adminClient) post(ctx context.Context, path string, in, out any) error {
	return c.do(ctx, http.MethodPost, path, in, out)
}

func (c *adminClient) patch(ctx context.Context, path string, in, out any) error {
	return c.do(ctx, http.MethodPatch, path, in, out)
}

func (c *adminClient) del(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodDelete, path, nil, nil)
}

// printJSON writes v indented, for --json output.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
