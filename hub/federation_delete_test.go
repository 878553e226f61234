package hub

import (
	"net/http"
	"testing"

	"github.com/edgehub/edgehub/internal/testutil"
)

// deleteStreamHTTP deletes a stream through the admin API.
func deleteStreamHTTP(tb testing.TB, admin, name string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodDelete, admin+"/v1/streams/"+name+"?force=true", nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		tb.Fatalf("DELETE %s: %s", name, resp.Status)
	}
}

func hasStream(h *Hub, name string) bool {
	_, err := h.Store().Stream(name)
	return err == nil
}

// publishedTombstone reports whether h's gossip carries a tombstone of
// stream published by hub.
func publishedTombstone(h *Hub, hub, stream string) bool {
	d, ok := h.federation.gossip.Streams()[stream].Defs[hub]
	return ok && d.Deleted
}

// TestFederationDeleteReplicatedStream: deleting a replicated stream at one
// hub deletes every copy, records of every origin included (hub-b's and
// hub-c's own records too), and nobody's older definition recreates it.
// Created again, it replicates again from its new incarnation.
func TestFederationDeleteReplicatedStream(t *testing.T) {
	if testing.Short() {
		t.Skip("three federated hubs")
	}
	n := newFedNet(t)
	a, adminA := startHub(t, n.config("hub-a", ""))
	b, _ := startHub(t, n.config("hub-b", ""))
	c, _ := startHub(t, n.config("hub-c", ""))
	hubs := []*Hub{a, b, c}
	createReplicated(t, a, "events", 2, "all")
	for _, h := range hubs {
		produceAt(t, h, "events", 100, 16)
	}
	converged(t, "events", 300, hubs...)

	deleteStreamHTTP(t, adminA, "events")
	testutil.Eventually(t, "every hub to delete its copy and publish the tombstone", func() bool {
		for _, h := range hubs {
			if hasStream(h, "events") {
				return false
			}
			for _, p := range hubs {
				if !publishedTombstone(h, p.cfg.Hub.Name, "events") {
					return false
				}
			}
		}
		return true
	})
	// Every hub has seen every tombstone, so every definition of the
	// stream is withdrawn: nothing is left to recreate it.
	for _, h := range hubs {
		if d, ok := h.federation.gossip.Streams()["events"].Def(); ok {
			t.Fatalf("%s: the federation still defines events: %+v", h.cfg.Hub.Name, d)
		}
		if hasStream(h, "events") {
			t.Fatalf("%s recreated events", h.cfg.Hub.Name)
		}
	}

	// Created again at hub-b: a definition newer than the tombstone.
	createReplicated(t, b, "events", 1, "all")
	for _, h := range hubs {
		mustStreamEventually(t, h, "events")
	}
	produceAt(t, b, "events", 50, 16)
	produceAt(t, c, "events", 20, 16)
	converged(t, "events", 70, hubs...)
	// hub-b applied the deletion before it created the stream again: it
	// must publish the new definition only, not its old tombstone too
	// (both take the same gossip key).
	for _, h := range hubs {
		if d, ok := h.federation.gossip.Streams()["events"].Defs["hub-b"]; !ok || d.Deleted {
			t.Fatalf("%s sees hub-b's entry for the recreated stream as %+v (present %t)", h.cfg.Hub.Name, d, ok)
		}
	}
	if v, _ := b.federation.gossip.Streams()["events"].Def(); v.Deleted {
		t.Fatal("the recreated stream's winning definition is a deletion")
	}
}
