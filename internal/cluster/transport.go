package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// Stream kinds: the first byte of every stream after the hello.
const (
	streamBroadcast  byte = 'B' // uni: one Broadcast frame (earlier members send this)
	streamBroadcasts byte = 'b' // uni: Broadcast frames, one after another, for the connection's life
	streamSync       byte = 'S' // bidi: SyncState, then SyncChunk frames back
)

// Stream error codes.
const (
	streamDone    quic.StreamErrorCode = 0
	streamRefused quic.StreamErrorCode = 0x201
)

// QUIC application error codes.
const (
	codeOK           quic.ApplicationErrorCode = 0
	codeWrongCluster quic.ApplicationErrorCode = 0x101
	codeBadHello     quic.ApplicationErrorCode = 0x102
)

// handler is what the transport delivers to.
type handler interface {
	handleBroadcast(ctx context.Context, from string, b *wirev1.Broadcast)
	handleSync(ctx context.Context, from string, state *wirev1.SyncState, send func(*wirev1.SyncChunk) error) error
}

// transport is the QUIC data plane: one UDP socket for listening and
// dialing, one connection per peer, reused; every connection starts with a
// hello in each direction naming the cluster.
type transport struct {
	cluster string
	self    *wirev1.Hello
	tlsConf *tls.Config
	qconf   *quic.Config
	udp     net.PacketConn
	tr      *quic.Transport
	ln      *quic.Listener
	h       handler
	log     *slog.Logger
	sent    *atomic.Uint64 // payload bytes written, when set

	mu    sync.Mutex
	conns map[string]*peerConn // by address
	// failed holds the addresses whose last dial failed, since when: the
	// data plane's own evidence that a member is down (see Node.members).
	failed map[string]time.Time
	closed bool
	wg     sync.WaitGroup // connection goroutines; Add only under mu while !closed
}

// track runs fn in a connection goroutine unless the transport is closing.
func (t *transport) track(fn func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		fn()
	}()
	return true
}

type peerConn struct {
	conn  *quic.Conn
	ready chan struct{} // closed once the hello exchange finished
	err   error
	name  string

	// The stream broadcasts to this peer travel on, one message after
	// another, opened by the first. out holds the right to write on it.
	out    chan struct{}
	bst    *quic.SendStream
	bw     *bufio.Writer
	legacy bool // the peer's hello did not offer the shared stream
	// parts: the peer joins versions sent in parts; one that does not
	// say so (an earlier release) would take a part for the version.
	parts bool
}

const (
	helloTimeout = 5 * time.Second
	dialTimeout  = 3 * time.Second
	// A connection that hears nothing for idleTimeout is closed. Each side
	// sends a keep-alive every keepAlive, so only a peer that is gone (a
	// crash, a lost host or path) goes that long without a packet; the
	// next dial then finds out whether it is back.
	idleTimeout = 6 * time.Second
	keepAlive   = 2 * time.Second
	// ioTimeout bounds every read and write of a frame on a stream: a
	// peer that stops reading or writing cannot hold a goroutine, a sync
	// slot or the broadcast loop.
	ioTimeout = 10 * time.Second
)

func newTransport(addr, cluster, name string, actor crdt.ActorID, creds *Credentials, h handler, log *slog.Logger) (*transport, error) {
	tlsConf, err := creds.tlsConfig()
	if err != nil {
		return nil, err
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("quic address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("quic listen %s: %w", addr, err)
	}
	resetKey, err := creds.statelessResetKey()
	if err != nil {
		udp.Close()
		return nil, err
	}
	t := &transport{
		cluster: cluster,
		self:    &wirev1.Hello{Cluster: cluster, Actor: actor[:], Name: name, BroadcastStream: true, VersionParts: true},
		tlsConf: tlsConf,
		qconf:   &quic.Config{MaxIdleTimeout: idleTimeout, KeepAlivePeriod: keepAlive, HandshakeIdleTimeout: dialTimeout, MaxIncomingStreams: 16, MaxIncomingUniStreams: 256},
		udp:     udp,
		tr:      &quic.Transport{Conn: udp, StatelessResetKey: resetKey},
		h:       h,
		log:     log,
		conns:   map[string]*peerConn{},
		failed:  map[string]time.Time{},
	}
	if t.ln, err = t.tr.Listen(tlsConf, t.qconf); err != nil {
		udp.Close()
		return nil, fmt.Errorf("quic listen %s: %w", addr, err)
	}
	return t, nil
}

func (t *transport) addr() string { return t.udp.LocalAddr().String() }

// run accepts connections until ctx ends.
func (t *transport) run(ctx context.Context) {
	for {
		conn, err := t.ln.Accept(ctx)
		if err != nil {
			return
		}
		if !t.track(func() { t.serveConn(ctx, conn) }) {
			conn.CloseWithError(codeOK, "shutting down")
			return
		}
	}
}

// close stops listening and closes every connection, then waits for the
// connection goroutines.
func (t *transport) close() {
	t.ln.Close()
	t.mu.Lock()
	t.closed = true
	for _, pc := range t.conns {
		if pc.conn != nil {
			pc.conn.CloseWithError(codeOK, "shutting down")
		}
	}
	t.conns = map[string]*peerConn{}
	t.mu.Unlock()
	t.tr.Close()
	t.udp.Close()
	t.wg.Wait()
}

// serveConn handles an accepted connection: the peer's hello first, then
// its streams.
func (t *transport) serveConn(ctx context.Context, conn *quic.Conn) {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	peer, err := t.acceptHello(hctx, conn)
	cancel()
	if err != nil {
		t.log.Debug("refused connection", "from", conn.RemoteAddr(), "err", err)
		return
	}
	t.serveStreams(ctx, conn, peer.GetName())
}

func (t *transport) acceptHello(ctx context.Context, conn *quic.Conn) (*wirev1.Hello, error) {
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		conn.CloseWithError(codeBadHello, "no hello")
		return nil, err
	}
	st.SetDeadline(time.Now().Add(helloTimeout))
	var hello wirev1.Hello
	if err := readFrameLimit(bufio.NewReader(st), &hello, maxHello); err != nil {
		conn.CloseWithError(codeBadHello, "bad hello")
		return nil, err
	}
	if hello.GetCluster() != t.cluster {
		conn.CloseWithError(codeWrongCluster, "wrong cluster")
		return nil, fmt.Errorf("peer %q is in cluster %q, not %q", hello.GetName(), hello.GetCluster(), t.cluster)
	}
	if err := writeFrame(st, t.self); err != nil {
		conn.CloseWithError(codeBadHello, "hello not taken")
		return nil, err
	}
	st.Close()
	return &hello, nil
}

func (t *transport) serveStreams(ctx context.Context, conn *quic.Conn, from string) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			st, err := conn.AcceptUniStream(ctx)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				t.serveBroadcast(ctx, st, from)
			}()
		}
	}()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.serveSync(ctx, st, from)
		}()
	}
}

func (t *transport) serveBroadcast(ctx context.Context, st *quic.ReceiveStream, from string) {
	st.SetReadDeadline(time.Now().Add(ioTimeout))
	r := bufio.NewReader(st)
	kind, err := r.ReadByte()
	if err != nil || (kind != streamBroadcast && kind != streamBroadcasts) {
		st.CancelRead(streamRefused)
		return
	}
	for {
		if kind == streamBroadcasts {
			// Between messages the stream may rest as long as the
			// connection lives; a message, once begun, must arrive
			// within ioTimeout.
			st.SetReadDeadline(time.Time{})
			if _, err := r.Peek(1); err != nil {
				if !errors.Is(err, io.EOF) && ctx.Err() == nil {
					t.log.Debug("broadcast stream ended", "from", from, "err", err)
				}
				st.CancelRead(streamDone)
				return
			}
			st.SetReadDeadline(time.Now().Add(ioTimeout))
		}
		var b wirev1.Broadcast
		if err := readFrameLimit(r, &b, maxPartFrame); err != nil {
			t.log.Debug("bad broadcast", "from", from, "err", err)
			st.CancelRead(streamRefused)
			return
		}
		t.h.handleBroadcast(ctx, from, &b)
		if kind == streamBroadcast {
			return
		}
	}
}

func (t *transport) serveSync(ctx context.Context, st *quic.Stream, from string) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(ioTimeout))
	r := bufio.NewReader(st)
	kind, err := r.ReadByte()
	if err != nil || kind != streamSync {
		st.CancelRead(streamRefused)
		return
	}
	var state wirev1.SyncState
	if err := readFrame(r, &state); err != nil {
		t.log.Debug("bad sync request", "from", from, "err", err)
		st.CancelRead(streamRefused)
		return
	}
	err = t.h.handleSync(ctx, from, &state, func(c *wirev1.SyncChunk) error {
		st.SetWriteDeadline(time.Now().Add(ioTimeout))
		return writeFrame(t.counting(st), c)
	})
	if err != nil {
		t.log.Debug("sync serve", "to", from, "err", err)
		st.CancelWrite(streamRefused)
	}
}

// connect returns the connection to addr, dialing (and exchanging hellos)
// if needed.
func (t *transport) connect(ctx context.Context, addr string) (*quic.Conn, error) {
	pc, err := t.peer(ctx, addr)
	if err != nil {
		return nil, err
	}
	return pc.conn, nil
}

// peer returns the open connection to addr with its broadcast stream,
// dialing if needed.
func (t *transport) peer(ctx context.Context, addr string) (*peerConn, error) {
	t.mu.Lock()
	pc := t.conns[addr]
	if pc != nil {
		t.mu.Unlock()
		select {
		case <-pc.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if pc.open() {
			return pc, nil
		}
		t.mu.Lock()
		if t.conns[addr] == pc {
			delete(t.conns, addr)
		}
		t.mu.Unlock()
		return t.peer(ctx, addr)
	}
	pc = &peerConn{ready: make(chan struct{}), out: make(chan struct{}, 1)}
	t.conns[addr] = pc
	t.mu.Unlock()

	conn, hello, err := t.dial(ctx, addr)
	t.mu.Lock()
	pc.conn, pc.err = conn, err
	pc.legacy = err == nil && !hello.GetBroadcastStream()
	pc.parts = err == nil && hello.GetVersionParts()
	switch {
	case err == nil:
		delete(t.failed, addr)
	case ctx.Err() == nil && !t.closed:
		// Not a dial this member gave up on (a send's deadline, its own
		// shutdown): the peer did not answer, or refused.
		if _, ok := t.failed[addr]; !ok {
			t.failed[addr] = time.Now()
		}
	}
	t.mu.Unlock()
	close(pc.ready)
	if pc.err != nil {
		t.mu.Lock()
		if t.conns[addr] == pc {
			delete(t.conns, addr)
		}
		t.mu.Unlock()
		return nil, pc.err
	}
	return pc, nil
}

func (t *transport) dial(ctx context.Context, addr string) (*quic.Conn, *wirev1.Hello, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := t.tr.Dial(dctx, udpAddr, t.tlsConf, t.qconf)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	st, err := conn.OpenStreamSync(dctx)
	if err != nil {
		conn.CloseWithError(codeBadHello, "")
		return nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	st.SetDeadline(time.Now().Add(helloTimeout))
	if err := writeFrame(st, t.self); err != nil {
		conn.CloseWithError(codeBadHello, "")
		return nil, nil, fmt.Errorf("dial %s: hello: %w", addr, err)
	}
	var hello wirev1.Hello
	if err := readFrameLimit(bufio.NewReader(st), &hello, maxHello); err != nil {
		conn.CloseWithError(codeBadHello, "")
		return nil, nil, fmt.Errorf("dial %s: hello: %w", addr, err)
	}
	st.Close()
	if hello.GetCluster() != t.cluster {
		conn.CloseWithError(codeWrongCluster, "wrong cluster")
		return nil, nil, fmt.Errorf("dial %s: peer is in cluster %q, not %q", addr, hello.GetCluster(), t.cluster)
	}
	// Serve what the peer opens on this connection too.
	if !t.track(func() { t.serveStreams(conn.Context(), conn, hello.GetName()) }) {
		conn.CloseWithError(codeOK, "shutting down")
		return nil, nil, fmt.Errorf("dial %s: transport closed", addr)
	}
	return conn, &hello, nil
}

// sendBroadcast sends one Broadcast message to addr, giving up after
// ioTimeout. Messages to one peer share a stream, opened by the first and
// kept while the connection lasts: a stream per message costs both sides
// more than the message. A stream that fails is closed (the peer drops a
// message cut short) and the next message opens another. A peer whose
// hello does not offer the shared stream (an earlier release) gets a
// stream per message; one that does not offer to join versions in parts
// gets the message without them.
func (t *transport) sendBroadcast(ctx context.Context, addr string, b *wirev1.Broadcast) error {
	ctx, cancel := context.WithTimeout(ctx, ioTimeout)
	defer cancel()
	pc, err := t.peer(ctx, addr)
	if err != nil {
		return err
	}
	select {
	case pc.out <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("broadcast to %s: %w", addr, ctx.Err())
	}
	defer func() { <-pc.out }()
	if !pc.parts {
		if b = wholeOnly(b); b == nil {
			return nil
		}
	}
	if pc.legacy {
		return t.sendOnStream(ctx, pc, addr, b)
	}
	if pc.bst == nil {
		st, err := pc.conn.OpenUniStreamSync(ctx)
		if err != nil {
			t.forget(addr, pc.conn)
			return fmt.Errorf("broadcast to %s: %w", addr, err)
		}
		pc.bst, pc.bw = st, bufio.NewWriter(t.counting(st))
		pc.bw.WriteByte(streamBroadcasts)
	}
	pc.bst.SetWriteDeadline(time.Now().Add(ioTimeout))
	err = writeFrame(pc.bw, b)
	if err == nil {
		err = pc.bw.Flush()
	}
	if err != nil {
		// Closed, not reset: a reset would also discard the messages
		// before this one that the peer has yet to read, which were
		// reported sent. The peer drops the cut-off frame at the end.
		pc.bst.Close()
		pc.bst, pc.bw = nil, nil
		return fmt.Errorf("broadcast to %s: %w", addr, err)
	}
	return nil
}

// tryBroadcast sends b at once, without a goroutine and without
// waiting: only when the connection to addr is up, its broadcast stream is
// open and idle, and QUIC can queue the whole message now. Otherwise it
// sends nothing and reports false, and the caller uses sendBroadcast.
func (t *transport) tryBroadcast(addr string, b *wirev1.Broadcast) bool {
	pc, dialed := t.current(addr)
	if pc == nil || !dialed || !pc.open() {
		return false
	}
	select {
	case pc.out <- struct{}{}:
	default:
		return false // a send is under way
	}
	defer func() { <-pc.out }()
	if pc.legacy || pc.bst == nil || pc.bw.Buffered() > 0 {
		return false
	}
	if !pc.parts {
		if b = wholeOnly(b); b == nil {
			return true // nothing this peer takes
		}
	}
	buf, err := encodeFrame(b)
	if err != nil || len(buf) > maxPart {
		return false
	}
	// ErrWouldBlock (no flow-control credit now), or the stream failed:
	// the slow path waits, or resets and reports.
	if err := pc.bst.TryWriteAll(buf); err != nil {
		return false
	}
	if t.sent != nil {
		t.sent.Add(uint64(len(buf)))
	}
	return true
}

// sendOnStream sends one Broadcast message on a stream of its own.
func (t *transport) sendOnStream(ctx context.Context, pc *peerConn, addr string, b *wirev1.Broadcast) error {
	st, err := pc.conn.OpenUniStreamSync(ctx)
	if err != nil {
		t.forget(addr, pc.conn)
		return fmt.Errorf("broadcast to %s: %w", addr, err)
	}
	st.SetWriteDeadline(time.Now().Add(ioTimeout))
	w := bufio.NewWriter(t.counting(st))
	w.WriteByte(streamBroadcast)
	if err := writeFrame(w, b); err != nil {
		st.CancelWrite(streamDone)
		return err
	}
	if err := w.Flush(); err != nil {
		st.CancelWrite(streamDone)
		return fmt.Errorf("broadcast to %s: %w", addr, err)
	}
	return st.Close()
}

// syncExchangeTimeout bounds one sync exchange as a whole (each frame has
// ioTimeout too). A full exchange takes a few seconds.
const syncExchangeTimeout = time.Minute

// sync sends our state to addr and hands every chunk it streams back to
// fn. An honest peer sends at most maxVersions, in full chunks, then a
// done chunk, well within syncExchangeTimeout: one that trickles empty
// chunks or streams on past the bound is cut off, so that it cannot hold
// this member's syncs.
func (t *transport) sync(ctx context.Context, addr string, state *wirev1.SyncState, maxVersions int, fn func(*wirev1.SyncChunk) error) error {
	ctx, cancelExchange := context.WithTimeout(ctx, syncExchangeTimeout)
	defer cancelExchange()
	conn, err := t.connect(ctx, addr)
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, ioTimeout)
	st, err := conn.OpenStreamSync(octx)
	cancel()
	if err != nil {
		t.forget(addr, conn)
		return fmt.Errorf("sync with %s: %w", addr, err)
	}
	defer st.CancelRead(streamDone)
	st.SetWriteDeadline(time.Now().Add(ioTimeout))
	w := bufio.NewWriter(st)
	w.WriteByte(streamSync)
	if err := writeFrame(w, state); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("sync with %s: %w", addr, err)
	}
	st.Close() // our side is done writing
	r := bufio.NewReader(st)
	received, empty := 0, 0
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("sync with %s: %w", addr, ctx.Err())
		}
		deadline := time.Now().Add(ioTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		st.SetReadDeadline(deadline)
		var chunk wirev1.SyncChunk
		if err := readFrameLimit(r, &chunk, maxPartFrame); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("sync with %s: stream ended before done", addr)
			}
			return fmt.Errorf("sync with %s: %w", addr, err)
		}
		received += int(versionsIn(chunk.GetChangesets()))
		if len(chunk.GetChangesets()) == 0 && !chunk.GetDone() {
			empty++
		}
		if received > maxVersions+syncChunkSize || empty > 1 {
			return fmt.Errorf("sync with %s: the peer sends past what an exchange holds (%d versions, %d empty chunks)", addr, received, empty)
		}
		if err := fn(&chunk); err != nil {
			return err
		}
		if chunk.GetDone() {
			return nil
		}
	}
}

// connected reports whether a connection to addr is open or being
// opened.
func (t *transport) connected(addr string) bool {
	pc, dialed := t.current(addr)
	return pc != nil && (!dialed || pc.open())
}

// current is the connection to addr, if any, and whether its dial (and
// hello) has finished.
func (t *transport) current(addr string) (pc *peerConn, dialed bool) {
	t.mu.Lock()
	pc = t.conns[addr]
	t.mu.Unlock()
	if pc == nil {
		return nil, false
	}
	select {
	case <-pc.ready:
		return pc, true
	default:
		return pc, false
	}
}

// unreachable reports whether the last dial to addr failed, with no
// successful one since.
func (t *transport) unreachable(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.failed[addr]
	return ok
}

// keepFailures forgets the failed dials of addresses keep does not hold,
// so that members long gone leave nothing behind.
func (t *transport) keepFailures(keep func(addr string) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for a := range t.failed {
		if !keep(a) {
			delete(t.failed, a)
		}
	}
}

// open reports whether a dialed connection succeeded and is still up.
func (pc *peerConn) open() bool { return pc.err == nil && pc.conn.Context().Err() == nil }

// open counts the connections this member dialed that are open.
func (t *transport) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, pc := range t.conns {
		select {
		case <-pc.ready:
			if pc.open() {
				n++
			}
		default:
		}
	}
	return n
}

// forget drops a connection that failed to open a stream, and closes it:
// the next message dials afresh, and the peer's goroutines for it (its
// end of the broadcast stream) end.
func (t *transport) forget(addr string, conn *quic.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pc := t.conns[addr]; pc != nil && pc.conn == conn {
		delete(t.conns, addr)
		conn.CloseWithError(codeOK, "stream could not be opened")
	}
}

// counting counts what is written through it into t.sent.
func (t *transport) counting(w io.Writer) io.Writer {
	if t.sent == nil {
		return w
	}
	return countingWriter{w, t.sent}
}

type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(uint64(n))
	return n, err
}
