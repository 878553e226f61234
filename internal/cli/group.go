package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/sdk"
)

func init() {
	register("group", "list, describe, reset and delete consumer groups", func(ctx context.Context, args []string) error {
		return subcommand("group", ctx, args, map[string]func(context.Context, []string) error{
			"list":     groupList,
			"ls":       groupList,
			"describe": groupDescribe,
			"reset":    groupReset,
			"delete":   groupDelete,
		}, [][2]string{
			{"list", "list consumer groups with their members and lag"},
			{"describe NAME", "show a group's members, leases, committed offsets and lag"},
			{"reset NAME --stream S --to POS", "set an idle group's offsets (earliest, latest, a sequence or a time)"},
			{"delete NAME", "delete an idle group and its offsets"},
		})
	})
}

func groupList(ctx context.Context, args []string) error {
	fs := newFlags("group list", "group list [--json]")
	asJSON := jsonFlag(fs)
	c, _, err := adminCommand(fs, args, 0, "")
	if err != nil {
		return err
	}
	var list hub.GroupList
	if err := c.get(ctx, "/v1/groups", &list); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, list)
	}
	if len(list.Groups) == 0 {
		fmt.Fprintln(stdout, "no consumer groups")
		return nil
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tSTREAM\tSHARDS\tMEMBERS\tLAG\tREBALANCES")
	for _, g := range list.Groups {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", g.Name, g.Stream, g.Shards, g.Members, g.Lag, g.Rebalances)
	}
	return tw.Flush()
}

func groupDescribe(ctx context.Context, args []string) error {
	fs := newFlags("group describe", "group describe NAME [--json]")
	asJSON := jsonFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "group NAME")
	if err != nil {
		return err
	}
	var g hub.GroupInfo
	if err := c.get(ctx, "/v1/groups/"+url.PathEscape(pos[0]), &g); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, g)
	}
	tw := newTable(stdout)
	fmt.Fprintf(tw, "Name:\t%s\n", g.Name)
	fmt.Fprintf(tw, "Stream:\t%s\n", g.Stream)
	if g.Stale {
		fmt.Fprintf(tw, "Offsets:\tstale: the stream was deleted and created again; the group starts over at its next join\n")
	}
	fmt.Fprintf(tw, "Created:\t%s\n", g.Created.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "Members:\t%d\n", len(g.Members))
	fmt.Fprintf(tw, "Lag:\t%d\n", g.Lag)
	fmt.Fprintf(tw, "Epoch:\t%d\n", g.Epoch)
	fmt.Fprintf(tw, "Rebalances:\t%d\n", g.Rebalances)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(g.Members) > 0 {
		fmt.Fprintln(stdout)
		tw = newTable(stdout)
		fmt.Fprintln(tw, "MEMBER\tREMOTE\tCONNECTED\tSESSION TIMEOUT\tLAST SEEN\tSHARDS\tHANDING OVER")
		for _, m := range g.Members {
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s ago\t%s\t%s\n", m.ID, orDash(m.Remote, m.Remote == ""), m.Connected, m.SessionTimeout,
				time.Since(m.LastSeen).Round(time.Millisecond), ints(m.Shards), ints(m.HandingOver))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout)
	tw = newTable(stdout)
	// A LINEAGE column only once the stream was resharded (a closed shard
	// or one waiting for its parents): otherwise the table is as before.
	lineage := slices.ContainsFunc(g.Shards, func(s hub.GroupShard) bool { return s.ShardState != "" || len(s.WaitingFor) > 0 })
	head := "SHARD\tSTATE\tOWNER\tEPOCH\tCOMMITTED\tLAST SEQ\tLAG\tCOMMITTED AT\tBY"
	if lineage {
		head += "\tLINEAGE"
	}
	fmt.Fprintln(tw, head)
	for _, s := range g.Shards {
		at, by := "-", orDash(s.CommittedBy, s.CommittedBy == "")
		if s.CommittedAt != nil {
			at = s.CommittedAt.Local().Format(time.RFC3339)
			if s.CommittedBy == "" {
				by = "(reset)"
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s", s.Shard, s.State, orDash(s.Owner, s.Owner == ""),
			orDash(strconv.FormatUint(s.Epoch, 10), s.Epoch == 0), orDash(strconv.FormatUint(s.Committed, 10), s.Committed == 0),
			s.LastSeq, s.Lag, at, by)
		if lineage {
			fmt.Fprintf(tw, "\t%s", groupLineage(s))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// groupLineage is a shard's LINEAGE cell: "open", "closed end=N",
// "finished end=N", and "waiting for P,Q" while parents are unfinished.
func groupLineage(s hub.GroupShard) string {
	out := "open"
	if s.ShardState != "" {
		out = fmt.Sprintf("%s end=%d", s.ShardState, s.EndSeq)
	}
	if len(s.WaitingFor) > 0 {
		out += ", waiting for " + ints(s.WaitingFor)
	}
	return out
}

// ints formats shard lists: "0,2,3" or "-".
func ints(v []int) string {
	if len(v) == 0 {
		return "-"
	}
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func groupReset(ctx context.Context, args []string) error {
	fs := newFlags("group reset", "group reset NAME --stream STREAM --to earliest|latest|SEQ|RFC3339 [--shard N]... [--yes] [--json]")
	admin := addAdminFlags(fs, "")
	stream := fs.String("stream", "", "`STREAM` the group consumes (required)")
	to := fs.String("to", "", "new `POSITION` of each shard: earliest, latest, a sequence number or an RFC 3339 time (required)")
	var shards shardFlags
	fs.Var(&shards, "shard", "reset only shard `N` (repeatable; default all)")
	asJSON := jsonFlag(fs)
	yes := yesFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, "group NAME"); err != nil {
		return err
	}
	if *stream == "" {
		return usagef("missing --stream")
	}
	switch {
	case *to == "":
		return usagef("missing --to: earliest, latest, a sequence number or an RFC 3339 time")
	case *to == "earliest", *to == "latest":
	default:
		if _, err := strconv.ParseUint(*to, 10, 64); err != nil {
			if _, err := time.Parse(time.RFC3339Nano, *to); err != nil {
				return usagef("invalid --to %q: want earliest, latest, a sequence number or an RFC 3339 time", *to)
			}
		}
	}
	what := "reset the committed offsets of group " + pos[0] + " to " + *to
	if len(shards) > 0 {
		what += " on shards " + ints(shards)
	}
	if err := confirm(*yes, what); err != nil {
		return err
	}
	c, err := newAdminClient(admin.options())
	if err != nil {
		return err
	}
	var g hub.GroupInfo
	req := hub.GroupResetRequest{Stream: *stream, To: *to, Shards: shards}
	if err := c.post(ctx, "/v1/groups/"+url.PathEscape(pos[0])+"/reset", req, &g); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, g)
	}
	fmt.Fprintf(stdout, "reset group %s on stream %s:\n", g.Name, g.Stream)
	tw := newTable(stdout)
	fmt.Fprintln(tw, "SHARD\tCOMMITTED\tLAST SEQ\tLAG")
	for _, s := range g.Shards {
		if len(shards) == 0 || containsInt(shards, s.Shard) {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\n", s.Shard, s.Committed, s.LastSeq, s.Lag)
		}
	}
	return tw.Flush()
}

func containsInt(v []int, n int) bool {
	for _, x := range v {
		if x == n {
			return true
		}
	}
	return false
}

func groupDelete(ctx context.Context, args []string) error {
	fs := newFlags("group delete", "group delete NAME [--yes]")
	yes := yesFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "group NAME")
	if err != nil {
		return err
	}
	if err := confirm(*yes, "delete group "+pos[0]+" and its committed offsets"); err != nil {
		return err
	}
	if err := c.del(ctx, "/v1/groups/"+url.PathEscape(pos[0])); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "deleted group %s\n", pos[0])
	return nil
}

// consumeGroup is `hub consume STREAM --group NAME`: it prints the records
// of the shards the group assigns this member and commits them as it goes;
// at the end (count reached, caught up, or interrupted) it commits what it
// printed and leaves the group, so the next member continues after it.
func consumeGroup(ctx context.Context, c *sdk.Client, stream, group, member string, start sdk.Start, count int64, follow bool, pr *printer) (err error) {
	g, err := c.JoinGroup(ctx, group, stream, sdk.GroupOptions{MemberID: member, From: start})
	if err != nil {
		return err
	}
	defer func() {
		// ctx may be interrupted: give the final commit and leave a moment.
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if cerr := g.Close(cctx); cerr != nil && err == nil {
			err = cerr
		}
	}()
	defer func() {
		if ferr := pr.flush(); ferr != nil && err == nil {
			err = ferr
		}
	}()
	for n := int64(0); count == 0 || n < count; n++ {
		if !follow && g.CaughtUp() {
			return nil
		}
		if g.Buffered() == 0 && pr.buffered() > 0 {
			if err := pr.flush(); err != nil {
				return err
			}
		}
		m, err := g.Next(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		if err := pr.print(m); err != nil {
			return err
		}
	}
	return nil
}
