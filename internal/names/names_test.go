package names

import (
	"errors"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		ok   bool
	}{
		{"simple", "sensors", true},
		{"all classes", "a-B_9.x", true},
		{"digit first", "9lives", true},
		{"longest", strings.Repeat("a", MaxLength), true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", MaxLength+1), false},
		{"dot first", ".hidden", false},
		{"dotdot", "..", false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"non-ASCII", "caf\u00e9", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("Validate(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate(%q) = %v, does not wrap ErrInvalid", tc.in, err)
			}
		})
	}
}
