// Package tokenbucket is the one rate limiter of edgehub: guest log lines
// forwarded to the hub's logger (plugins) and replication bytes pulled from
// a peer (internal/replicate).
//
// # Basics
//
// A Bucket holds up to burst tokens and gains rate tokens a second. Allow
// takes one whole token or refuses; Take and Wait take any amount and may
// leave the bucket in debt: a request larger than the bucket (a large
// replication batch) is let through at once and paid for by the waits that
// follow, so it is never stuck. A nil *Bucket is unlimited.
//
// # Caveats
//
// golang.org/x/time/rate was weighed and not taken: its WaitN refuses a
// request larger than the burst, which is the case the debt exists for,
// and the whole need here is the few lines below.
package tokenbucket
