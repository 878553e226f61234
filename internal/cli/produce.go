package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/recordjson"
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
	context                    *contextName
}

func addDataFlags(fs *flag.FlagSet) *dataFlags {
	return &dataFlags{
		addr:     fs.String("addr", "", "hub QUIC `HOST:PORT` (env HUB_ADDR, else the context's, default "+hub.DefaultQUICAddr+")"),
		ca:       fs.String("ca", "", "PEM `FILE` of certificates to trust (env HUB_CA, else the context's; default "+DefaultCAFile+" if it exists, else the system roots)"),
		insecure: fs.Bool("insecure", false, "do not verify the hub's certificate"),
		token:    fs.String("token", "", "bearer `TOKEN` (env HUB_TOKEN, else the context's)"),
		cert:     fs.String("cert", "", "client certificate `FILE` for mTLS (with --key-file)"),
		key:      fs.String("key-file", "", "client key `FILE` for mTLS"),
		context:  contextFlag(fs),
	}
}

// options resolves the flags, the environment, the selected context and
// the defaults, in that order.
func (f *dataFlags) options() (addr string, opts sdk.Options, err error) {
	hc, err := f.context.selected()
	if err != nil {
		return "", opts, err
	}
	addr = pick(*f.addr, "HUB_ADDR", hc.Addr, hub.DefaultQUICAddr)
	opts = sdk.Options{
		CAFile: pick(*f.ca, "HUB_CA", hc.CA, ""), Insecure: *f.insecure || hc.Insecure, Token: pick(*f.token, "HUB_TOKEN", hc.Token, ""),
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
		switch {
		case !strings.Contains(err.Error(), "certificate"):
		case opts.CAFile == "":
			return nil, fmt.Errorf("%w (a hub with a self-signed certificate: pass --ca DATA_DIR/%s, or --insecure)", err, hub.SelfSignedCertFile)
		default:
			return nil, fmt.Errorf("%w (the CA file %s does not vouch for this hub: pass --ca with its DATA_DIR/%s or the CA that signed its certificate, or --insecure)", err, opts.CAFile, hub.SelfSignedCertFile)
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

const produceNote = `
Input: one record a line, sent as it is read: not all or nothing. When a
line fails (no separator, bad JSON, too long, too large a record) the
command stops there and the lines before it are stored; the error names the
line, N, so that tail -n +N resumes from it. SIGINT or SIGTERM stops it
too, after the lines read are acknowledged (exit 130 or 143).

Without --key or --key-sep a line is a value with no key; with --key-sep a line without the separator is an error unless
--allow-keyless sends it as a value with no key. An empty value is sent as
an empty value; with --null as a tombstone (no value), which compaction
treats as a delete.

--format json reads what hub consume --format json prints, one object a
line: key or key_base64, value or value_base64 (neither: a tombstone),
headers, and time (absent: no producer time, unless --timestamp); stream,
shard, seq, ingest_time and origin are the hub's to assign and are ignored
(--shard places records). Any other field is an error.
`

func produce(ctx context.Context, args []string) error {
	fs := newFlags("produce", "produce STREAM [--file FILE] [--format line|json] [--key KEY | --key-sep SEP [--allow-keyless]] [--null] [--header K=V]... [--timestamp TIME] [--shard N] [--max-line BYTES] [--copies N]")
	usage := fs.Usage
	fs.Usage = func() { usage(); io.WriteString(stderr, produceNote) }
	df := addDataFlags(fs)
	file := fs.String("file", "", "read records from `FILE` instead of stdin (- is stdin)")
	format := fs.String("format", "line", "input `FORMAT`: line (a value, or key SEP value, a line) or json (what consume --format json prints)")
	key := fs.String("key", "", "`KEY` of every record (default: none, records spread over shards)")
	keySep := fs.String("key-sep", "", "split each line at the first `SEP` into key and value")
	keyless := fs.Bool("allow-keyless", false, "with --key-sep, send a line without the separator as a value with no key (default: an error)")
	null := fs.Bool("null", false, "send an empty value as a tombstone (no value) instead of an empty value")
	var headers headerFlags
	fs.Var(&headers, "header", "record header `K=V` (repeatable)")
	copies := fs.Int("copies", 0, "wait until `N` hubs (the one produced to included) hold each batch before counting it acknowledged (default: the stream's copies)")
	timestamp := fs.String("timestamp", "", "record time of every record, an RFC 3339 `TIME` (default: now, line by line; with --format json the line's time)")
	shard := &optShard{n: -1}
	fs.Var(shard, "shard", "send every record to shard `N` (default: by key hash, keyless records spread)")
	maxLine := fs.Int("max-line", 0, "longest accepted input line in `BYTES` (default: what the hub's max_record_bytes allows)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "stream NAME"); err != nil {
		return err
	}
	switch {
	case *key != "" && *keySep != "":
		return usagef("--key and --key-sep exclude each other")
	case *keyless && *keySep == "":
		return usagef("--allow-keyless goes with --key-sep")
	case *format != "line" && *format != "json":
		return usagef("invalid --format %q: want line or json", *format)
	case *format == "json" && (*key != "" || *keySep != "" || *null):
		return usagef("--format json takes keys and values from each line: --key, --key-sep and --null do not apply")
	}
	var fixedTime int64
	if *timestamp != "" {
		t, err := time.Parse(time.RFC3339Nano, *timestamp)
		if err != nil {
			return usagef("invalid --timestamp %q: want an RFC 3339 time such as 2026-05-01T12:00:00Z", *timestamp)
		}
		fixedTime = t.UnixNano()
	}
	in, inName := stdin, "stdin"
	if *file != "" && *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in, inName = f, *file
	}
	c, err := df.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if *copies < 0 {
		return usagef("invalid --copies %d: want 1 or more", *copies)
	}
	p, err := c.Producer(ctx, pos[0], sdk.ProducerOptions{Copies: *copies})
	if err != nil {
		return err
	}
	if shard.n >= 0 {
		// Shard numbers are ids, every one ever assigned (a reshard adds
		// ids; the producer's Shards() counts the open ones).
		info, err := c.Info(ctx, pos[0])
		if err != nil {
			p.Close(ctx)
			return err
		}
		if n := len(info.Shards); shard.n >= n {
			p.Close(ctx)
			return fmt.Errorf("stream %s has %d shard%s: no shard %d", pos[0], n, plural(n), shard.n)
		}
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
	// key separator and a CR LF; in JSON, escaped: up to 6 bytes a byte):
	// longer lines fail with a message naming the limit, and so do records
	// the producer refuses as too large.
	limit := p.MaxRecordBytes()
	if limit == 0 {
		limit = hub.DefaultMaxRecordBytes // a hub that does not announce it
	}
	// lineMax counts a line's bytes but its LF (a CR before it counts).
	defaultMax := limit + len(*keySep) + 1
	if *format == "json" {
		defaultMax = 6*limit + 64<<10
	}
	lineMax := *maxLine
	if lineMax <= 0 {
		lineMax = defaultMax
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, min(64<<10, lineMax+1)), lineMax+1)
	// Lines are read in a goroutine so that an interrupt stops the command
	// while stdin is idle (a blocked Read cannot be cancelled); what was read
	// before is still sent and acknowledged.
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		for sc.Scan() {
			select {
			case lines <- bytes.Clone(sc.Bytes()):
			case <-ctx.Done():
				return
			}
		}
	}()
	var readErr error
	lineNo, failLine := 0, 0 // failLine: the line readErr is about
	for {
		var line []byte
		var more bool
		select {
		case line, more = <-lines:
		case <-ctx.Done():
		}
		if !more {
			break
		}
		lineNo++
		var rec sdk.Record
		if *format == "json" {
			if rec, err = recordjson.Decode(line); err != nil {
				readErr, failLine = fmt.Errorf("%s line %d: %w", inName, lineNo, err), lineNo
				break
			}
			if rec.Time == 0 {
				rec.Time = fixedTime
			}
			rec.Headers = append(rec.Headers, headers...)
		} else {
			rec = sdk.Record{Time: fixedTime, Headers: headers}
			if rec.Time == 0 {
				rec.Time = time.Now().UnixNano()
			}
			switch {
			case *keySep != "":
				k, v, ok := bytes.Cut(line, []byte(*keySep))
				if !ok && !*keyless {
					readErr = fmt.Errorf("%s line %d: no key separator %q in it (--allow-keyless sends such lines without a key)", inName, lineNo, *keySep)
					failLine = lineNo
				}
				if ok {
					rec.Key, rec.Value = bytes.Clone(k), bytes.Clone(v)
				} else {
					rec.Value = bytes.Clone(k)
				}
			case *key != "":
				rec.Key, rec.Value = []byte(*key), bytes.Clone(line)
			default:
				rec.Value = bytes.Clone(line)
			}
			if readErr != nil {
				break
			}
			if rec.Value == nil {
				rec.Value = []byte{}
			}
			if *null && len(rec.Value) == 0 {
				rec.Value = nil
			}
		}
		if shard.n >= 0 {
			err = p.SendAsyncTo(ctx, shard.n, rec, cb)
		} else {
			err = p.SendAsync(ctx, rec, cb)
		}
		if err != nil {
			readErr, failLine = fmt.Errorf("%s line %d: %w", inName, lineNo, err), lineNo
			break
		}
	}
	switch {
	case readErr != nil:
	case ctx.Err() != nil:
		readErr = fmt.Errorf("%s after line %d: %w", inName, lineNo, context.Cause(ctx))
	}
	switch err := sc.Err(); {
	case readErr != nil:
	case errors.Is(err, bufio.ErrTooLong):
		readErr = fmt.Errorf("%s line %d: longer than %d bytes", inName, lineNo+1, lineMax)
		if lineMax < defaultMax {
			// Only a lowered --max-line can be raised to any avail.
			readErr = fmt.Errorf("%w, the --max-line: raise it (up to %d, what the hub's max_record_bytes %d allows)", readErr, defaultMax, limit)
		} else {
			readErr = fmt.Errorf("%w: no record made of it fits the hub's max_record_bytes %d", readErr, limit)
		}
		failLine = lineNo + 1
	case err != nil:
		readErr = fmt.Errorf("read %s: %w", inName, err)
	}
	// Wait for the acknowledgements even after an interrupt, briefly.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	closeErr := p.Close(cctx)
	n := acked.Load()
	fmt.Fprintf(stderr, "acked %d record%s\n", n, plural(int(n)))
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d record%s failed: %w", n, plural(int(n)), *firstErr.Load())
	}
	if readErr != nil && failLine > 0 && closeErr == nil {
		// Not all or nothing: say what stands, so that a retry can resume.
		switch failLine {
		case 1:
			return fmt.Errorf("%w (nothing was sent)", readErr)
		case 2:
			return fmt.Errorf("%w (line 1 is stored; resume with tail -n +2)", readErr)
		}
		return fmt.Errorf("%w (lines 1 to %d are stored; resume with tail -n +%d)", readErr, failLine-1, failLine)
	}
	if readErr != nil {
		return readErr
	}
	return closeErr
}

// optShard is an optional shard number; n < 0 when not given.
type optShard struct{ n int }

func (o *optShard) String() string { return "" }
func (o *optShard) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return fmt.Errorf("shard %q: want a shard number", v)
	}
	o.n = n
	return nil
}
