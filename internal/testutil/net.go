package testutil

import (
	"net"
	"testing"
)

// FreeAddr returns a loopback address of network ("udp" or "tcp") that was
// free a moment ago, for a server that must come back at the same address
// after a restart; anything else should listen on port 0 itself.
func FreeAddr(tb testing.TB, network string) string {
	tb.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	ln, err := net.Listen(network, "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// FreePort returns a loopback port free for both UDP and TCP a moment ago
// (memberlist binds both on its port).
func FreePort(tb testing.TB) int {
	tb.Helper()
	for range 20 {
		l, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	tb.Fatal("no loopback port free for both UDP and TCP")
	return 0
}
