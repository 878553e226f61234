package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/edgehub/edgehub/hub"
)

func init() {
	register("peers", "show federation members, their state and replication lag", peers)
}

func peers(ctx context.Context, args []string) error {
	fs := newFlags("peers", "peers [--pulls] [--json]")
	asJSON := jsonFlag(fs)
	pulls := fs.Bool("pulls", false, "also list every pull (one per stream and origin shard)")
	c, _, err := adminCommand(fs, args, 0, "")
	if err != nil {
		return err
	}
	var p hub.Peers
	if err := c.get(ctx, "/v1/peers", &p); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, p)
	}
	return printPeers(stdout, p, *pulls)
}

// printPeers renders GET /v1/peers as tables.
func printPeers(stdout io.Writer, p hub.Peers, pulls bool) error {
	if !p.Federated {
		fmt.Fprintf(stdout, "%s is not federated (set [gossip] bind in hub.toml)\n", p.Self)
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "MEMBER\tSTATE\tDOWN FOR\tSITE\tREGION\tTAGS\tQUIC\tGOSSIP\tAHEAD OF US")
	for _, m := range p.Members {
		name := m.Name
		if m.Self {
			name += " (self)"
		}
		down := "-" // how long dead or left: memberlist shows a suspect as alive
		if m.DownSeconds > 0 {
			down = (time.Duration(m.DownSeconds * float64(time.Second))).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.State, down, orDash(m.Site, m.Site == ""),
			orDash(m.Region, m.Region == ""), orDash(strings.Join(m.Tags, ","), len(m.Tags) == 0), m.QUIC, m.Gossip, ahead(m.Behind))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	switch {
	case len(p.Lag) == 0 && len(p.Joining) > 0:
		// A hub started before the hubs it joins: say so, rather than
		// "no replication", until it has joined.
		fmt.Fprintf(stdout, "not joined yet: retrying join to %s every %s (streams declared at other hubs appear once joined)\n",
			strings.Join(p.Joining, ", "), time.Duration(p.JoinRetrySeconds*float64(time.Second)))
	case len(p.Lag) == 0:
		fmt.Fprintln(stdout, "no replication (no stream with replicate = \"all\" or tags shared with a peer)")
	default:
		tw = newTable(stdout)
		fmt.Fprintln(tw, "STREAM\tORIGIN\tFROM PEER\tLAG RECORDS\tLAG SECONDS\tGAPS")
		for _, l := range p.Lag {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.3f\t%d\n", l.Stream, l.Origin, orDash(l.Peer, l.Peer == ""), l.Records, l.Seconds, l.Gaps)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(p.Gaps) > 0 {
		fmt.Fprintln(stdout, "\nGaps (records this hub will never hold: deleted by retention before it pulled them, or held by no live peer):")
		for _, g := range p.Gaps {
			fmt.Fprintf(stdout, "  %s origin %s/%d: %d gap%s, %d sequence%s; last %s\n", g.Stream, g.Origin, g.Shard, g.Gaps, plural(int(g.Gaps)), g.Sequences, plural(int(g.Sequences)), g.Last)
		}
	}
	if pulls && len(p.Pulls) > 0 {
		fmt.Fprintln(stdout)
		tw = newTable(stdout)
		fmt.Fprintln(tw, "STREAM\tORIGIN\tSHARD\tPEER\tSTATE\tWATERMARK\tPEER HIGH\tPULLED\tLAST ERROR")
		for _, t := range p.Pulls {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%d\t%s\n", t.Stream, t.Origin, t.Shard, orDash(t.Peer, t.Peer == ""),
				t.State, t.Watermark, t.High, t.Records, orDash(t.LastError, t.LastError == ""))
		}
		return tw.Flush()
	}
	return nil
}

// ahead summarises what a member holds that we do not: "events: a=12 b=3".
func ahead(behind map[string]map[string]uint64) string {
	if len(behind) == 0 {
		return "-"
	}
	var parts []string
	for stream, origins := range behind {
		var os []string
		for o, n := range origins {
			os = append(os, fmt.Sprintf("%s=%d", o, n))
		}
		slices.Sort(os)
		parts = append(parts, stream+": "+strings.Join(os, " "))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
