package cli

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/edgehub/edgehub/hub"
)

// The reshard commands: each is one admin API call that answers once the
// new layout is durable (docs/resharding.md).

func streamSplit(ctx context.Context, args []string) error {
	fs := newFlags("stream split", "stream split NAME --shard S [--at HASH] [--json]")
	shard := fs.Int("shard", -1, "the open shard `S` to split")
	at := fs.String("at", "", "first `HASH` (hex, as describe shows) of the upper child; default the range's midpoint")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	if *shard < 0 {
		return usagef("missing --shard: name the open shard to split (hub stream describe %s lists them)", pos[0])
	}
	req := hub.SplitRequest{Shard: uint32(*shard), At: strings.TrimPrefix(strings.ToLower(*at), "0x")}
	return postReshard(ctx, c, pos[0], "split", req, *asJSON)
}

func streamMerge(ctx context.Context, args []string) error {
	fs := newFlags("stream merge", "stream merge NAME --shards S1,S2 [--json]")
	list := fs.String("shards", "", "two open shards `S1,S2` with adjacent hash ranges")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	parts := strings.Split(*list, ",")
	if *list == "" || len(parts) != 2 {
		return usagef("--shards %q: want two shard ids, S1,S2", *list)
	}
	var req hub.MergeRequest
	for _, p := range parts {
		id, err := strconv.ParseUint(strings.TrimSpace(p), 10, 32)
		if err != nil {
			return usagef("--shards %q: %q is not a shard id", *list, p)
		}
		req.Shards = append(req.Shards, uint32(id))
	}
	return postReshard(ctx, c, pos[0], "merge", req, *asJSON)
}

func streamReshard(ctx context.Context, args []string) error {
	fs := newFlags("stream reshard", "stream reshard NAME --shards N [--json]")
	n := fs.Int("shards", 0, "the number `N` of open shards to reach, with even hash ranges")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	if *n < 1 {
		return usagef("invalid --shards %d: want the number of open shards to reach (at least 1)", *n)
	}
	return postReshard(ctx, c, pos[0], "reshard", hub.ReshardRequest{Shards: *n}, *asJSON)
}

func postReshard(ctx context.Context, c *adminClient, name, kind string, req any, asJSON bool) error {
	var info hub.StreamInfo
	if err := c.post(ctx, "/v1/streams/"+url.PathEscape(name)+"/"+kind, req, &info); err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, info)
	}
	// Open shards in hash order (hash_start is fixed-width hex), the order
	// their ranges cover the key space.
	var shards []hub.ShardInfo
	for _, sh := range info.Shards {
		if sh.State == "open" {
			shards = append(shards, sh)
		}
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].HashStart < shards[j].HashStart })
	open := make([]string, len(shards))
	for i, sh := range shards {
		open[i] = strconv.Itoa(sh.Shard)
	}
	fmt.Fprintf(stdout, "%s stream %s: layout version %d, %d open shard%s (%s, in hash order)\n", pastTense(kind), info.Name,
		info.LayoutVersion, info.OpenShards, plural(info.OpenShards), strings.Join(open, ", "))
	return nil
}

func pastTense(kind string) string {
	switch kind {
	case "split":
		return "split"
	case "merge":
		return "merged"
	}
	return "resharded"
}

// lineage is how describe shows a shard's place in its lineage.
func lineage(sh hub.ShardInfo) string {
	var b strings.Builder
	b.WriteString(sh.State)
	if sh.State != "open" {
		fmt.Fprintf(&b, " at %d", sh.EndSeq)
	}
	if len(sh.Parents) > 0 {
		fmt.Fprintf(&b, ", from %s", ids(sh.Parents))
	}
	if len(sh.Children) > 0 {
		fmt.Fprintf(&b, ", into %s", ids(sh.Children))
	}
	return b.String()
}

func ids(v []uint32) string {
	s := make([]string, len(v))
	for i, id := range v {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, "+")
}

// streamAutosplit sets or removes a stream's autosplit policy (PUT or
// DELETE /v1/streams/{name}/autosplit). Only flags given go into the
// policy, so the hub's defaults and its validation of each field apply,
// and sizes and rates keep the units the user typed.
func streamAutosplit(ctx context.Context, args []string) error {
	fs := newFlags("stream autosplit", "stream autosplit NAME --max-shards N [--bytes SIZE] [--rate RATE] [--records-rate N] [--for D] [--cooldown D] | --off [--json]")
	fs.String("bytes", "", "split a shard whose live bytes stay above `SIZE` (4GiB)")
	fs.String("rate", "", "split a shard whose ingest stays above `RATE` (8MiB/s, or bytes per second)")
	fs.Int64("records-rate", 0, "split a shard whose ingest stays above `N` records per second")
	fs.String("for", "", "how long a threshold must hold, at least 1m (default 10m)")
	fs.Int("max-shards", 0, "the most open shards automatic splits may reach (required)")
	fs.String("cooldown", "", "the least time between two automatic reshards, at least 1m (default 30m)")
	off := fs.Bool("off", false, "remove the policy (the layout stays)")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	policy := map[string]any{}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "bytes", "rate", "for", "cooldown":
			policy[f.Name] = f.Value.String()
		case "records-rate", "max-shards":
			n, _ := strconv.ParseInt(f.Value.String(), 10, 64)
			policy[strings.ReplaceAll(f.Name, "-", "_")] = n
		}
	})
	path := "/v1/streams/" + url.PathEscape(pos[0]) + "/autosplit"
	var info hub.StreamInfo
	switch {
	case *off && len(policy) > 0:
		return usagef("--off removes the policy: give it alone")
	case *off:
		err = c.do(ctx, http.MethodDelete, path, nil, &info)
	case len(policy) == 0:
		return usagef("give a policy (--max-shards and at least one of --bytes, --rate, --records-rate), or --off")
	default:
		err = c.do(ctx, http.MethodPut, path, policy, &info)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, info)
	}
	if a := info.Config.Autosplit; a != nil {
		fmt.Fprintf(stdout, "autosplit for stream %s: %s\n", info.Name, a)
	} else {
		fmt.Fprintf(stdout, "autosplit for stream %s: off\n", info.Name)
	}
	return nil
}
