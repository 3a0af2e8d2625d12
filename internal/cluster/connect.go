package cluster

import (
	"context"
	"time"
)

// Connections are opened ahead of need: a member dials every alive member
// as soon as it hears of it, so the first versions after a join (or after
// a cluster starts, when every member would otherwise handshake with every
// other at once, on the first write) do not wait for a TLS handshake.

const (
	// connectEvery is how often the loop looks for members it has no
	// connection to, besides when the membership changes.
	connectEvery = 2 * time.Second
	// connectParallel bounds the dials in flight at once.
	connectParallel = 4
)

// connectLoop keeps a data-plane connection open to every alive member,
// and forgets the failed dials of members no longer alive: one that comes
// back is dialed at once, and only its own dial makes it suspect again.
// It is not watched by the watchdog: a dial may take dialTimeout, and
// nothing else waits on this loop.
func (n *Node) connectLoop(ctx context.Context) {
	t := time.NewTicker(connectEvery)
	defer t.Stop()
	slots := make(chan struct{}, connectParallel)
	for {
		members := n.ms.members()
		for _, m := range members {
			// A suspect member (see Node.members) is dialed too: that is
			// how it stops being suspect.
			if m.State != "alive" || m.Name == n.cfg.Name || m.QUICAddr == "" || n.tr.connected(m.QUICAddr) {
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			n.sends.Add(1)
			go func() {
				defer n.sends.Done()
				defer func() { <-slots }()
				if _, err := n.tr.connect(ctx, m.QUICAddr); err != nil {
					n.log.Debug("connect failed", "to", m.Name, "err", err)
				}
			}()
		}
		n.tr.keepFailures(func(addr string) bool {
			for _, m := range members {
				if m.QUICAddr == addr && m.State == "alive" {
					return true
				}
			}
			return false
		})
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.ms.changed:
		}
	}
}
