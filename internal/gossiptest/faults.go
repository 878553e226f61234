// Package gossiptest is test scaffolding for federation tests: FaultNet, a
// switchboard of memberlist transports whose links can be cut and healed,
// to test partitions with real UDP and TCP sockets. Attach a transport to a
// gossip.Config with gossipopt.Set. It is not API (docs/RATIONALE.md).
package gossiptest

import (
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// FaultNet is a switchboard for tests: members built on its transports can
// be cut off from each other and healed. It is not meant for production use.
type FaultNet struct {
	mu  sync.RWMutex
	cut map[[2]string]bool
}

// NewFaultNet returns a network where every link is up.
func NewFaultNet() *FaultNet { return &FaultNet{cut: map[[2]string]bool{}} }

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Cut drops all traffic between gossip addresses a and b, both ways.
func (n *FaultNet) Cut(a, b string) {
	n.mu.Lock()
	n.cut[pair(a, b)] = true
	n.mu.Unlock()
}

// Heal restores the link between a and b.
func (n *FaultNet) Heal(a, b string) {
	n.mu.Lock()
	delete(n.cut, pair(a, b))
	n.mu.Unlock()
}

// HealAll restores every link.
func (n *FaultNet) HealAll() {
	n.mu.Lock()
	clear(n.cut)
	n.mu.Unlock()
}

func (n *FaultNet) blocked(a, b string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.cut[pair(a, b)]
}

// Transport returns a memberlist transport listening on bind
// ("127.0.0.1:0" picks a port) whose outbound traffic obeys n. Since every
// member filters what it sends, a cut link is silent both ways.
func (n *FaultNet) Transport(bind string) (*FaultTransport, error) {
	host, ps, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("gossiptest: fault transport %q: %w", bind, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("gossiptest: fault transport %q: bad port %q", bind, ps)
	}
	// A picked port is the TCP listener's; the UDP port of the same number
	// may be another process's (QUIC listeners of other tests), so try a
	// few picks, as memberlist does for its own transport.
	tries := 1
	if port == 0 {
		tries = 10
	}
	var nt *memberlist.NetTransport
	for i := 0; i < tries; i++ {
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{host},
			BindPort:  port,
			Logger:    log.New(io.Discard, "", 0),
		})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("gossiptest: fault transport %q: %w", bind, err)
	}
	return &FaultTransport{NetTransport: nt, net: n, self: net.JoinHostPort(host, fmt.Sprint(nt.GetAutoBindPort()))}, nil
}

// FaultTransport is a memberlist.NodeAwareTransport that drops what its
// FaultNet forbids.
type FaultTransport struct {
	*memberlist.NetTransport
	net  *FaultNet
	self string
}

// Addr is the transport's host:port.
func (t *FaultTransport) Addr() string { return t.self }

// WriteTo implements memberlist.Transport.
func (t *FaultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.net.blocked(t.self, addr) {
		return time.Now(), nil // lost on the wire
	}
	return t.NetTransport.WriteTo(b, addr)
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *FaultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.net.blocked(t.self, a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

// DialTimeout implements memberlist.Transport.
func (t *FaultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.net.blocked(t.self, addr) {
		return nil, fmt.Errorf("gossiptest: dial %s: link cut", addr)
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *FaultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}
