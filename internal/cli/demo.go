package cli

import (
	"context"

	"github.com/edgehub/edgehub/internal/demo"
)

func init() {
	register("demo", "run three federated hubs with sensors, plugins and a consumer group (a tour of edgehub)", runDemo)
}

func runDemo(ctx context.Context, args []string) error {
	d := demo.DefaultConfig()
	fs := newFlags("demo", "demo [--data DIR] [--duration D] [--interval D] [--window D] [--sensors N] [--rate N] [--plugins DIR] [--source DIR]")
	fs.StringVar(&d.DataDir, "data", "", "data `DIR` for the hubs' configs, logs and data, kept at the end (default: a new hub-demo-* directory in the system's temporary directory)")
	fs.DurationVar(&d.Duration, "duration", 0, "stop after this long, as Ctrl-C would (default: run until interrupted)")
	fs.DurationVar(&d.Interval, "interval", d.Interval, "time between two summaries")
	fs.DurationVar(&d.Window, "window", d.Window, "the aggregate plugin's window")
	fs.IntVar(&d.Sensors, "sensors", d.Sensors, "simulated sensors per edge hub")
	fs.IntVar(&d.Rate, "rate", d.Rate, "readings per second of each sensor")
	fs.StringVar(&d.Plugins, "plugins", "", "`DIR` with a prebuilt aggregate.wasm and alert.wasm (default: build them from the source tree)")
	fs.StringVar(&d.Source, "source", "", "edgehub source `DIR` to build the example plugins from (default: the Go module of the current directory)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 0, ""); err != nil {
		return err
	}
	d.Out = stdout
	if err := d.Validate(); err != nil {
		return usagef("%v", err)
	}
	return demo.Run(ctx, d)
}
