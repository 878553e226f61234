package sdk_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"

	"github.com/edgehub/edgehub/sdk"
	"github.com/edgehub/edgehub/store"
)

var (
	exampleOnce sync.Once
	exampleHub  *testHub
)

// hubAddr starts one hub for the examples (a real deployment runs
// `hub serve`) and returns its address and certificate file.
func hubAddr() (addr, caFile string) {
	exampleOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sdk-example-")
		if err != nil {
			log.Fatal(err)
		}
		exampleHub, err = startHub(dir, "127.0.0.1:0", nil,
			store.StreamConfig{Name: "sensors", Shards: 4}, store.StreamConfig{Name: "orders", Shards: 1},
			store.StreamConfig{Name: "alerts", Shards: 1})
		if err != nil {
			log.Fatal(err)
		}
	})
	return exampleHub.addr, exampleHub.ca
}

func ExampleDial() {
	addr, ca := hubAddr() // e.g. "127.0.0.1:7440", "hub-data/tls/cert.pem"
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: ca})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	info, err := c.Info(ctx, "sensors")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Name, "has", len(info.Shards), "shards")
	// Output: sensors has 4 shards
}

func ExampleProducer_Send() {
	addr, ca := hubAddr()
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: ca})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := c.Producer(ctx, "orders", sdk.ProducerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close(ctx)
	// Send returns once the record is durable (fsynced by the hub).
	pos, err := p.Send(ctx, sdk.Record{Key: []byte("order-1"), Value: []byte(`{"total": 42}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("stored in shard %d at sequence %d\n", pos.Shard, pos.Seq)
	// Output: stored in shard 0 at sequence 1
}

func ExampleProducer_SendAsync() {
	addr, ca := hubAddr()
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: ca})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := c.Producer(ctx, "sensors", sdk.ProducerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	acked := 0
	for i := range 1000 {
		rec := sdk.Record{Key: fmt.Appendf(nil, "sensor-%d", i%10), Value: fmt.Appendf(nil, "%d", i)}
		// SendAsync returns at once; the callback runs when the batch
		// holding the record is durable.
		err := p.SendAsync(ctx, rec, func(pos sdk.Position, err error) {
			if err != nil {
				log.Print(err)
				return
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Close flushes: every callback has run when it returns.
	if err := p.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("acked", acked)
	// Output: acked 1000
}

func ExampleClient_Subscribe() {
	addr, ca := hubAddr()
	ctx := context.Background()
	c, err := sdk.Dial(ctx, addr, sdk.Options{CAFile: ca})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	p, err := c.Producer(ctx, "alerts", sdk.ProducerOptions{})
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range []string{"door open", "smoke", "door closed"} {
		if _, err := p.Send(ctx, sdk.Record{Value: []byte(v)}); err != nil {
			log.Fatal(err)
		}
	}
	p.Close(ctx)

	sub, err := c.Subscribe(ctx, "alerts", sdk.ConsumeOptions{From: sdk.FromEarliest()})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for !sub.CaughtUp() {
		m, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d: %s\n", m.Record.Seq, m.Record.Value)
	}
	// Output:
	// 1: door open
	// 2: smoke
	// 3: door closed
}
