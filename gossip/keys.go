package gossip

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/memberlist"
)

// LoadKeyFile reads a secret key file: one base64 (standard encoding) key of
// 16, 24 or 32 bytes (AES-128/192/256-GCM) per line; blank lines and lines
// starting with '#' are ignored. The first key is primary: it encrypts what
// we send. Every key decrypts what we receive.
//
// Rotation without downtime, on every hub in turn (each step everywhere
// before the next):
//  1. append the new key as a second line: hubs now accept it;
//  2. move the new key to the first line: hubs now send with it, and still
//     accept the old one from hubs not yet switched;
//  3. delete the old key's line.
//
// A hub notices the change within Config.KeyCheckInterval, or at once on
// ReloadKeys (hub serve calls it on SIGHUP).
func LoadKeyFile(path string) (keys [][]byte, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKeyFile, err)
	}
	return parseKeys(path, raw)
}

func parseKeys(path string, raw []byte) ([][]byte, error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: not base64: %w", ErrBadKeyFile, path, line, err)
		}
		if err := memberlist.ValidateKey(k); err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %w", ErrBadKeyFile, path, line, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadKeyFile, path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %s: no key", ErrBadKeyFile, path)
	}
	return keys, nil
}

// installKeys makes ring hold exactly keys, keys[0] primary. The order of
// steps never leaves the ring without a key a peer may be using: add all,
// switch primary, then remove the rest.
func installKeys(ring *memberlist.Keyring, keys [][]byte) error {
	for _, k := range keys {
		if err := ring.AddKey(k); err != nil {
			return err
		}
	}
	if err := ring.UseKey(keys[0]); err != nil {
		return err
	}
	for _, old := range ring.GetKeys() {
		keep := false
		for _, k := range keys {
			keep = keep || bytes.Equal(k, old)
		}
		if !keep {
			if err := ring.RemoveKey(old); err != nil {
				return err
			}
		}
	}
	return nil
}
