package sdk

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/store"
)

// TestProducerRefusedBatch checks that a batch the hub refuses for good
// fails only its own records: later batches of the same shard, already
// numbered after it, are renumbered and stored. The producer is made to
// forget the hub's announced record limit, as with a hub older than it, so
// that the hub is the one refusing.
func TestProducerRefusedBatch(t *testing.T) {
	cfg := hub.DefaultConfig()
	cfg.Hub.DataDir = t.TempDir()
	cfg.Listen.QUIC, cfg.Listen.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Store.MaxRecordBytes = 1024
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.Store().CreateStream(ctx, store.StreamConfig{Name: "s", Shards: 1}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Run(runCtx) }()
	defer func() {
		stop()
		<-done
		h.Close()
	}()
	c, err := Dial(ctx, h.QUICAddr().String(), Options{CAFile: filepath.Join(cfg.Hub.DataDir, hub.SelfSignedCertFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := c.Producer(ctx, "s", ProducerOptions{BatchRecords: 1, MaxInFlight: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	p.mu.Lock()
	p.maxRecord = 0
	p.mu.Unlock()
	values := []string{"a", strings.Repeat("x", 2048), "b", "c", strings.Repeat("y", 2048), "d"}
	futures := make([]*Future, len(values))
	for i, v := range values {
		if futures[i], err = p.SendFuture(ctx, Record{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	var stored []uint64
	for i, f := range futures {
		pos, err := f.Wait(ctx)
		if len(values[i]) > 1024 {
			if CodeOf(err) != CodeRecordTooLarge {
				t.Fatalf("record %d: %v, want record_too_large", i, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		stored = append(stored, pos.Seq)
	}
	if fmt.Sprint(stored) != "[1 2 3 4]" {
		t.Fatalf("stored at %v, want [1 2 3 4]", stored)
	}
}
