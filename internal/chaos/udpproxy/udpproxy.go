// Package udpproxy relays UDP datagrams to one target through an impaired
// link: delay with jitter, loss, duplication and reordering. The fault
// suite puts it between hubs because this machine's kernel has no netem; it
// carries QUIC (replication) without caring what is inside.
//
// Each client address gets its own upstream socket, so the target sees one
// peer per client and answers come back to the client they belong to.
// Impairments apply in both directions and can change while it runs.
package udpproxy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// Impairment describes the link. The zero value relays every datagram at
// once. Probabilities are per datagram, from 0 to 1.
type Impairment struct {
	// Delay holds every datagram this long, plus up to Jitter more.
	Delay  time.Duration
	Jitter time.Duration
	// Loss drops a datagram.
	Loss float64
	// Duplicate sends a datagram twice.
	Duplicate float64
	// Reorder holds a datagram back by ReorderBy on top of its delay, so
	// those sent after it overtake it.
	Reorder   float64
	ReorderBy time.Duration
	// Blocked drops everything: a partition at the proxy.
	Blocked bool
}

// Validate reports every problem in i at once.
func (i Impairment) Validate() error {
	var errs []error
	for _, p := range []struct {
		name string
		v    float64
	}{{"loss", i.Loss}, {"duplicate", i.Duplicate}, {"reorder", i.Reorder}} {
		if p.v < 0 || p.v > 1 {
			errs = append(errs, fmt.Errorf("udpproxy: %s %v outside 0..1", p.name, p.v))
		}
	}
	if i.Delay < 0 || i.Jitter < 0 || i.ReorderBy < 0 {
		errs = append(errs, errors.New("udpproxy: negative delay, jitter or reorder_by"))
	}
	if i.Reorder > 0 && i.ReorderBy == 0 {
		errs = append(errs, errors.New("udpproxy: reorder needs reorder_by"))
	}
	return errors.Join(errs...)
}

// Stats counts datagrams, both directions together.
type Stats struct {
	Received   int64 `json:"received"`
	Sent       int64 `json:"sent"` // including duplicates
	Dropped    int64 `json:"dropped"`
	Duplicated int64 `json:"duplicated"`
	Reordered  int64 `json:"reordered"`
	Flows      int   `json:"flows"`
}

// sockBuf is the receive buffer asked for on every socket: a burst of QUIC
// datagrams must not overflow it while the relay is descheduled.
const sockBuf = 4 << 20

// Proxy is a running relay. Close stops it.
type Proxy struct {
	ln     *net.UDPConn
	target *net.UDPAddr

	mu      sync.Mutex
	imp     Impairment
	rng     *rand.Rand
	flows   map[string]*net.UDPConn
	stats   Stats
	closed  bool
	timers  map[*time.Timer]struct{}
	readers sync.WaitGroup
}

// New listens on listen (host:port, port 0 for any) and relays to target.
func New(listen, target string, imp Impairment, seed uint64) (*Proxy, error) {
	if err := imp.Validate(); err != nil {
		return nil, err
	}
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: target %q: %w", target, err)
	}
	la, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: listen %q: %w", listen, err)
	}
	ln, err := net.ListenUDP("udp", la)
	if err != nil {
		return nil, fmt.Errorf("udpproxy: listen %q: %w", listen, err)
	}
	ln.SetReadBuffer(sockBuf)
	p := &Proxy{ln: ln, target: ta, imp: imp, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		flows: map[string]*net.UDPConn{}, timers: map[*time.Timer]struct{}{}}
	p.readers.Add(1)
	go p.run()
	return p, nil
}

// Addr is the address clients send to.
func (p *Proxy) Addr() *net.UDPAddr { return p.ln.LocalAddr().(*net.UDPAddr) }

// Set changes the impairment for datagrams received from now on.
func (p *Proxy) Set(imp Impairment) error {
	if err := imp.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	p.imp = imp
	p.mu.Unlock()
	return nil
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Flows = len(p.flows)
	return s
}

// Close stops relaying; datagrams still delayed are dropped. Idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for t := range p.timers {
		t.Stop()
	}
	clear(p.timers)
	for _, c := range p.flows {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.readers.Wait()
	return err
}

// relay applies the impairment to one datagram and schedules its copies.
func (p *Proxy) relay(b []byte, write func([]byte)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.stats.Received++
	imp := p.imp
	if imp.Blocked || p.rng.Float64() < imp.Loss {
		p.stats.Dropped++
		return
	}
	copies := 1
	if p.rng.Float64() < imp.Duplicate {
		copies = 2
		p.stats.Duplicated++
	}
	for range copies {
		d := imp.Delay
		if imp.Jitter > 0 {
			d += time.Duration(p.rng.Int64N(int64(imp.Jitter) + 1))
		}
		if p.rng.Float64() < imp.Reorder {
			d += imp.ReorderBy
			p.stats.Reordered++
		}
		p.stats.Sent++
		if d == 0 {
			write(b)
			continue
		}
		var t *time.Timer
		t = time.AfterFunc(d, func() {
			p.mu.Lock()
			_, live := p.timers[t]
			delete(p.timers, t)
			p.mu.Unlock()
			if live {
				write(b)
			}
		})
		p.timers[t] = struct{}{}
	}
}

func (p *Proxy) run() {
	defer p.readers.Done()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := p.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := p.flow(from)
		if up == nil {
			continue
		}
		p.relay(append([]byte(nil), buf[:n]...), func(b []byte) { up.Write(b) })
	}
}

// flow returns the upstream socket of client, dialling it the first time.
func (p *Proxy) flow(client *net.UDPAddr) *net.UDPConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if c, ok := p.flows[client.String()]; ok {
		return c
	}
	up, err := net.DialUDP("udp", nil, p.target)
	if err != nil {
		return nil
	}
	up.SetReadBuffer(sockBuf)
	p.flows[client.String()] = up
	p.readers.Add(1)
	go func() {
		defer p.readers.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := up.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ICMP unreachable while the target restarts
			}
			p.relay(append([]byte(nil), buf[:n]...), func(b []byte) { p.ln.WriteToUDP(b, client) })
		}
	}()
	return up
}
