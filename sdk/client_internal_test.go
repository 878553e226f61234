package sdk

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A dial attempt that times out while the caller's context is alive (a hub
// restarting under load) must be retryable, or producers fail their records
// instead of reconnecting.
func TestDialAttemptTimeoutIsRetryable(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // swallows packets, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_, err = Dial(context.Background(), silent.LocalAddr().String(), Options{Insecure: true, DialTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("dial to a silent address succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) || !retryable(err) {
		t.Fatalf("attempt timeout is not retryable: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = Dial(ctx, silent.LocalAddr().String(), Options{Insecure: true, DialTimeout: time.Hour})
	if err == nil || retryable(err) {
		t.Fatalf("the caller's own deadline must not be retried: %v", err)
	}
}
