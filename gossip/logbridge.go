package gossip

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// newLogLogger bridges memberlist's *log.Logger to slog. memberlist writes
// lines like "[WARN] memberlist: ...": the level prefix becomes the record's
// level, so a memberlist error is an slog error, not an info line.
func newLogLogger(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(levelHandler{l.Handler()}, slog.LevelInfo)
}

type levelHandler struct{ h slog.Handler }

// Enabled is asked with the bridge's fixed level, before the prefix is
// known; Handle filters on the real level.
func (l levelHandler) Enabled(context.Context, slog.Level) bool { return true }

func (l levelHandler) Handle(ctx context.Context, r slog.Record) error {
	msg := r.Message
	level := slog.LevelInfo
	for _, p := range []struct {
		prefix string
		level  slog.Level
	}{
		{"[DEBUG] ", slog.LevelDebug}, {"[INFO] ", slog.LevelInfo}, {"[WARN] ", slog.LevelWarn},
		{"[ERR] ", slog.LevelError}, {"[ERROR] ", slog.LevelError},
	} {
		if rest, ok := strings.CutPrefix(msg, p.prefix); ok {
			msg, level = rest, p.level
			break
		}
	}
	if !l.h.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, msg, r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return l.h.Handle(ctx, out)
}

func (l levelHandler) WithAttrs(as []slog.Attr) slog.Handler { return levelHandler{l.h.WithAttrs(as)} }
func (l levelHandler) WithGroup(name string) slog.Handler    { return levelHandler{l.h.WithGroup(name)} }
