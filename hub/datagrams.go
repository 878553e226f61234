package hub

import (
	"context"
	"errors"
	"time"

	"github.com/edgehub/edgehub/internal/record"
	"github.com/edgehub/edgehub/quic"
	"github.com/edgehub/edgehub/store"
)

// Datagrams are fire-and-forget produce (docs/protocol.md): a produce session
// opened with quic.ProduceDatagrams gets a session id, and QUIC datagrams
// naming it are queued and appended without an acknowledgement.

const (
	// datagramQueue and datagramWorkers: datagram batches wait here for an
	// append; a full queue drops them (they are lossy by contract).
	datagramQueue   = 1024
	datagramWorkers = 2
)

type sessionKey struct {
	conn, id uint64
}

type dgSession struct {
	stream *store.Stream
}

type dgBatch struct {
	stream *store.Stream
	shard  int
	recs   []record.Record
}

// openDatagramSession gives a produce session on conn to st a datagram
// session id; end forgets it when the produce session ends.
func (d *dataPlane) openDatagramSession(conn *quic.Conn, st *store.Stream) (id uint64, end func()) {
	id = d.nextSess.Add(1)
	key := sessionKey{conn.ID(), id}
	d.sessMu.Lock()
	d.sessions[key] = &dgSession{stream: st}
	d.sessMu.Unlock()
	return id, func() {
		d.sessMu.Lock()
		delete(d.sessions, key)
		d.sessMu.Unlock()
	}
}

// datagram queues a fire-and-forget batch. Unknown sessions (a session that
// just ended) and a full queue drop the batch; a malformed datagram closes
// the connection.
func (d *dataPlane) datagram(c *quic.Conn, payload []byte) error {
	var dg quic.Datagram
	if err := dg.Decode(payload); err != nil {
		return quic.WireError(err)
	}
	d.sessMu.Lock()
	sess := d.sessions[sessionKey{c.ID(), dg.Session}]
	d.sessMu.Unlock()
	if sess == nil {
		d.m.dgDropped.WithLabelValues("unknown_session").Inc()
		return nil
	}
	if dg.Shard < -1 || int(dg.Shard) >= sess.stream.Shards() {
		d.m.dgDropped.WithLabelValues("bad_batch").Inc()
		return nil
	}
	if dg.Shard >= 0 && shardClosed(sess.stream, uint32(dg.Shard)) {
		d.m.dgDropped.WithLabelValues("shard_closed").Inc()
		return nil
	}
	// The payload is owned by us: records may alias it.
	recs, err := record.DecodeBatch(dg.Records, nil)
	if err != nil {
		return quic.Errorf(quic.CodeProtocol, "datagram batch: %v", err)
	}
	for i := range recs {
		if !recs[i].Origin.IsLocal() {
			return quic.Errorf(quic.CodeProtocol, "datagram record with a foreign origin")
		}
	}
	if checkProduced(recs) != nil {
		d.m.dgDropped.WithLabelValues("bad_batch").Inc()
		return nil
	}
	select {
	case d.dgrams <- dgBatch{stream: sess.stream, shard: int(dg.Shard), recs: recs}:
	default:
		d.m.dgDropped.WithLabelValues("queue_full").Inc()
	}
	return nil
}

// appendDatagrams appends queued datagram batches. A datagram holds a few
// records, so appending each alone would cost a commit per datagram: it
// takes whatever is queued and appends it as one batch per stream and shard.
func (d *dataPlane) appendDatagrams() {
	defer d.dgDone.Done()
	type target struct {
		stream *store.Stream
		shard  int
	}
	groups := map[target][]record.Record{}
	for {
		var b dgBatch
		select {
		case b = <-d.dgrams:
		case <-d.closing:
			return
		}
		clear(groups)
		n := 0
		for {
			k := target{b.stream, b.shard}
			groups[k] = append(groups[k], b.recs...)
			n += len(b.recs)
			if n >= 10000 {
				break
			}
			select {
			case b = <-d.dgrams:
				continue
			default:
			}
			break
		}
		for k, recs := range groups {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := k.stream.Append(ctx, store.Batch{Shard: k.shard, Records: recs})
			cancel()
			if errors.Is(err, store.ErrShardClosed) {
				// Closed between the datagram's arrival and its append.
				d.m.dgDropped.WithLabelValues("shard_closed").Inc()
				continue
			}
			if err != nil {
				d.m.dgDropped.WithLabelValues("append_failed").Inc()
				d.logger.Debug("data plane: datagram append failed", "stream", k.stream.Name(), "err", err)
				continue
			}
			d.m.records.WithLabelValues(k.stream.Name(), "datagram").Add(float64(len(recs)))
		}
	}
}
