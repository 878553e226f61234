package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Store is a directory of streams. It is safe for concurrent use.
type Store struct {
	cfg    Config
	logger *slog.Logger
	lock   *dirLock

	noSpace noSpaceLog

	mu      sync.RWMutex // guards streams and closed
	streams map[string]*Stream
	closed  bool

	// The wall clock and Ticks at open: ageNow's anchor.
	openWall, openTicks time.Time
}

// ageNow is the time that ages are measured against: the wall clock, but
// never later than the wall clock at open plus the elapsed time since (by
// Ticks, which wall-clock steps do not move). A forward step of the wall
// clock therefore ages nothing: records are deleted only after they were
// really held for their retention; a backward step delays expiry. Ingest
// times still follow the wall clock (never going back within a shard), so
// records ingested after a forward step are kept longer, by up to the
// step, until the next start anchors ageNow to the new wall clock.
//
// Both sides are wall readings (Round(0) drops time.Now's monotonic
// reading, which Before would otherwise compare and so miss the step).
func (s *Store) ageNow() time.Time {
	wall := s.cfg.Now().Round(0)
	if held := s.openWall.Add(s.cfg.Ticks().Sub(s.openTicks)); held.Before(wall) {
		return held
	}
	return wall
}

// Open opens (creating if needed) the store in cfg.Dir and every stream in
// it. It fails fast with ErrLocked if another process holds the directory, and
// with a *CorruptError naming the file if a stream file is damaged: it never
// truncates or recreates a file it cannot read.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
		if cfg.Ticks == nil {
			cfg.Ticks = time.Now
		}
	}
	if cfg.Ticks == nil {
		cfg.Ticks = cfg.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "streams"), 0o755); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, logger: cfg.Logger, lock: lock, streams: map[string]*Stream{},
		openWall: cfg.Now().Round(0), openTicks: cfg.Ticks()}
	entries, err := os.ReadDir(filepath.Join(cfg.Dir, "streams"))
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("store: open %s: %w", cfg.Dir, err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".db")
		if !ok || e.IsDir() {
			continue
		}
		if ValidateName(name) != nil {
			s.logger.Warn("store: ignoring file with invalid stream name", "file", e.Name())
			continue
		}
		st, err := openStream(s, name, nil)
		if errors.Is(err, errInterruptedCreate) {
			path := s.streamPath(name)
			s.logger.Warn("store: removing the empty file of a stream whose creation was interrupted", "file", path)
			if err := os.Remove(path); err != nil {
				s.Close()
				return nil, fmt.Errorf("store: open %s: %w", path, err)
			}
			continue
		}
		if err != nil {
			s.Close()
			return nil, err
		}
		s.streams[name] = st
	}
	s.logger.Info("store opened", "dir", cfg.Dir, "streams", len(s.streams))
	return s, nil
}

// Config returns the store's configuration.
func (s *Store) Config() Config { return s.cfg }

// Close closes every stream and releases the directory. It waits for queued
// appends to finish. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	streams := s.streams
	s.streams = map[string]*Stream{}
	s.mu.Unlock()
	var errs []error
	for _, st := range streams {
		errs = append(errs, st.close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.release())
	}
	return errors.Join(errs...)
}

// CreateStream creates a stream. Creating a stream that exists with the same
// definition returns it (so declaring streams in config is idempotent); with
// a different shard count it fails with ErrStreamExists.
func (s *Store) CreateStream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	return s.createStream(ctx, cfg, false)
}

// CreateNewStream creates a stream and fails with ErrStreamExists if the name
// is taken, whatever its definition: an API's "create" that must not succeed
// twice, even for two concurrent callers.
func (s *Store) CreateNewStream(ctx context.Context, cfg StreamConfig) (*Stream, error) {
	return s.createStream(ctx, cfg, true)
}

func (s *Store) createStream(ctx context.Context, cfg StreamConfig, exclusive bool) (*Stream, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store: create stream: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if st, ok := s.streams[cfg.Name]; ok {
		if exclusive {
			return nil, fmt.Errorf("store: create stream %q: %w", cfg.Name, ErrStreamExists)
		}
		if st.Config().Shards != cfg.Shards {
			return nil, fmt.Errorf("store: create stream %q: %w with %d shards", cfg.Name, ErrStreamExists, st.Config().Shards)
		}
		return st, nil
	}
	st, err := openStream(s, cfg.Name, &cfg)
	if err != nil {
		return nil, err
	}
	s.streams[cfg.Name] = st
	s.logger.Info("stream created", "stream", cfg.Name, "shards", cfg.Shards)
	return st, nil
}

// UpdateStream changes a stream's mutable settings (retention, max bytes,
// compaction, tombstone retention, meta). The shard count cannot change.
func (s *Store) UpdateStream(ctx context.Context, cfg StreamConfig) error {
	st, err := s.Stream(cfg.Name)
	if err != nil {
		return err
	}
	return st.update(ctx, cfg.withDefaults())
}

// Stream returns the named stream or an error wrapping ErrStreamNotFound.
func (s *Store) Stream(name string) (*Stream, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	st, ok := s.streams[name]
	if !ok {
		return nil, fmt.Errorf("store: stream %q: %w", name, ErrStreamNotFound)
	}
	return st, nil
}

// Streams returns the open streams sorted by name.
func (s *Store) Streams() []*Stream {
	s.mu.RLock()
	out := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		out = append(out, st)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Stream) int { return strings.Compare(a.name, b.name) })
	return out
}

// DeleteStream closes the stream and removes its file and every record in
// it. Appends waiting on it fail with ErrClosed.
func (s *Store) DeleteStream(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	st, ok := s.streams[name]
	if ok {
		delete(s.streams, name)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("store: delete stream %q: %w", name, ErrStreamNotFound)
	}
	if err := st.close(); err != nil {
		s.logger.Warn("store: closing deleted stream", "stream", name, "err", err)
	}
	if err := os.Remove(st.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: delete stream %q: %w", name, err)
	}
	s.logger.Info("stream deleted", "stream", name)
	return nil
}

func (s *Store) streamPath(name string) string {
	return filepath.Join(s.cfg.Dir, "streams", name+".db")
}
