// Package demo runs `hub demo`: three federated hubs on loopback (two edge
// sites and a region), simulated sensors streaming JSON readings to the
// edges over QUIC, the aggregate and alert example plugins at the edges,
// their outputs replicated to the region, and a consumer group reading
// there, with a live summary of it all.
//
// # Basics
//
// The hubs are child processes running `hub serve --config FILE`, each
// with a hub.toml written into the demo's data dir: what the demo runs is
// what a user runs, the configs can be read and started again by hand, and
// each hub has its own logs, signals and process-wide state (slog default,
// metrics), as in a real deployment. The demo itself is the devices and the
// consumers: it uses the SDK as an application would.
//
// Federation is verified TLS with no certificate work: the demo generates
// the gossip key, each hub its self-signed certificate, and the hubs trust
// each other by the certificate pins they publish in encrypted gossip. The
// demo's clients trust the certificate of the hub they dial, as the CLI
// does on a hub's machine.
//
// The example plugins are built from the source tree (GOOS=wasip1) into
// the data dir at start, so a fresh clone needs no separate build step; a
// prebuilt directory can be given instead.
//
// # Caveats
//
// Ports are picked free just before the hubs start; a hub that fails
// because another program took one in between is given other ports and
// started again (three attempts), then the demo fails with the end of its
// log. On Linux each hub dies with the demo process even if
// the demo is killed (Pdeathsig); elsewhere a killed demo can leave them.
package demo
