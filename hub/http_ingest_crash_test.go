package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgehub/edgehub/internal/testutil"
	"github.com/edgehub/edgehub/store"
)

// TestHTTPIngestKill9: a `hub serve` child takes JSON lines from several
// HTTP producers and is killed with SIGKILL while they send; after a
// restart every record it acknowledged is there, at the position it was
// acknowledged with.
func TestHTTPIngestKill9(t *testing.T) {
	dir := t.TempDir()
	conf := writeHubToml(t, dir, "[[stream]]\nname = \"events\"\nshards = 3\n")
	c := startChild(t, conf)
	url := "http://" + c.admin + "/v1/streams/events/records"
	acks := newAckLog()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			for i := 0; !stop.Load(); i++ {
				var body bytes.Buffer
				var values []string
				for j := range 10 {
					v := fmt.Sprintf("p%d-%d-%d", p, i, j)
					values = append(values, v)
					fmt.Fprintf(&body, "{\"key\":\"k%d\",\"value\":%q}\n", j, v)
				}
				resp, err := client.Post(url, ContentTypeNDJSON, &body)
				if err != nil {
					return // the hub is gone
				}
				var res IngestResult
				err = json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK {
					return
				}
				for k, pos := range res.Records {
					acks.add(store.Position{Shard: pos.Shard, Seq: pos.Seq}, values[k])
				}
			}
		}()
	}
	testutil.Eventually(t, "acknowledged records", func() bool { return acks.len() >= 400 })
	c.kill() // while the producers send
	stop.Store(true)
	wg.Wait()
	t.Logf("%d records acknowledged before SIGKILL", acks.len())

	c = startChild(t, conf)
	checkAcks(t, acks, "http://"+c.admin, dialChild(t, c), "events")
}
