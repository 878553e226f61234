package plugins

import (
	"sync"
	"time"
)

// Level is the level of a plugin log line (the guest's log import levels).
type Level int

// Log levels.
const (
	LevelDebug Level = 0
	LevelInfo  Level = 1
	LevelWarn  Level = 2
	LevelError Level = 3
)

func (l Level) String() string {
	switch {
	case l <= LevelDebug:
		return "debug"
	case l == LevelInfo:
		return "info"
	case l == LevelWarn:
		return "warn"
	}
	return "error"
}

// MarshalText makes levels readable in JSON.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses a level name.
func (l *Level) UnmarshalText(b []byte) error {
	switch string(b) {
	case "debug":
		*l = LevelDebug
	case "info":
		*l = LevelInfo
	case "warn":
		*l = LevelWarn
	default:
		*l = LevelError
	}
	return nil
}

// LogLine is one line of a plugin's log: from the guest (log import) or
// from the host about the plugin (deploys, errors, pauses, dead letters).
type LogLine struct {
	Time    time.Time `json:"time"`
	Level   Level     `json:"level"`
	Input   string    `json:"input,omitempty"`
	Shard   int       `json:"shard"` // -1 when not about one shard
	Message string    `json:"message"`
}

// logRing keeps a plugin's last lines.
type logRing struct {
	mu    sync.Mutex
	lines []LogLine
	next  int
	full  bool
}

func newLogRing(n int) *logRing { return &logRing{lines: make([]LogLine, n)} }

func (r *logRing) add(level Level, input string, shard int, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = LogLine{Time: time.Now().UTC(), Level: level, Input: input, Shard: shard, Message: msg}
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

// last returns up to n lines, oldest first (n <= 0: all kept).
func (r *logRing) last(n int) []LogLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []LogLine
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	if n > 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
