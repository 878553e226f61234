// Package hub composes edgehub's parts into a running server.
//
// # Basics
//
// A Config comes from hub.toml (LoadConfig) or DefaultConfig. New validates
// it, opens the store in the data directory, creates the streams the config
// declares and binds the listeners; Run serves until its context ends, with
// the parts running under an errgroup; Close releases everything and is
// idempotent. New never leaves a half-started hub behind: a locked or damaged
// data directory, a busy port, a declared stream whose shard count differs
// from the stored one, or a data directory recorded under another hub name
// (IdentityFile; the name is the origin of the hub's records) make it fail
// after releasing what it had opened.
//
// # Configuration
//
// hub.toml is decoded strictly, key by key, so that every problem is
// reported at once: unknown keys, wrong types and invalid values each give a
// *ConfigError naming the file, line and key ("hub.toml:12:
// stream[1].shards: 0 outside 1..1024"). Sizes accept units ("10GiB",
// "512MB", 1048576), durations Go syntax ("168h"). Each section owned by
// another part (tls, auth, limits, gossip, plugin, webhook) has its type in
// its own file with a Validate method that Config.Validate calls.
//
// # Admin API
//
// JSON over HTTP: /healthz, /v1/streams[/{name}], /v1/groups[/{name}]
// (consumer groups, groups.go), /metrics (Prometheus) and the dashboard at
// / (dashboard.go). Errors are {"error": "...", "code": "..."} with a
// status that fits (400, 404, 409, 413, 500, 503); docs/admin-api.md lists
// every route.
//
// # Extending
//
// A part plugs in with one builder method on *Hub, called from the list in
// New. A builder may read h.cfg, use h.store and h.logger, add admin routes
// with h.route (handlers return errors; writeJSON/readJSON/badRequest help),
// register collectors on h.metrics, and add long-running components with
// h.add. Components run in Run and are closed in reverse order by Close,
// before the store.
package hub
