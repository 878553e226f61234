package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/edgehub/edgehub/hub"
)

func init() {
	register("serve", "run a hub (no config needed: data in ./hub-data, loopback ports)", serve)
}

func serve(ctx context.Context, args []string) error {
	fs := newFlags("serve", "serve [--config FILE] [--data DIR] [--quic-listen ADDR] [--admin-listen ADDR] [--name NAME] [--rename] [--log-level LEVEL]")
	configFile := fs.String("config", "", "hub.toml `FILE` (default: built-in defaults, see hub.toml in the repository)")
	dataDir := fs.String("data", "", "data `DIR`, overriding [hub] data_dir (default ./hub-data)")
	quicAddr := fs.String("quic-listen", "", "QUIC `ADDR`ess, overriding [listen] quic (default "+hub.DefaultQUICAddr+")")
	adminAddr := fs.String("admin-listen", "", "admin API `ADDR`ess, overriding [listen] admin (default "+hub.DefaultAdminAddr+")")
	name := fs.String("name", "", "hub `NAME`, overriding [hub] name (default: host name)")
	logLevel := fs.String("log-level", "info", "log `LEVEL`: debug, info, warn or error")
	rename := fs.Bool("rename", false, "adopt [hub] name for a data dir recorded under another name (peers will see a new origin; see docs/config.md)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, ""); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("invalid --log-level %q: want debug, info, warn or error", *logLevel)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)

	cfg := hub.DefaultConfig()
	if *configFile != "" {
		if cfg, err = hub.LoadConfig(*configFile); err != nil {
			if errors.As(err, new(*hub.ConfigError)) {
				return fmt.Errorf("invalid configuration:\n%w", err)
			}
			return err
		}
	}
	for _, o := range []struct {
		flag, val string
		dst       *string
	}{
		{"data", *dataDir, &cfg.Hub.DataDir},
		{"quic-listen", *quicAddr, &cfg.Listen.QUIC},
		{"admin-listen", *adminAddr, &cfg.Listen.Admin},
		{"name", *name, &cfg.Hub.Name},
	} {
		if o.val != "" {
			*o.dst = o.val
		}
	}
	cfg.Logger = logger
	cfg.Rename = *rename
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration (with flags):\n%w", err)
	}
	source := cfg.File
	if source == "" {
		source = "built-in defaults"
	}
	logger.Info("starting hub", "config", source, "name", cfg.Hub.Name, "data_dir", cfg.Hub.DataDir,
		"declared_streams", len(cfg.Streams), "pid", os.Getpid())

	// SIGHUP re-reads the gossip key file at once; unhandled it would end
	// the process without a drain. Notify before New so none is missed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	h, err := hub.New(cfg)
	if err != nil {
		return err
	}
	defer h.Close()
	go reloadOnHangup(ctx, logger, h, hup)
	if len(cfg.Streams) > 0 {
		names := make([]string, len(cfg.Streams))
		for i, s := range cfg.Streams {
			names[i] = s.Name
		}
		logger.Info("declared streams ready", "streams", strings.Join(names, ","))
	}
	if err := h.Run(ctx); err != nil {
		return err
	}
	logger.Info("shutting down")
	if err := h.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	logger.Info("hub stopped")
	return nil
}

// reloadOnHangup re-reads the gossip keys on each SIGHUP until ctx ends;
// every other setting is read at start only, and the log says so.
func reloadOnHangup(ctx context.Context, logger *slog.Logger, h *hub.Hub, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := h.ReloadKeys(); err != nil {
				logger.Warn("SIGHUP: gossip keys not reloaded; other settings are read at start only", "err", err)
			} else {
				logger.Info("SIGHUP: gossip keys reloaded; other settings are read at start only")
			}
		}
	}
}
