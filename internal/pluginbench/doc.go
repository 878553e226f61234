// Package pluginbench measures plugins as the hub runs them: the engine of
// `hub plugin bench`.
//
// # Basics
//
// Run opens a store and a plugin manager in a temporary directory, the
// parts a hub is made of, and measures there: each module through the host
// (plugins.Manager.HostBenchmark: the production runner's encoding, call
// and output copying, nothing stored), then, with Config.Ingest, ingest into
// the store without and with the plugins attached, in alternating rounds.
// The command line (internal/cli) parses flags and prints; it talks to
// hubs only through the admin API and the SDK, and leaves opening stores
// and managers to this package.
//
// # Caveats
//
// Figures are wall-clock rates on the machine at hand: a busy machine skews
// them, which is why ingest rounds alternate and report a median ratio.
package pluginbench
