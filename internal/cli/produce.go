package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/sdk"
)

func init() {
	register("produce", "send stdin lines as records to a stream", produce)
}

// DefaultCAFile is the certificate a hub started with no [tls] settings
// generates in its default data directory; the data-plane commands trust it
// without --ca when it exists, so a local hub works with no flags.
var DefaultCAFile = filepath.Join(hub.DefaultDataDir, hub.SelfSignedCertFile)

// dataFlags are the connection flags of the data-plane commands.
type dataFlags struct {
	addr, ca, token, cert, key *string
	insecure                   *bool
}

func addDataFlags(fs *flag.FlagSet) *dataFlags {
	return &dataFlags{
		addr:     fs.String("addr", "", "hub QUIC `HOST:PORT` (env HUB_ADDR, default "+hub.DefaultQUICAddr+")"),
		ca:       fs.String("ca", "", "PEM `FILE` of certificates to trust (env HUB_CA; default "+DefaultCAFile+" if it exists, else the system roots)"),
		insecure: fs.Bool("insecure", false, "do not verify the hub's certificate"),
		token:    fs.String("token", "", "bearer `TOKEN` (env HUB_TOKEN)"),
		cert:     fs.String("cert", "", "client certificate `FILE` for mTLS (with --key)"),
		key:      fs.String("key-file", "", "client key `FILE` for mTLS"),
	}
}

func envOr(v, env, def string) string {
	if v != "" {
		return v
	}
	if e := os.Getenv(env); e != "" {
		return e
	}
	return def
}

// options resolves the flags, environment and defaults.
func (f *dataFlags) options() (addr string, opts sdk.Options, err error) {
	addr = envOr(*f.addr, "HUB_ADDR", hub.DefaultQUICAddr)
	opts = sdk.Options{
		CAFile: envOr(*f.ca, "HUB_CA", ""), Insecure: *f.insecure, Token: envOr(*f.token, "HUB_TOKEN", ""),
		CertFile: *f.cert, KeyFile: *f.key,
	}
	if opts.CAFile == "" && !opts.Insecure {
		if _, err := os.Stat(DefaultCAFile); err == nil {
			opts.CAFile = DefaultCAFile
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", opts, err
		}
	}
	if (*f.cert == "") != (*f.key == "") {
		return "", opts, usagef("--cert and --key-file go together")
	}
	return addr, opts, nil
}

func (f *dataFlags) dial(ctx context.Context) (*sdk.Client, error) {
	addr, opts, err := f.options()
	if err != nil {
		return nil, err
	}
	c, err := sdk.Dial(ctx, addr, opts)
	if err != nil {
		if strings.Contains(err.Error(), "certificate") && opts.CAFile == "" {
			return nil, fmt.Errorf("%w\n(a hub with a self-signed certificate: pass --ca DATA_DIR/%s, or --insecure)", err, hub.SelfSignedCertFile)
		}
		return nil, err
	}
	return c, nil
}

// headerFlags collects repeated --header K=V.
type headerFlags []sdk.Header

func (h *headerFlags) String() string { return "" }
func (h *headerFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("header %q: want KEY=VALUE", v)
	}
	*h = append(*h, sdk.Header{Key: k, Value: []byte(val)})
	return nil
}

func produce(ctx context.Context, args []string) error {
	fs := newFlags("produce", "produce STREAM [--key K | --key-sep SEP] [--header K=V]... [--addr HOST:PORT]")
	df := addDataFlags(fs)
	key := fs.String("key", "", "`KEY` of every record (default: none, records spread over shards)")
	keySep := fs.String("key-sep", "", "split each line at the first `SEP` into key and value")
	var headers headerFlags
	fs.Var(&headers, "header", "record header `K=V` (repeatable)")
	timestamp := fs.String("timestamp", "", "record time of every record, an RFC 3339 `TIME` (default: now, line by line)")
	maxLine := fs.Int("max-line", 0, "longest accepted input line in `BYTES` (default: what the hub's max_record_bytes allows)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "stream NAME"); err != nil {
		return err
	}
	if *key != "" && *keySep != "" {
		return usagef("--key and --key-sep are exclusive")
	}
	var fixedTime int64
	if *timestamp != "" {
		t, err := time.Parse(time.RFC3339Nano, *timestamp)
		if err != nil {
			return usagef("invalid --timestamp %q: want an RFC 3339 time such as 2026-05-01T12:00:00Z", *timestamp)
		}
		fixedTime = t.UnixNano()
	}
	c, err := df.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.Producer(ctx, pos[0], sdk.ProducerOptions{})
	if err != nil {
		return err
	}
	var acked, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	cb := func(_ sdk.Position, err error) {
		if err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, &err)
			return
		}
		acked.Add(1)
	}
	// A line may be as long as the largest record the hub stores (plus a
	// key separator and a CR LF): longer lines fail with a message naming
	// the limit, and so do records the producer refuses as too large.
	limit := p.MaxRecordBytes()
	if limit == 0 {
		limit = hub.DefaultMaxRecordBytes // a hub that does not announce it
	}
	lineMax := *maxLine
	if lineMax <= 0 {
		lineMax = limit + len(*keySep) + 2
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, min(64<<10, lineMax)), lineMax)
	var readErr error
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := sc.Bytes()
		rec := sdk.Record{Time: fixedTime, Headers: headers}
		if rec.Time == 0 {
			rec.Time = time.Now().UnixNano()
		}
		switch {
		case *keySep != "":
			k, v, ok := strings.Cut(string(line), *keySep)
			if ok {
				rec.Key, rec.Value = []byte(k), []byte(v)
			} else {
				rec.Value = []byte(k)
			}
		case *key != "":
			rec.Key, rec.Value = []byte(*key), append([]byte(nil), line...)
		default:
			rec.Value = append([]byte(nil), line...)
		}
		if err := p.SendAsync(ctx, rec, cb); err != nil {
			readErr = fmt.Errorf("line %d: %w", lineNo, err)
			break
		}
	}
	switch err := sc.Err(); {
	case readErr != nil:
	case errors.Is(err, bufio.ErrTooLong):
		readErr = fmt.Errorf("line %d: longer than %d bytes (records are limited to the hub's max_record_bytes %d; --max-line)", lineNo+1, lineMax, limit)
	case err != nil:
		readErr = fmt.Errorf("read stdin: %w", err)
	}
	// Wait for the acknowledgements even after an interrupt, briefly.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	closeErr := p.Close(cctx)
	fmt.Fprintf(stderr, "acked %d records\n", acked.Load())
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d records failed: %w", n, *firstErr.Load())
	}
	if readErr != nil {
		return readErr
	}
	return closeErr
}
