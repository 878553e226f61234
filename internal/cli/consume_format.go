package cli

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/edgehub/edgehub/sdk"
)

// printer writes consumed records in a --format: value, json or a string
// of %-verbs (consumeNote lists them).
type printer struct {
	w     *bufio.Writer
	enc   *json.Encoder // json
	parts []formatPart  // a format string; nil for value and json
}

// formatPart is a literal or, when verb != 0, a verb.
type formatPart struct {
	lit  string
	verb byte
}

const formatVerbs = "sSvkKtpoTIhO"

// parseFormat compiles a format string. One with no verb is refused: a
// mistyped format name ("jsno") would otherwise print itself per record.
func parseFormat(f string) ([]formatPart, error) {
	var parts []formatPart
	var lit strings.Builder
	verbs := 0
	for i := 0; i < len(f); i++ {
		switch c := f[i]; {
		case c == '%' && i+1 < len(f) && f[i+1] == '%':
			lit.WriteByte('%')
			i++
		case c == '%' && i+1 < len(f) && strings.IndexByte(formatVerbs, f[i+1]) >= 0:
			if lit.Len() > 0 {
				parts = append(parts, formatPart{lit: lit.String()})
				lit.Reset()
			}
			parts = append(parts, formatPart{verb: f[i+1]})
			verbs++
			i++
		case c == '%':
			if i+1 == len(f) {
				return nil, usagef("invalid --format %q: it ends with a lone %%", f)
			}
			return nil, usagef("invalid --format %q: unknown verb %%%c (see hub consume --help)", f, f[i+1])
		case c == '\\' && i+1 < len(f) && strings.IndexByte(`ntr\`, f[i+1]) >= 0:
			lit.WriteByte(map[byte]byte{'n': '\n', 't': '\t', 'r': '\r', '\\': '\\'}[f[i+1]])
			i++
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		parts = append(parts, formatPart{lit: lit.String()})
	}
	if verbs == 0 {
		return nil, usagef("invalid --format %q: want value, json or a format with %%-verbs such as '%%k %%s\\n' (see hub consume --help)", f)
	}
	return parts, nil
}

func newPrinter(w io.Writer, format string) (*printer, error) {
	p := &printer{w: bufio.NewWriterSize(w, 64<<10)}
	switch format {
	case "value":
	case "json":
		p.enc = json.NewEncoder(p.w)
		p.enc.SetEscapeHTML(false)
	default:
		parts, err := parseFormat(format)
		if err != nil {
			return nil, err
		}
		p.parts = parts
	}
	return p, nil
}

func (p *printer) buffered() int { return p.w.Buffered() }
func (p *printer) flush() error  { return p.w.Flush() }

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func (p *printer) print(m sdk.Message) error {
	r := &m.Record
	switch {
	case p.enc != nil:
		return p.enc.Encode(toJSON(m))
	case p.parts == nil:
		p.w.Write(r.Value)
		return p.w.WriteByte('\n')
	}
	length := func(b []byte) string {
		if b == nil {
			return "-1"
		}
		return strconv.Itoa(len(b))
	}
	for _, part := range p.parts {
		switch part.verb {
		case 0:
			p.w.WriteString(part.lit)
		case 's', 'v':
			p.w.Write(r.Value)
		case 'S':
			p.w.WriteString(length(r.Value))
		case 'k':
			p.w.Write(r.Key)
		case 'K':
			p.w.WriteString(length(r.Key))
		case 't':
			p.w.WriteString(m.Stream)
		case 'p':
			p.w.WriteString(strconv.Itoa(m.Shard))
		case 'o':
			p.w.WriteString(strconv.FormatUint(r.Seq, 10))
		case 'T':
			p.w.WriteString(rfc3339(recordTime(r)))
		case 'I':
			p.w.WriteString(rfc3339(r.IngestTime))
		case 'h':
			for i, h := range r.Headers {
				if i > 0 {
					p.w.WriteByte(',')
				}
				p.w.WriteString(h.Key)
				p.w.WriteByte('=')
				p.w.Write(h.Value)
			}
		case 'O':
			if r.Origin.IsLocal() {
				p.w.WriteByte('-')
			} else {
				fmt.Fprintf(p.w, "%s/%d/%d", r.Origin.Hub, r.Origin.Shard, r.Origin.Seq)
			}
		}
	}
	return nil
}
