// Package backoff is the one retry backoff of edgehub: plugin retries and
// instance restarts, webhook deliveries, replication pulls and the SDK's
// reconnections.
//
// # Basics
//
// Delay doubles from lo towards hi with jitter: retry n waits a random
// duration in [lo·2^(n-1), lo·2^n], clamped to [lo, hi] (at the cap, in
// [hi/2, hi] but never below lo). The jitter spreads
// clients and runners that failed together (a hub restart, an endpoint
// outage), so they do not all retry in the same instant; the clamp keeps
// the documented bounds (backoff_min..backoff_max, ReconnectMin and
// ReconnectMax): no wait is shorter than lo or longer than hi.
//
// Sleep waits a delay unless its context ends first.
package backoff
