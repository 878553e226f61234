package plugin

import (
	"strconv"
	"unsafe"
)

// NumberField returns the number stored under name at the top level of the
// JSON object doc, without allocating: {"sensor":"s1","value":21.5} and
// "value" give 21.5. It reports false if doc is not an object, the field is
// missing or not a number. Nested values are skipped, not searched.
//
// Decoding a whole document with encoding/json allocates a lot, and
// allocation and reflection are the dominant costs of a Go guest (the Go
// runtime on wasm is an order of magnitude slower at both than natively), so
// per-record hot paths should use NumberField and Field instead.
func NumberField(doc []byte, name string) (float64, bool) {
	v, ok := Field(doc, name)
	if !ok || len(v) == 0 || !isNumberByte(v[0]) || v[0] == '+' || v[0] == 'e' || v[0] == 'E' || v[0] == '.' {
		return 0, false
	}
	f, err := strconv.ParseFloat(unsafe.String(&v[0], len(v)), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}

// Field returns the raw JSON value stored under name at the top level of the
// object doc (a sub-slice of doc: a string keeps its quotes), without
// allocating. Keys with escape sequences never match.
func Field(doc []byte, name string) ([]byte, bool) {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return nil, false
	}
	i++
	for {
		i = skipSpace(doc, i)
		if i >= len(doc) {
			return nil, false
		}
		if doc[i] == '}' {
			return nil, false
		}
		if doc[i] != '"' {
			return nil, false
		}
		end, escaped := scanString(doc, i)
		if end < 0 {
			return nil, false
		}
		key := doc[i+1 : end-1]
		i = skipSpace(doc, end)
		if i >= len(doc) || doc[i] != ':' {
			return nil, false
		}
		i = skipSpace(doc, i+1)
		start := i
		if i = skipValue(doc, i); i < 0 {
			return nil, false
		}
		if !escaped && string(key) == name {
			return doc[start:i], true
		}
		i = skipSpace(doc, i)
		if i >= len(doc) {
			return nil, false
		}
		switch doc[i] {
		case ',':
			i++
		case '}':
			return nil, false
		default:
			return nil, false
		}
	}
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the index after the string starting at b[i] == '"',
// and whether it holds escapes; -1 if unterminated.
func scanString(b []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return -1, escaped
}

// skipValue returns the index after the JSON value at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		end, _ := scanString(b, i)
		return end
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _ := scanString(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(b) && (isNumberByte(b[j]) || b[j] >= 'a' && b[j] <= 'z') {
		j++
	}
	if j == i {
		return -1
	}
	return j
}
