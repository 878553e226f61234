package hub

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgehub/edgehub/internal/atomicfile"
	"github.com/edgehub/edgehub/store"
)

// IdentityFile records, relative to the data directory, the name of the hub
// that owns the directory. It is written on first start.
//
// The hub name is the origin of every local record once it leaves the hub
// (replication, plugin outputs): peers deduplicate by (origin hub, shard,
// sequence). Started under a new name, a hub would present the same records
// under a second origin and peers would store them twice, so a hub refuses
// to start when [hub] name differs from this file, unless told to adopt the
// new name (Config.Rename, hub serve --rename).
const IdentityFile = "hub.id"

// checkIdentity compares the configured name with the one recorded in the
// data directory, recording it on first start. It runs after the store is
// open, so the data directory's lock is held and no other process races it.
func (h *Hub) checkIdentity() error {
	dir := h.cfg.Hub.DataDir
	path := filepath.Join(dir, IdentityFile)
	name := h.cfg.Hub.Name
	stored, err := readIdentity(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := atomicfile.WriteFile(path, []byte(name+"\n"), 0o644); err != nil {
			return fmt.Errorf("hub: record identity: %w", err)
		}
		h.logger.Info("recorded hub identity", "name", name, "file", path)
		return nil
	case err != nil:
		return err
	case stored == name:
		return nil
	case h.cfg.Rename:
		if err := atomicfile.WriteFile(path, []byte(name+"\n"), 0o644); err != nil {
			return fmt.Errorf("hub: rename from %q to %q: %w", stored, name, err)
		}
		h.logger.Warn("hub renamed: records of this hub now carry the new origin name; federated peers that "+
			"already hold them under the old name will store them again", "old", stored, "new", name, "file", path)
		return nil
	}
	return fmt.Errorf("hub: data directory %s belongs to hub %q (recorded in %s) but [hub] name is %q; "+
		"records made here carry origin %q, and under a new name federated peers would store them a second time. "+
		"Set [hub] name = %q (or --name %s), or, to adopt %q knowingly, start once with --rename (docs/config.md): %w",
		dir, stored, path, name, stored, stored, stored, name, ErrNameChanged)
}

// readIdentity reads and checks IdentityFile.
func readIdentity(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("hub: read identity: %w", err)
	}
	name := strings.TrimSuffix(string(b), "\n")
	if err := store.ValidateName(name); err != nil {
		return "", fmt.Errorf("hub: identity file %s is damaged (it should hold the hub's name on one line; "+
			"write the hub's name into it, or delete it to adopt [hub] name): %w", path, err)
	}
	return name, nil
}
