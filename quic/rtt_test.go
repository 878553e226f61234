package quic

import (
	"context"
	"testing"
)

// BenchmarkRoundTrip measures one frame to the server and back on an open
// stream over loopback: the transport's share of an acknowledgement's
// latency.
func BenchmarkRoundTrip(b *testing.B) {
	h := startServer(b, nil)
	c := h.dial(b, nil)
	st, err := c.Open(context.Background(), OpInfo, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var cr Credit
	b.ReportAllocs()
	for i := range b.N {
		if err := st.Send(FrameCredit, &Credit{Bytes: uint64(i)}); err != nil {
			b.Fatal(err)
		}
		if err := st.Expect(FrameCredit, &cr); err != nil {
			b.Fatal(err)
		}
	}
}
