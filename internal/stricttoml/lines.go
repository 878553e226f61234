package stricttoml

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// lineIndex maps key paths as the decoder names them ("hub.name",
// "stream[1].shards") to the line that defines them. The TOML decoder does
// not give positions for unknown keys or for keys in arrays of tables, so the
// file is scanned for headers and keys.
type lineIndex map[string]int

// find returns the line of key, or of its closest ancestor defined in the
// file, or 0.
func (ix lineIndex) find(key string) int {
	for k := key; k != ""; {
		if n, ok := ix[k]; ok {
			return n
		}
		if n, ok := ix[stripIndexes(k)]; ok {
			return n
		}
		if n, ok := ix[k+"[0]"]; ok { // an array of tables, named as a whole
			return n
		}
		i := lastSep(k, ".[")
		if i <= 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// indexLines scans a TOML document for table headers and keys. It follows
// strings, multi-line strings and multi-line arrays well enough not to
// mistake their contents for keys; the document has already been parsed, so
// it need not detect errors.
func indexLines(doc string) lineIndex {
	ix := lineIndex{}
	counts := map[string]int{} // array-of-tables path (no indexes) → elements seen
	table := ""
	var sc valueScanner
	// prefix renders header parts as a path, indexing parts that are arrays
	// of tables with their current element.
	prefix := func(parts []string) string {
		var b strings.Builder
		for i, p := range parts {
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(quoteKey(p))
			if n := counts[joinParts(parts[:i+1])]; n > 0 {
				fmt.Fprintf(&b, "[%d]", n-1)
			}
		}
		return b.String()
	}
	record := func(path string, line int) {
		if _, ok := ix[path]; !ok {
			ix[path] = line
		}
	}
	for n, line := range strings.Split(doc, "\n") {
		ln := n + 1
		if sc.open() {
			sc.scan(line)
			continue
		}
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#':
			continue
		case strings.HasPrefix(t, "[["):
			end := closingBracket(t[2:])
			parts := splitKey(t[2 : 2+end])
			counts[joinParts(parts)]++
			table = prefix(parts)
			record(table, ln)
			continue
		case t[0] == '[':
			end := closingBracket(t[1:])
			table = prefix(splitKey(t[1 : 1+end]))
			record(table, ln)
			continue
		}
		eq := indexOutsideQuotes(t, '=')
		if eq < 0 {
			continue
		}
		parts := splitKey(t[:eq])
		for i := range parts {
			record(joinKey(table, joinParts(parts[:i+1])), ln)
		}
		sc.scan(t[eq+1:])
	}
	return ix
}

// closingBracket returns the index of the header's closing ']'.
func closingBracket(s string) int {
	if i := indexOutsideQuotes(s, ']'); i >= 0 {
		return i
	}
	return len(s)
}

func indexOutsideQuotes(s string, c byte) int {
	var q byte
	for i := 0; i < len(s); i++ {
		switch {
		case q != 0:
			if s[i] == '\\' && q == '"' {
				i++
			} else if s[i] == q {
				q = 0
			}
		case s[i] == '"' || s[i] == '\'':
			q = s[i]
		case s[i] == c:
			return i
		}
	}
	return -1
}

// joinParts renders unquoted key parts as a dotted path.
func joinParts(parts []string) string { return toml.Key(parts).String() }

// splitKey splits a dotted TOML key, unquoting quoted parts.
func splitKey(s string) []string {
	var parts []string
	for {
		i := indexOutsideQuotes(s, '.')
		p := s
		if i >= 0 {
			p = s[:i]
		}
		p = strings.TrimSpace(p)
		if len(p) >= 2 && (p[0] == '"' || p[0] == '\'') {
			if u, err := strconv.Unquote(`"` + p[1:len(p)-1] + `"`); err == nil {
				p = u
			} else {
				p = p[1 : len(p)-1]
			}
		}
		parts = append(parts, p)
		if i < 0 {
			return parts
		}
		s = s[i+1:]
	}
}

// valueScanner follows the parts of a value that may span lines: arrays,
// inline tables (within a line) and multi-line strings.
type valueScanner struct {
	depth int    // open '[' and '{'
	multi string // `"""` or `'''` while inside a multi-line string
}

func (v *valueScanner) open() bool { return v.depth > 0 || v.multi != "" }

func (v *valueScanner) scan(s string) {
	for i := 0; i < len(s); i++ {
		if v.multi != "" {
			j := strings.Index(s[i:], v.multi)
			if j < 0 {
				return
			}
			i += j + 2
			v.multi = ""
			continue
		}
		switch c := s[i]; c {
		case '#':
			return
		case '[', '{':
			v.depth++
		case ']', '}':
			if v.depth > 0 {
				v.depth--
			}
		case '"', '\'':
			if strings.HasPrefix(s[i:], strings.Repeat(string(c), 3)) {
				v.multi = strings.Repeat(string(c), 3)
				i += 2
				continue
			}
			for i++; i < len(s) && s[i] != c; i++ {
				if c == '"' && s[i] == '\\' {
					i++
				}
			}
		}
	}
}
