//go:build chaos

package hub

import "testing"

// TestHostileClientsChaos is chaos item 8 at full scale: 5,000
// subscriptions never read, 1,000 handshakes dropped and 1,000 refused,
// hundreds of malformed, oversized, half-sent, unauthenticated and
// unauthorised streams and 50 replays of a 0-RTT first flight, while a
// well-behaved producer and consumer run throughout. Run it with
// go test -tags chaos -run TestHostileClientsChaos ./hub.
func TestHostileClientsChaos(t *testing.T) {
	runHostileClients(t, hostileScale{
		unreadSubs: 5000, handshakes: 1000, badStreams: 200, halfFrames: 200, authStreams: 200, replays: 50,
		records: 2000, maxHWMKiB: 400 << 10,
	})
}
