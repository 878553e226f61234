package cli

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/edgehub/edgehub/hub"
)

func init() {
	register("stream", "create, list, describe, update, reshard and delete streams", func(ctx context.Context, args []string) error {
		return subcommand("stream", ctx, args, map[string]func(context.Context, []string) error{
			"create":    streamCreate,
			"list":      streamList,
			"ls":        streamList,
			"describe":  streamDescribe,
			"update":    streamUpdate,
			"delete":    streamDelete,
			"split":     streamSplit,
			"merge":     streamMerge,
			"reshard":   streamReshard,
			"autosplit": streamAutosplit,
		}, [][2]string{
			{"create NAME", "create a stream"},
			{"list", "list streams"},
			{"describe NAME", "show a stream's shards, sequences, counts and settings (its autosplit policy too)"},
			{"update NAME", "change a stream's retention, size limit, compaction, replication or copies"},
			{"delete NAME [--force] [--yes]", "delete a stream and all its records (refused while plugins, groups or webhooks use it, unless --force)"},
			{"split NAME --shard S [--at HASH]", "split an open shard's hash range in two (its records stay; new ones go to the two children)"},
			{"merge NAME --shards S1,S2", "merge two open shards with adjacent hash ranges"},
			{"reshard NAME --shards N", "reach N open shards with even hash ranges in one step"},
			{"autosplit NAME --max-shards N --bytes SIZE|--rate RATE|--records-rate N | --off", "set or remove the policy that splits hot shards by itself"},
		})
	})
}

// streamSettingFlags are the flags shared by create and update; only flags
// given on the command line go into the request.
type streamSettingFlags struct {
	fs                                         *flag.FlagSet
	retention, tombstones, maxBytes, replicate *string
	copiesAt, copiesTimeout, copiesShortfall   *string
	copies                                     *int
	compact                                    *bool
}

func (s *streamSettingFlags) add(fs *flag.FlagSet) {
	s.fs = fs
	s.retention = fs.String("retention", "", "delete records older than `DURATION` (Go syntax: 168h, 30m; 0 keeps them)")
	s.maxBytes = fs.String("max-bytes", "", "delete the oldest records above `SIZE` (10GiB, 512MB, bytes; 0 = no limit)")
	s.compact = fs.Bool("compact", false, "keep only the latest record per key")
	s.tombstones = fs.String("tombstone-retention", "", "keep deletes (nil values) visible for `DURATION` under compaction (default 24h)")
	s.replicate = fs.String("replicate", "", "replication `POLICY`: local, all, or tag:NAME[,tag:NAME...] (default local)")
	s.copies = fs.Int("copies", 1, "acknowledge a batch once `N` hubs (this one included) hold it (1: this hub's fsync; more needs --replicate)")
	s.copiesAt = fs.String("copies-at", "", "count only copies on hubs carrying one of these tags: all or tag:NAME[,tag:NAME...] (default all)")
	s.copiesTimeout = fs.String("copies-timeout", "", "wait at most `DURATION` for the copies (default 5s)")
	s.copiesShortfall = fs.String("copies-shortfall", "", "short of copies after the timeout: fail (the batch is refused with copies_short, though stored here) or ack (acknowledged with the copies there are) (default fail)")
}

func (s *streamSettingFlags) request() (hub.StreamRequest, error) {
	var req hub.StreamRequest
	var errs []error
	s.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "retention", "tombstone-retention", "copies-timeout":
			d, err := hub.ParseDuration(f.Value.String())
			switch {
			case err != nil:
				errs = append(errs, usagef("--%s: %v", f.Name, err))
			case f.Name == "retention":
				req.Retention = &d
			case f.Name == "tombstone-retention":
				req.TombstoneRetention = &d
			default:
				req.CopiesTimeout = &d
			}
		case "max-bytes":
			n, err := hub.ParseSize(f.Value.String())
			if err != nil {
				errs = append(errs, usagef("--max-bytes: %v", err))
			}
			req.MaxBytes = &n
		case "compact":
			req.Compact = s.compact
		case "replicate", "copies-at":
			r, err := hub.ParseReplicate(f.Value.String())
			switch {
			case err != nil:
				errs = append(errs, usagef("--%s: %v", f.Name, err))
			case f.Name == "replicate":
				req.Replicate = &r
			default:
				req.CopiesAt = &r
			}
		case "copies":
			req.Copies = s.copies
		case "copies-shortfall":
			v := f.Value.String()
			req.CopiesShortfall = &v
		}
	})
	if len(errs) > 0 {
		return req, errs[0]
	}
	return req, nil
}

func streamCreate(ctx context.Context, args []string) error {
	fs := newFlags("stream create", "stream create NAME [--shards N] [--retention DURATION] [--max-bytes SIZE] [--compact] [--tombstone-retention DURATION] [--replicate POLICY] [--copies N [--copies-at TAGS] [--copies-timeout DURATION] [--copies-shortfall fail|ack]] [--json]")
	shards := fs.Int("shards", 1, "number of `N` shards (1..1024; fixed once created)")
	var s streamSettingFlags
	s.add(fs)
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	req, err := s.request()
	if err != nil {
		return err
	}
	if *shards < 1 {
		return usagef("invalid --shards %d: a stream has 1 to 1024 shards", *shards)
	}
	req.Name, req.Shards = pos[0], *shards
	var info hub.StreamInfo
	if err := c.post(ctx, "/v1/streams", req, &info); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, info)
	}
	fmt.Fprintf(stdout, "created stream %s with %d shard%s\n", info.Name, info.Config.Shards, plural(info.Config.Shards))
	return nil
}

func streamUpdate(ctx context.Context, args []string) error {
	fs := newFlags("stream update", "stream update NAME [--retention DURATION] [--max-bytes SIZE] [--compact=BOOL] [--tombstone-retention DURATION] [--replicate POLICY] [--copies N [--copies-at TAGS] [--copies-timeout DURATION] [--copies-shortfall fail|ack]] [--json]")
	admin := addAdminFlags(fs, "")
	var s streamSettingFlags
	s.add(fs)
	asJSON := jsonFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "stream NAME"); err != nil {
		return err
	}
	req, err := s.request()
	if err != nil {
		return err
	}
	if req == (hub.StreamRequest{}) {
		return usagef("nothing to change: give at least one of --retention, --max-bytes, --compact, --tombstone-retention, --replicate")
	}
	c, err := newAdminClient(admin.options())
	if err != nil {
		return err
	}
	var info hub.StreamInfo
	if err := c.patch(ctx, "/v1/streams/"+url.PathEscape(pos[0]), req, &info); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, info)
	}
	fmt.Fprintf(stdout, "updated stream %s\n", info.Name)
	return nil
}

func streamList(ctx context.Context, args []string) error {
	fs := newFlags("stream list", "stream list [--json]")
	asJSON := jsonFlag(fs)
	c, _, err := adminCommand(fs, args, 0, "")
	if err != nil {
		return err
	}
	var list hub.StreamList
	if err := c.get(ctx, "/v1/streams", &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	if len(list.Streams) == 0 {
		fmt.Fprintln(stdout, "no streams")
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tSHARDS\tRECORDS\tBYTES\tRETENTION\tMAX BYTES\tCOMPACT\tREPLICATE")
	for _, s := range list.Streams {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%v\t%s\n", s.Name, openShards(s), s.Records, humanBytes(s.Bytes),
			retention(s.Config.Retention), orDash(s.Config.MaxBytes.String(), s.Config.MaxBytes == 0),
			s.Config.Compact, s.Config.Replicate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range list.Streams {
		if s.DamagedChunks > 0 {
			fmt.Fprintf(stderr, "warning: stream %s has %d damaged chunk%s not repaired, not served: hub stream describe %s\n",
				s.Name, s.DamagedChunks, plural(s.DamagedChunks), s.Name)
		}
	}
	return nil
}

func streamDescribe(ctx context.Context, args []string) error {
	fs := newFlags("stream describe", "stream describe NAME [--retired] [--json]")
	withRetired := fs.Bool("retired", false, "also list retired shards (closed and emptied by retention)")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	path := "/v1/streams/" + url.PathEscape(pos[0])
	if *withRetired {
		path += "?retired=true"
	}
	var s hub.StreamInfo
	if err := c.get(ctx, path, &s); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, s)
	}
	tw := newTable(stdout)
	fmt.Fprintf(tw, "Name:\t%s\n", s.Name)
	fmt.Fprintf(tw, "Incarnation:\t%s\n", s.Incarnation)
	if s.LayoutVersion == 0 {
		fmt.Fprintf(tw, "Shards:\t%d\n", s.Config.Shards)
	} else {
		fmt.Fprintf(tw, "Shards:\t%d open (created with %d; layout version %d)\n", s.OpenShards, s.Config.Shards, s.LayoutVersion)
	}
	fmt.Fprintf(tw, "Records:\t%d\n", s.Records)
	fmt.Fprintf(tw, "Bytes:\t%s (%d)\n", humanBytes(s.Bytes), s.Bytes)
	fmt.Fprintf(tw, "Retention:\t%s\n", retention(s.Config.Retention))
	fmt.Fprintf(tw, "Max bytes:\t%s\n", orDash(s.Config.MaxBytes.String(), s.Config.MaxBytes == 0))
	fmt.Fprintf(tw, "Compact:\t%v\n", s.Config.Compact)
	fmt.Fprintf(tw, "Tombstone retention:\t%s\n", s.Config.TombstoneRetention)
	fmt.Fprintf(tw, "Replicate:\t%s\n", s.Config.Replicate)
	if c := s.Config.CopiesPolicy; c.Copies > 1 {
		fmt.Fprintf(tw, "Copies:\t%d at %s, within %s, else %s (%d short so far)\n", c.Copies, c.At, c.Timeout, c.Shortfall, s.CopiesShort)
	} else {
		fmt.Fprintf(tw, "Copies:\t1 (this hub's fsync)\n")
	}
	if a := s.Config.Autosplit; a != nil {
		fmt.Fprintf(tw, "Autosplit:\t%s (set by %s)\n", a, s.Config.AutosplitFrom)
	} else {
		fmt.Fprintf(tw, "Autosplit:\t-\n")
	}
	for k, v := range s.Config.Meta {
		fmt.Fprintf(tw, "Meta %s:\t%s\n", k, v)
	}
	fmt.Fprintf(tw, "Used by:\t%s\n", orDash(strings.Join(s.Users, ", "), len(s.Users) == 0))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	tw = newTable(stdout)
	// A stream never resharded has no lineage to show: its table stays as
	// it always was.
	header := "SHARD\tHASH START\tHASH END\tFIRST SEQ\tLAST SEQ\tRECORDS\tBYTES\tLAST INGEST"
	if s.LayoutVersion > 0 {
		header += "\tLINEAGE"
	}
	fmt.Fprintln(tw, header)
	for _, sh := range s.Shards {
		first, ingest := fmt.Sprint(sh.FirstSeq), "-"
		if sh.Records == 0 || sh.FirstSeq > sh.LastSeq {
			first = "-"
		}
		if sh.LastIngest != nil {
			ingest = sh.LastIngest.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%s\t%s", sh.Shard, sh.HashStart, sh.HashEnd, first, sh.LastSeq, sh.Records, humanBytes(sh.Bytes), ingest)
		if s.LayoutVersion > 0 {
			fmt.Fprintf(tw, "\t%s", lineage(sh))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return printDamaged(s.Shards)
}

// printDamaged lists damaged ranges not repaired yet, if there are any.
func printDamaged(shards []hub.ShardInfo) error {
	n := 0
	for _, sh := range shards {
		n += len(sh.Damaged)
	}
	if n == 0 {
		return nil
	}
	fmt.Fprintf(stdout, "\nDamaged ranges, not served until repaired: %d\n", n)
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SHARD\tFROM\tTO\tFOUND\tREPAIR\tMISSING\tWHY")
	for _, sh := range shards {
		for _, d := range sh.Damaged {
			why, missing := d.Error, "-"
			if d.LastError != "" {
				why += "; repair: " + d.LastError
			}
			if d.Repair == "failing" {
				missing = fmt.Sprint(d.Missing)
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%s\t%s\n", sh.Shard, d.From, d.To, d.Found.Local().Format(time.RFC3339), d.Repair, missing, why)
		}
	}
	return tw.Flush()
}

func streamDelete(ctx context.Context, args []string) error {
	fs := newFlags("stream delete", "stream delete NAME [--force] [--yes]")
	force := fs.Bool("force", false, "delete even if plugins, groups or webhooks use the stream (they start over when it is created again)")
	yes := yesFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "stream NAME")
	if err != nil {
		return err
	}
	var s hub.StreamInfo
	if err := c.get(ctx, "/v1/streams/"+url.PathEscape(pos[0]), &s); err != nil {
		return err
	}
	if len(s.Users) > 0 && !*force {
		return fmt.Errorf("stream %s is used by %s: pass --force to delete it anyway", pos[0], strings.Join(s.Users, ", "))
	}
	what := fmt.Sprintf("delete stream %s and its %d record%s", pos[0], s.Records, plural(int(s.Records)))
	if len(s.Users) > 0 {
		what += " (used by " + strings.Join(s.Users, ", ") + ")"
	}
	if err := confirm(*yes, what); err != nil {
		return err
	}
	path := "/v1/streams/" + url.PathEscape(pos[0])
	if *force {
		path += "?force=true"
	}
	if err := c.del(ctx, path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted stream %s\n", pos[0])
	return nil
}

// openShards is the number of shards a stream takes appends in (its
// creation count until it is resharded).
func openShards(s hub.StreamInfo) int {
	if s.LayoutVersion == 0 {
		return s.Config.Shards
	}
	return s.OpenShards
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// retention is a stream's retention as the dashboard shows it: 0 keeps
// records forever.
func retention(d hub.Duration) string {
	if d == 0 {
		return "forever"
	}
	return d.String()
}

func orDash(s string, empty bool) string {
	if empty {
		return "-"
	}
	return s
}

// humanBytes formats n in binary units with one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTP"[exp])
}
