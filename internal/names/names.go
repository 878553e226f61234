package names

import (
	"errors"
	"fmt"
	"regexp"
)

// MaxLength is the longest valid name, in bytes.
const MaxLength = 128

// ErrInvalid: a name outside the documented charset or length.
var ErrInvalid = errors.New("invalid name")

// charset: safe as a file name on every platform and in URLs without
// escaping.
var charset = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Validate reports whether name is valid: 1 to MaxLength characters from
// [A-Za-z0-9._-], starting with a letter or digit. Its error wraps
// ErrInvalid.
func Validate(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalid)
	case len(name) > MaxLength:
		return fmt.Errorf("%w: %q is %d characters (max %d)", ErrInvalid, name[:16]+"...", len(name), MaxLength)
	case !charset.MatchString(name):
		return fmt.Errorf("%w: %q (use letters, digits, '.', '_' and '-', starting with a letter or digit)", ErrInvalid, name)
	}
	return nil
}
