package cluster

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// recorder is a handler that keeps the broadcasts it is given.
type recorder struct {
	mu   sync.Mutex
	got  []uint64 // versions, in arrival order
	from map[string]bool
}

func (r *recorder) handleBroadcast(_ context.Context, from string, b *wirev1.Broadcast) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cs := range b.GetChangesets() {
		r.got = append(r.got, cs.GetVersion())
	}
	r.from[from] = true
}

func (r *recorder) handleSync(context.Context, string, *wirev1.SyncState, func(*wirev1.SyncChunk) error) error {
	return nil
}

func (r *recorder) versions() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.got...)
}

func testTransport(t *testing.T, ca *CA, name string, h handler) *transport {
	t.Helper()
	creds, err := DevCredentials(ca, name)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := newTransport("127.0.0.1:0", "c", name, crdt.ActorID{byte(len(name))}, creds, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); tr.close(); <-done })
	return tr
}

// transportPair starts a receiving and a sending transport under one CA;
// rec records what the receiver is given. before, if not nil, runs on the
// receiver before the sender first dials it.
func transportPair(t *testing.T, before func(recv *transport)) (recv, send *transport, rec *recorder) {
	t.Helper()
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	rec = &recorder{from: map[string]bool{}}
	recv = testTransport(t, ca, "recv", rec)
	if before != nil {
		before(recv)
	}
	return recv, testTransport(t, ca, "send", &recorder{from: map[string]bool{}}), rec
}

// testMessage is a Broadcast of one empty changeset of version v.
func testMessage(v uint64) *wirev1.Broadcast {
	return &wirev1.Broadcast{Changesets: []*wirev1.Changeset{{Actor: make([]byte, 16), Version: v}}}
}

// waitFor waits until r holds n messages.
func (r *recorder) waitFor(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.versions()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("received %v, want %d messages", r.versions(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBroadcastsShareAStream: messages to one peer arrive in order on one
// stream, whether sent at once or by the waiting path; to a peer marked as
// taking one message per stream, they arrive too, each on its own.
func TestBroadcastsShareAStream(t *testing.T) {
	recv, send, rec := transportPair(t, nil)
	ctx := context.Background()
	msg := testMessage
	waitFor := func(n int) { t.Helper(); rec.waitFor(t, n) }
	if send.tryBroadcast(recv.addr(), msg(1)) {
		t.Fatal("sent at once with no connection yet")
	}
	for v := uint64(1); v <= 25; v++ {
		if err := send.sendBroadcast(ctx, recv.addr(), msg(v)); err != nil {
			t.Fatal(err)
		}
	}
	// With the stream open and idle, small messages go at once.
	for v := uint64(26); v <= 50; v++ {
		if !send.tryBroadcast(recv.addr(), msg(v)) {
			t.Fatalf("message %d not sent at once on an idle stream", v)
		}
	}
	waitFor(50)
	pc, err := send.peer(ctx, recv.addr())
	if err != nil {
		t.Fatal(err)
	}
	first := pc.bst
	if first == nil {
		t.Fatal("no broadcast stream kept")
	}
	if err := send.sendBroadcast(ctx, recv.addr(), msg(51)); err != nil || pc.bst != first {
		t.Fatalf("a later message did not reuse the stream (err %v)", err)
	}
	waitFor(51)
	got := rec.versions()
	for i, v := range got {
		if v != uint64(i+1) {
			t.Fatalf("messages on the shared stream out of order: %v", got)
		}
	}
	// One stream per message: they may arrive in any order, but all do.
	pc.legacy = true
	for v := uint64(52); v <= 60; v++ {
		if err := send.sendBroadcast(ctx, recv.addr(), msg(v)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(60)
	seen := map[uint64]bool{}
	for _, v := range rec.versions()[51:] {
		seen[v] = true
	}
	for v := uint64(52); v <= 60; v++ {
		if !seen[v] {
			t.Fatalf("message %d sent on a stream of its own did not arrive: %v", v, rec.versions())
		}
	}
	if !rec.from["send"] {
		t.Fatalf("messages not credited to the sender: %v", rec.from)
	}
}

// TestEarlierPeerGetsAStreamPerMessage: a peer whose hello does not offer
// the shared stream, as an earlier release's does not, is sent a stream
// per message from the first, and every message arrives.
func TestEarlierPeerGetsAStreamPerMessage(t *testing.T) {
	recv, send, rec := transportPair(t, func(recv *transport) { recv.self.BroadcastStream = false })
	ctx := context.Background()
	for v := uint64(1); v <= 10; v++ {
		if err := send.sendBroadcast(ctx, recv.addr(), testMessage(v)); err != nil {
			t.Fatal(err)
		}
	}
	pc, err := send.peer(ctx, recv.addr())
	if err != nil {
		t.Fatal(err)
	}
	if !pc.legacy || pc.bst != nil {
		t.Fatalf("shared stream used with a peer that did not offer it (legacy %v)", pc.legacy)
	}
	rec.waitFor(t, 10)
}

// TestRestartedPeerResetsOldConnection: a peer that crashed and came back
// on the same address, with the same key, answers the old connection's
// next packet with a stateless reset, so the sender drops that connection
// at once instead of writing into it until the idle timeout (30 s).
func TestRestartedPeerResetsOldConnection(t *testing.T) {
	ca, creds, rec, logger := receiverParts(t)
	recv, err := newTransport("127.0.0.1:0", "c", "recv", crdt.ActorID{1}, creds, rec, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go recv.run(ctx)
	addr := recv.addr()
	send := testTransport(t, ca, "send", &recorder{from: map[string]bool{}})
	if err := send.sendBroadcast(ctx, addr, testMessage(1)); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, 1)

	// A crash: the socket goes, and no CONNECTION_CLOSE is sent.
	recv.udp.Close()
	recv.tr.Close()
	again, err := newTransport(addr, "c", "recv", crdt.ActorID{1}, creds, rec, logger)
	if err != nil {
		t.Fatal(err)
	}
	go again.run(ctx)
	defer again.close()

	// The old connection still looks open to the sender; its next write
	// draws the reset.
	deadline := time.Now().Add(10 * time.Second)
	for v := uint64(2); send.connected(addr); v++ {
		if time.Now().After(deadline) {
			t.Fatal("the connection to the restarted peer still looks open after 10 s")
		}
		_ = send.tryBroadcast(addr, testMessage(v))
		time.Sleep(20 * time.Millisecond)
	}
	// The next message dials the new process and arrives.
	if err := send.sendBroadcast(ctx, addr, testMessage(100)); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !slices.Contains(rec.versions(), 100) {
		if time.Now().After(deadline) {
			t.Fatalf("received %v after the restart, want version 100", rec.versions())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// syncServer answers every sync request with serve.
type syncServer struct {
	recorder
	serve func(send func(*wirev1.SyncChunk) error) error
}

func (s *syncServer) handleSync(_ context.Context, _ string, _ *wirev1.SyncState, send func(*wirev1.SyncChunk) error) error {
	return s.serve(send)
}

// TestSyncCutsOffAPeerPastTheBounds: an exchange whose peer trickles
// empty chunks that never end it, or streams more versions than an
// exchange holds, ends with an error at once, instead of holding the
// member's syncs for as long as the peer likes.
func TestSyncCutsOffAPeerPastTheBounds(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	trickle := func(send func(*wirev1.SyncChunk) error) error {
		for {
			if err := send(&wirev1.SyncChunk{}); err != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	flood := func(send func(*wirev1.SyncChunk) error) error {
		for v := uint64(1); ; v++ {
			if err := send(&wirev1.SyncChunk{Changesets: testMessage(v).GetChangesets()}); err != nil {
				return err
			}
		}
	}
	for name, serve := range map[string]func(func(*wirev1.SyncChunk) error) error{"trickle": trickle, "flood": flood} {
		peer := testTransport(t, ca, "peer-"+name, &syncServer{recorder: recorder{from: map[string]bool{}}, serve: serve})
		self := testTransport(t, ca, "self-"+name, &recorder{from: map[string]bool{}})
		chunks := 0
		err := self.sync(context.Background(), peer.addr(), &wirev1.SyncState{}, 1000, func(*wirev1.SyncChunk) error { chunks++; return nil })
		if err == nil || !strings.Contains(err.Error(), "past what an exchange holds") {
			t.Fatalf("%s: %v after %d chunks", name, err, chunks)
		}
	}
}

// TestFailedDialMarksAddressUntilADialSucceeds: a dial that finds nobody
// marks the address unreachable; one that finds the peer back clears it;
// a dial given up by the caller marks nothing; only the addresses of
// members still alive are remembered.
func TestFailedDialMarksAddressUntilADialSucceeds(t *testing.T) {
	ca, creds, rec, logger := receiverParts(t)
	gone, err := newTransport("127.0.0.1:0", "c", "recv", crdt.ActorID{1}, creds, rec, logger)
	if err != nil {
		t.Fatal(err)
	}
	addr := gone.addr()
	gone.close()
	send := testTransport(t, ca, "send", &recorder{from: map[string]bool{}})
	ctx := context.Background()

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := send.connect(canceled, addr); err == nil {
		t.Fatal("dialed a closed address")
	}
	if send.unreachable(addr) {
		t.Fatal("a dial the caller canceled marked the address")
	}
	if _, err := send.connect(ctx, addr); err == nil {
		t.Fatal("dialed a closed address")
	}
	if !send.unreachable(addr) {
		t.Fatal("a failed dial left the address unmarked")
	}
	send.keepFailures(func(a string) bool { return a == addr })
	if !send.unreachable(addr) {
		t.Fatal("keepFailures forgot an address it was told to keep")
	}
	send.keepFailures(func(string) bool { return false })
	if send.unreachable(addr) {
		t.Fatal("keepFailures kept an address it was told to forget")
	}
	if _, err := send.connect(ctx, addr); err == nil || !send.unreachable(addr) {
		t.Fatalf("dial of a closed address: %v, marked %v", err, send.unreachable(addr))
	}

	back, err := newTransport(addr, "c", "recv", crdt.ActorID{1}, creds, rec, logger)
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go back.run(rctx)
	defer back.close()
	if _, err := send.connect(ctx, addr); err != nil {
		t.Fatal(err)
	}
	if send.unreachable(addr) {
		t.Fatal("a successful dial left the address marked")
	}
}

// receiverParts are what a test needs to start a receiving transport,
// stop it and start it again on the same address: a CA, the receiver's
// credentials, a recorder and a quiet logger.
func receiverParts(t *testing.T) (*CA, *Credentials, *recorder, *slog.Logger) {
	t.Helper()
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := DevCredentials(ca, "recv")
	if err != nil {
		t.Fatal(err)
	}
	return ca, creds, &recorder{from: map[string]bool{}}, slog.New(slog.NewTextHandler(io.Discard, nil))
}
