package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/edgehub/edgehub/hub"
	"github.com/edgehub/edgehub/internal/pluginbench"
)

func init() {
	register("plugin", "deploy, list, describe, pause, resume and delete Wasm plugins", func(ctx context.Context, args []string) error {
		return subcommand("plugin", ctx, args, map[string]func(context.Context, []string) error{
			"deploy":   pluginDeploy,
			"list":     pluginList,
			"ls":       pluginList,
			"describe": pluginDescribe,
			"logs":     pluginLogs,
			"pause":    pluginPause,
			"resume":   pluginResume,
			"delete":   pluginDelete,
			"bench":    pluginBench,
		}, [][2]string{
			{"deploy FILE.wasm --name NAME --input STREAM", "deploy a plugin, or upgrade it in place (state and checkpoints are kept)"},
			{"list", "list plugins with their status, lag and counters"},
			{"describe NAME", "show a plugin's settings, state size and per-shard checkpoints, lag and errors"},
			{"logs NAME", "print a plugin's recent log lines (guest logs, errors, dead letters)"},
			{"pause NAME", "stop a plugin; it keeps its place"},
			{"resume NAME", "start a paused plugin from its checkpoint"},
			{"delete NAME", "delete a plugin with its state and checkpoints (its output streams stay)"},
			{"bench FILE.wasm", "measure a plugin's throughput through the host, in this process"},
		})
	})
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// loadManifest reads a plugin manifest: the keys of a hub.toml [[plugin]]
// element, at the top level of the file, decoded strictly.
func loadManifest(path string) (hub.PluginConfig, error) {
	var pc hub.PluginConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return pc, err
	}
	md, err := toml.Decode(string(data), &pc)
	if err != nil {
		return pc, fmt.Errorf("manifest %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return pc, fmt.Errorf("manifest %s: unknown keys %s", path, strings.Join(keys, ", "))
	}
	if pc.Module != "" && !filepath.IsAbs(pc.Module) {
		pc.Module = filepath.Join(filepath.Dir(path), pc.Module)
	}
	return pc, nil
}

func pluginDeploy(ctx context.Context, args []string) error {
	fs := newFlags("plugin deploy", "plugin deploy FILE.wasm --name NAME --input STREAM [--output STREAM]... [--config KEY=VALUE]... [--from earliest|latest] [--manifest FILE.toml] [--json] [LIMIT FLAGS]")
	admin := addAdminFlags(fs, "")
	name := fs.String("name", "", "plugin `NAME`")
	var inputs, outputs, configs multiFlag
	fs.Var(&inputs, "input", "input `STREAM` (repeatable)")
	fs.Var(&outputs, "output", "output `STREAM` the plugin may emit to (repeatable); created if missing; the plugin's config gets output (the first) and outputs (all) unless --config sets them")
	fs.Var(&configs, "config", "`KEY=VALUE` passed to the plugin's init (repeatable)")
	from := fs.String("from", "", "where a new plugin starts: earliest or latest (default latest)")
	manifest := fs.String("manifest", "", "TOML `FILE` with the keys of a hub.toml [[plugin]] (flags override it)")
	onError := fs.String("on-error", "", "error `POLICY`: retry, dead-letter or pause (default retry, or dead-letter with --dead-letter)")
	deadLetter := fs.String("dead-letter", "", "dead-letter `STREAM` for records the plugin fails on")
	maxAttempts := fs.Int("max-attempts", 0, "with retry: pause after `N` failed attempts (0 = retry forever)")
	memory := fs.String("memory", "", "linear memory cap `SIZE` per instance (default 16MiB)")
	fs.String("call-timeout", "", "deadline per call `DURATION` (default 5s)")
	batch := fs.Int("batch", 0, "max records per call `N` (default 1000)")
	fs.String("state-quota", "", "keyed state `SIZE` of the whole plugin (default 256MiB)")
	fs.String("max-state-delta", "", "keyed state `SIZE` one call may write (default 16MiB)")
	fs.String("timer-interval", "", "timer period `DURATION` (default 1s)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	var pc hub.PluginConfig
	if *manifest != "" {
		if pc, err = loadManifest(*manifest); err != nil {
			return usagef("%v", err)
		}
	}
	switch {
	case len(pos) == 1:
		pc.Module = pos[0]
	case len(pos) > 1:
		return usagef("want one FILE.wasm, got %d arguments", len(pos))
	case pc.Module == "":
		return usagef("missing FILE.wasm (or module in the manifest)")
	}
	var errs []error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			pc.Name = *name
		case "input":
			pc.Inputs = inputs
		case "output":
			pc.Outputs = outputs
		case "config":
			if pc.Config == nil {
				pc.Config = hub.PluginParams{}
			}
			for _, kv := range configs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					errs = append(errs, usagef("--config %q: want KEY=VALUE", kv))
					continue
				}
				pc.Config[k] = v
			}
		case "from":
			pc.Start = *from
		case "on-error":
			pc.OnError = *onError
		case "dead-letter":
			pc.DeadLetter = *deadLetter
		case "max-attempts":
			pc.MaxAttempts = *maxAttempts
		case "memory":
			n, err := hub.ParseSize(*memory)
			if err != nil {
				errs = append(errs, usagef("--memory: %v", err))
			}
			pc.Memory = n
		case "call-timeout", "timer-interval":
			d, err := hub.ParseDuration(f.Value.String())
			if err != nil {
				errs = append(errs, usagef("--%s: %v", f.Name, err))
			} else if f.Name == "call-timeout" {
				pc.CallTimeout = d
			} else {
				pc.TimerInterval = d
			}
		case "batch":
			pc.BatchRecords = *batch
		case "state-quota", "max-state-delta":
			n, err := hub.ParseSize(f.Value.String())
			if err != nil {
				errs = append(errs, usagef("--%s: %v", f.Name, err))
			} else if f.Name == "state-quota" {
				pc.StateQuota = n
			} else {
				pc.MaxStateDelta = n
			}
		}
	})
	if len(errs) > 0 {
		return errs[0]
	}
	if pc.Name == "" {
		return usagef("--name is required")
	}
	if len(pc.Inputs) == 0 {
		return usagef("--input is required")
	}
	wasm, err := os.ReadFile(pc.Module)
	if err != nil {
		return err
	}
	c, err := newAdminClient(admin.options())
	if err != nil {
		return err
	}
	var info hub.PluginInfo
	if err := c.deployPlugin(ctx, pc, wasm, &info); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, info)
	}
	verb := "deployed"
	if info.Version > 1 {
		verb = "upgraded"
	}
	fmt.Fprintf(stdout, "plugin %s %s: version %d, sha256 %s, %d shard runner%s\n",
		info.Name, verb, info.Version, info.SHA256[:12], len(info.Shards), plural(len(info.Shards)))
	return nil
}

// deployPlugin posts the multipart deploy request.
func (c *adminClient) deployPlugin(ctx context.Context, pc hub.PluginConfig, wasm []byte, out any) error {
	pc.Module = ""
	def, err := json.Marshal(pc)
	if err != nil {
		return err
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	dw, err := mw.CreateFormField("definition")
	if err != nil {
		return err
	}
	dw.Write(def)
	fw, err := mw.CreateFormFile("module", "module.wasm")
	if err != nil {
		return err
	}
	fw.Write(wasm)
	if err := mw.Close(); err != nil {
		return err
	}
	req, err := c.newRequest(ctx, http.MethodPost, "/v1/plugins", &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	u := req.URL.String()
	resp, err := c.http.Do(req)
	if err != nil {
		return c.transportError(ctx, http.MethodPost, u, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("POST %s: %w", u, err)
	}
	if resp.StatusCode >= 300 {
		return c.responseError(resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

func pluginList(ctx context.Context, args []string) error {
	fs := newFlags("plugin list", "plugin list [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	c, _, err := adminCommand(fs, args, 0, "")
	if err != nil {
		return err
	}
	var infos []hub.PluginInfo
	if err := c.get(ctx, "/v1/plugins", &infos); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, infos)
	}
	tw := newTable(stdout)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTATUS\tINPUTS\tOUTPUTS\tIN\tOUT\tLAG\tERRORS\tDEAD\tSTATE\tWHY")
	for _, i := range infos {
		why := i.PauseReason
		if why == "" {
			why = i.Waiting
		}
		if why == "" {
			why = i.QuarantineReason
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", i.Name, i.Version, i.Status,
			strings.Join(i.Inputs, ","), orDash(strings.Join(i.Outputs, ","), len(i.Outputs) == 0),
			i.RecordsIn, i.RecordsOut, i.Lag, i.Errors, i.DeadLettered, humanBytes(i.StateBytes), orDash(truncate(why, 80), why == ""))
	}
	return tw.Flush()
}

func pluginDescribe(ctx context.Context, args []string) error {
	fs := newFlags("plugin describe", "plugin describe NAME [--json]")
	asJSON := fs.Bool("json", false, "print JSON")
	c, pos, err := adminCommand(fs, args, 1, "plugin NAME")
	if err != nil {
		return err
	}
	var i hub.PluginInfo
	if err := c.get(ctx, "/v1/plugins/"+url.PathEscape(pos[0]), &i); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, i)
	}
	tw := newTable(stdout)
	fmt.Fprintf(tw, "Name:\t%s\n", i.Name)
	fmt.Fprintf(tw, "Status:\t%s\n", i.Status)
	if i.Paused {
		fmt.Fprintf(tw, "Pause reason:\t%s\n", i.PauseReason)
	}
	if i.Waiting != "" {
		fmt.Fprintf(tw, "Waiting:\t%s (starts by itself once the stream exists)\n", i.Waiting)
	}
	if i.QuarantineReason != "" {
		fmt.Fprintf(tw, "Quarantined:\t%s\n", i.QuarantineReason)
	}
	fmt.Fprintf(tw, "Version:\t%d (sha256 %s, %s)\n", i.Version, i.SHA256, humanBytes(int64(i.ModuleSize)))
	fmt.Fprintf(tw, "Deployed:\t%s, updated %s\n", i.Created.Local().Format(time.RFC3339), i.Updated.Local().Format(time.RFC3339))
	fmt.Fprintf(tw, "Inputs:\t%s (start %s)\n", strings.Join(i.Inputs, ", "), i.Start)
	fmt.Fprintf(tw, "Outputs:\t%s\n", orDash(strings.Join(i.Outputs, ", "), len(i.Outputs) == 0))
	policy := string(i.OnError)
	if i.DeadLetter != "" {
		policy += " → " + i.DeadLetter
	}
	if i.MaxAttempts > 0 {
		policy += fmt.Sprintf(" (max %d attempts)", i.MaxAttempts)
	}
	fmt.Fprintf(tw, "On error:\t%s, backoff %s..%s\n", policy, i.BackoffMin, i.BackoffMax)
	fmt.Fprintf(tw, "Limits:\t%s memory, %s per call, %d records / %s per batch, timer every %s\n",
		humanBytes(int64(i.MemoryPages)*65536), i.CallTimeout, i.BatchRecords, humanBytes(int64(i.BatchBytes)), i.TimerInterval)
	fmt.Fprintf(tw, "State limits:\t%s quota, %s per call\n", humanBytes(i.StateQuota), humanBytes(int64(i.MaxStateDelta)))
	keys := make([]string, 0, len(i.Config))
	for k := range i.Config {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "Config %s:\t%s\n", k, i.Config[k])
	}
	fmt.Fprintf(tw, "Records:\t%d in, %d out, %d dead-lettered, %d lag\n", i.RecordsIn, i.RecordsOut, i.DeadLettered, i.Lag)
	fmt.Fprintf(tw, "State:\t%s in %d keys\n", humanBytes(i.StateBytes), i.StateKeys)
	fmt.Fprintf(tw, "Memory:\t%s\n", humanBytes(i.MemoryBytes))
	fmt.Fprintf(tw, "Errors:\t%d (%d calls stopped at their deadline)\n", i.Errors, i.Timeouts)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	tw = newTable(stdout)
	fmt.Fprintln(tw, "INPUT\tSHARD\tSTATUS\tCHECKPOINT\tLAST SEQ\tLAG\tIN\tOUT\tDEAD\tSTATE\tKEYS\tCALLS\tTIME/CALL\tERRORS\tTIMEOUTS\tRESTARTS\tMEMORY")
	for _, s := range i.Shards {
		status := "ok"
		if s.Quarantined {
			status = "quarantined"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", s.Input, s.Shard, status, s.Checkpoint, s.LastSeq,
			s.Lag, s.RecordsIn, s.RecordsOut, s.DeadLettered, humanBytes(s.StateBytes), s.StateKeys, s.Calls, s.CallTime,
			s.Errors, s.Timeouts, s.Restarts, humanBytes(s.MemoryBytes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range i.Shards {
		if s.Quarantined {
			fmt.Fprintf(stdout, "\nQuarantined %s/%d since %s:\n  %s\n", s.Input, s.Shard, s.QuarantinedSince.Local().Format(time.RFC3339), s.QuarantineReason)
		}
		if !s.InCallSince.IsZero() {
			fmt.Fprintf(stdout, "\nIn a call on %s/%d since %s\n", s.Input, s.Shard, s.InCallSince.Local().Format(time.RFC3339Nano))
		}
		if s.LastError != "" {
			fmt.Fprintf(stdout, "\nLast error on %s/%d at %s:\n  %s\n", s.Input, s.Shard, s.LastErrorAt.Local().Format(time.RFC3339), s.LastError)
		}
	}
	return nil
}

func pluginLogs(ctx context.Context, args []string) error {
	fs := newFlags("plugin logs", "plugin logs NAME [-n N] [--follow] [--json]")
	n := fs.Int("n", 100, "print the last `N` lines (0 = all the hub keeps)")
	follow := fs.Bool("follow", false, "keep printing new lines")
	asJSON := fs.Bool("json", false, "print JSON lines")
	c, pos, err := adminCommand(fs, args, 1, "plugin NAME")
	if err != nil {
		return err
	}
	var last time.Time
	printed := map[string]bool{} // lines of the last timestamp already printed
	count := *n
	for {
		var lines []hub.PluginLogLine
		if err := c.get(ctx, fmt.Sprintf("/v1/plugins/%s/logs?n=%d", url.PathEscape(pos[0]), count), &lines); err != nil {
			return err
		}
		for _, l := range lines {
			id := l.Time.String() + l.Message
			if l.Time.Before(last) || (l.Time.Equal(last) && printed[id]) {
				continue
			}
			if l.Time.After(last) {
				last = l.Time
				clear(printed)
			}
			printed[id] = true
			if *asJSON {
				json.NewEncoder(stdout).Encode(l)
				continue
			}
			where := ""
			if l.Shard >= 0 {
				where = fmt.Sprintf(" %s/%d", l.Input, l.Shard)
			}
			fmt.Fprintf(stdout, "%s %-5s%s %s\n", l.Time.Local().Format("2006-01-02T15:04:05.000"), l.Level, where, l.Message)
		}
		if !*follow {
			return nil
		}
		count = 0
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func pluginPause(ctx context.Context, args []string) error {
	fs := newFlags("plugin pause", "plugin pause NAME [--reason TEXT]")
	reason := fs.String("reason", "", "why (shown by describe)")
	c, pos, err := adminCommand(fs, args, 1, "plugin NAME")
	if err != nil {
		return err
	}
	var info hub.PluginInfo
	if err := c.post(ctx, "/v1/plugins/"+url.PathEscape(pos[0])+"/pause", hub.PauseRequest{Reason: *reason}, &info); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plugin %s paused\n", info.Name)
	return nil
}

func pluginResume(ctx context.Context, args []string) error {
	fs := newFlags("plugin resume", "plugin resume NAME")
	c, pos, err := adminCommand(fs, args, 1, "plugin NAME")
	if err != nil {
		return err
	}
	var info hub.PluginInfo
	if err := c.post(ctx, "/v1/plugins/"+url.PathEscape(pos[0])+"/resume", nil, &info); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plugin %s resumed (%d lag)\n", info.Name, info.Lag)
	return nil
}

func pluginDelete(ctx context.Context, args []string) error {
	fs := newFlags("plugin delete", "plugin delete NAME [--yes]")
	yes := yesFlag(fs)
	c, pos, err := adminCommand(fs, args, 1, "plugin NAME")
	if err != nil {
		return err
	}
	if err := confirm(*yes, "delete plugin "+pos[0]+" with its state and checkpoints"); err != nil {
		return err
	}
	if err := c.del(ctx, "/v1/plugins/"+url.PathEscape(pos[0])); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "plugin %s deleted\n", pos[0])
	return nil
}

func pluginBench(ctx context.Context, args []string) error {
	fs := newFlags("plugin bench", "plugin bench FILE.wasm... [--config KEY=VALUE]... [--records N] [--batch N] [--value-size BYTES] [--json] [--ingest [--plugins N] [--producers N] [--rounds N]]")
	var configs multiFlag
	fs.Var(&configs, "config", "`KEY=VALUE` passed to every plugin's init (repeatable)")
	records := fs.Int("records", 1_000_000, "input `N` records")
	batch := fs.Int("batch", 1000, "records per call")
	valueSize := fs.Int("value-size", 128, "value `BYTES` per record")
	asJSON := fs.Bool("json", false, `values are JSON readings {"value":N,...} padded to --value-size (for the examples)`)
	ingest := fs.Bool("ingest", false, "also measure ingest into a real store (temp dir) without and with the plugins attached")
	nPlugins := fs.Int("plugins", 3, "with one FILE and --ingest: attach this many copies")
	producers := fs.Int("producers", 4, "concurrent producers for --ingest")
	rounds := fs.Int("rounds", 3, "--ingest rounds (alternating without and with plugins)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *rounds < 1 {
		return usagef("--rounds must be positive")
	}
	if len(pos) == 0 {
		return usagef("missing FILE.wasm")
	}
	if *records < 1 || *batch < 1 || *valueSize < 0 || *producers < 1 || *nPlugins < 0 {
		return usagef("--records, --batch and --producers must be positive")
	}
	cfg := pluginbench.Config{Config: map[string]string{}, Records: *records, Batch: *batch, ValueSize: *valueSize, JSON: *asJSON,
		Ingest: *ingest, Producers: *producers, Rounds: *rounds}
	for _, kv := range configs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usagef("--config %q: want KEY=VALUE", kv)
		}
		cfg.Config[k] = v
	}
	// Each file once; one file with --plugins N attaches N copies.
	for i := 0; i < max(len(pos), *nPlugins) && (i < len(pos) || len(pos) == 1); i++ {
		file := pos[min(i, len(pos)-1)]
		wasm, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		cfg.Plugins = append(cfg.Plugins, pluginbench.Plugin{File: file, Wasm: wasm, Host: i < len(pos)})
	}
	sum, err := pluginbench.Run(ctx, cfg, pluginbench.Report{
		Host: func(res pluginbench.HostResult) {
			fmt.Fprintf(stdout, "host %s: %d records in %s: %.0f records/s (%.0f ns/record), %d outputs, %d calls, instance memory %s\n",
				filepath.Base(res.File), res.Records, res.Elapsed.Round(time.Millisecond), res.PerSecond(),
				float64(res.Elapsed.Nanoseconds())/float64(res.Records), res.Outputs, res.Calls, humanBytes(int64(res.MemoryBytes)))
		},
		Round: func(r pluginbench.Round) {
			fmt.Fprintf(stdout, "round %d: ingest %.0f records/s without plugins, %.0f with %d attached (%.0f%%); plugins caught up after %s (%.0f records/s each)\n",
				r.Round, r.Base, r.With, len(cfg.Plugins), 100*r.With/r.Base, r.CatchUp.Round(time.Millisecond), r.CatchUpRate)
		},
	})
	if err != nil || !*ingest {
		return err
	}
	fmt.Fprintf(stdout, "ingest with %d plugins: median %.0f%% of ingest without plugins (%d records of %d bytes, %d producers, %d rounds)\n",
		len(cfg.Plugins), 100*sum.MedianRatio, *records, *valueSize, *producers, *rounds)
	return nil
}

// truncate shortens s to n bytes for a table cell.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
