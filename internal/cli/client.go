package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

// adminFlags are the admin API connection flags; resolve them with
// options and newAdminClient.
type adminFlags struct {
	url, token, ca *string
	insecure       *bool
	context        *contextName
}

// addAdminFlags adds --admin, --token, --ca, --insecure and --context to
// fs. A command that also talks to the data plane (whose flags take those
// names) passes prefix "admin-": --admin-token, --admin-ca, --admin-insecure.
func addAdminFlags(fs *flag.FlagSet, prefix string) *adminFlags {
	return &adminFlags{
		url:      fs.String("admin", "", "admin API `URL` (env HUB_ADMIN, else the context's, default "+DefaultAdminURL+"; https://... for an [admin] tls hub)"),
		token:    fs.String(prefix+"token", "", "admin `TOKEN` of an [[admin.token]] (env HUB_ADMIN_TOKEN, else the context's)"),
		ca:       fs.String(prefix+"ca", "", "PEM `FILE` of certificates to trust for an https admin URL (env HUB_ADMIN_CA, else the context's; default "+DefaultCAFile+" if it exists, else the system roots)"),
		insecure: fs.Bool(prefix+"insecure", false, "do not verify the admin API's certificate"),
		context:  contextFlag(fs),
	}
}

// adminOptions is how to reach the admin API. err is a context that could
// not be resolved; newAdminClient returns it.
type adminOptions struct {
	URL, Token, CAFile string
	Insecure           bool
	err                error
}

// options resolves the flags, the environment and the selected context, in
// that order.
func (f *adminFlags) options() adminOptions {
	hc, err := f.context.selected()
	return adminOptions{URL: pick(*f.url, "HUB_ADMIN", hc.Admin, ""), Token: pick(*f.token, "HUB_ADMIN_TOKEN", hc.AdminToken, ""),
		CAFile: pick(*f.ca, "HUB_ADMIN_CA", hc.AdminCA, ""), Insecure: *f.insecure || hc.AdminInsecure, err: err}
}

// adminCommand is the prelude of a management command: it adds the admin
// flags to fs, parses args, checks that there are n positional arguments
// (named names in the error) and returns a client for the admin API.
func adminCommand(fs *flag.FlagSet, args []string, n int, names string) (*adminClient, []string, error) {
	admin := addAdminFlags(fs, "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, nil, err
	}
	if err := wantArgs(pos, n, names); err != nil {
		return nil, nil, err
	}
	c, err := newAdminClient(admin.options())
	return c, pos, err
}

// adminClient calls the hub's admin API, turning its JSON errors into
// *apiError with the hub's message and code.
type adminClient struct {
	base  *url.URL
	http  *http.Client
	token string
}

// newAdminClient resolves the admin URL (o.URL, else DefaultAdminURL; a
// bare host:port means http) and, for https, the certificates to trust:
// o.CAFile, else DefaultCAFile if it exists (a local hub's self-signed
// certificate), else the system roots.
func newAdminClient(o adminOptions) (*adminClient, error) {
	if o.err != nil {
		return nil, o.err
	}
	raw := o.URL
	if raw == "" {
		raw = DefaultAdminURL
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usagef("invalid admin URL %q: want http://HOST:PORT or https://HOST:PORT", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if u.Scheme == "https" {
		tc := &tls.Config{InsecureSkipVerify: o.Insecure}
		ca := o.CAFile
		if ca == "" && !o.Insecure {
			if _, err := os.Stat(DefaultCAFile); err == nil {
				ca = DefaultCAFile
			}
		}
		if ca != "" && !o.Insecure {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("admin CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("admin CA %s: no PEM certificate in it", ca)
			}
			tc.RootCAs = pool
		}
		tr.TLSClientConfig = tc
	}
	return &adminClient{base: u, http: &http.Client{Timeout: time.Minute, Transport: tr}, token: o.Token}, nil
}

// newRequest builds a request to the admin API with the client's headers:
// the token, and HeaderAdminClient, which tells the hub the request comes
// from a program and not from a cross-site form.
func (c *adminClient) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := c.base.String() + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u, err)
	}
	req.Header.Set(hub.HeaderAdminClient, "cli")
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// transportError explains a failed request.
func (c *adminClient) transportError(ctx context.Context, method, u string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var op *net.OpError
	var uerr x509.UnknownAuthorityError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &op) && op.Op == "dial"):
		return fmt.Errorf("cannot reach the hub admin API at %s (is `hub serve` running? set --admin or HUB_ADMIN): %w", c.base, err)
	case errors.As(err, &uerr), strings.Contains(err.Error(), "certificate"):
		return fmt.Errorf("%s %s: %w (a hub with a self-signed certificate: pass --ca DATA_DIR/%s, or --insecure)", method, u, err, hub.SelfSignedCertFile)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%s %s: %w (the admin API serves plain HTTP: use --admin http://%s)", method, u, err, c.base.Host)
	}
	return fmt.Errorf("%s %s: %w", method, u, err)
}

// responseError turns an error response into *apiError.
func (c *adminClient) responseError(status int, data []byte) error {
	var eb hub.ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		return &apiError{Status: status, Code: eb.Code, Message: eb.Error}
	}
	msg := strings.TrimSpace(string(data))
	if strings.Contains(msg, "HTTP request to an HTTPS server") {
		msg += fmt.Sprintf(" (the admin API serves HTTPS: use --admin https://%s)", c.base.Host)
	}
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &apiError{Status: status, Code: "http", Message: msg}
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
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	u := req.URL.String()
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(ctx, method, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, u, err)
	}
	if resp.StatusCode >= 300 {
		return c.responseError(resp.StatusCode, data)
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

// jsonFlag adds --json, which means the same in every command: print the
// result as indented JSON (the admin API's document, where the result
// comes from it) instead of text.
func jsonFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("json", false, "print the result as JSON (the admin API's document) instead of text")
}

// printJSON writes v indented, for --json output.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
