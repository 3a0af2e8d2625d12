package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/store"
)

// A transaction stream (POST /v1/transactions/stream) carries many
// transactions over one request: the body is NDJSON, one transaction per
// line in the shape /v1/transactions takes, and the response is NDJSON,
// one TxStreamResult per transaction, in the order they were sent. The
// two directions run at once (HTTP/1.1 full duplex), so a client may send
// a transaction before the previous ones are answered.
//
// What it saves is per request: no HTTP exchange per transaction, and the
// transactions queued on a stream, or on several, share group commits.
// Transactions of one stream commit in the order sent. Each runs under the
// stream's context: when the client goes away, those not yet committed
// roll back, as a single request's would.

// streamWindow is how many transactions of one stream may be in the
// store's queue at once; the stream is not read further until the oldest
// is answered.
const streamWindow = 64

// TxStreamResult is one transaction's outcome on a stream: the response
// /v1/transactions would have given, with the HTTP status it would have
// had.
type TxStreamResult struct {
	Status int `json:"status"`
	ExecResponse
}

// streamTx is a transaction read from a stream, answered in order.
type streamTx struct {
	done   chan struct{}
	status int
	out    ExecResponse
}

func (s *Server) handleTransactionStream(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w) // full duplex: see handleDuplex
	// The last answer's deadline would still hold when net/http writes
	// the response's last chunk after this returns: give that write a
	// fresh one.
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)) }()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	// The transactions run under a context of the handler's own: ending
	// the reader early (below) cancels the request's context, which must
	// not take the transactions already read with it. It ends when the
	// client is gone, and after the last answer.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	gone := r.Context().Done()
	order := make(chan *streamTx, streamWindow)
	stop := make(chan struct{})
	go s.readTransactions(ctx, stop, r.Body, order)
	// stopReading runs no more transactions. The reader goes on reading
	// for linger, dropping what it reads, then stops: closed with bytes
	// still unread, the connection would be reset, and a reset can
	// destroy answers the client has not read yet. The deadline is set
	// to linger, not now: a read it interrupts cannot be resumed, since
	// net/http's body keeps the error.
	var once sync.Once
	stopReading := func(linger time.Duration) {
		once.Do(func() {
			close(stop)
			// From here on a client that is gone shows as a failed
			// write, or ends the reader.
			gone = nil
			_ = rc.SetReadDeadline(time.Now().Add(linger))
		})
	}
	// However the stream ends, the reader stops and is waited for, so the
	// body is never read after the handler returns. (At the end of the
	// body it has stopped already; the deadline that would stop it is
	// better not left on a connection that may carry another request.)
	readerDone := false
	defer func() {
		if !readerDone {
			stopReading(0)
		}
		for range order {
		}
	}()
	closing := s.closing
	enc := json.NewEncoder(w)
	var next *streamTx
	for {
		tx := next
		next = nil
		select {
		case <-closing:
			// Shutting down: run nothing more, answer what was read, then
			// end. The client opens another stream elsewhere.
			stopReading(shutdownLinger)
			closing = nil
		default:
		}
		if tx == nil {
			var ok bool
			select {
			case tx, ok = <-order:
			case <-closing:
				stopReading(shutdownLinger)
				closing = nil
				continue
			case <-gone:
				return
			}
			if !ok {
				readerDone = true
				return
			}
		}
		select {
		case <-tx.done:
		case <-gone:
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout))
		if err := enc.Encode(TxStreamResult{Status: tx.status, ExecResponse: tx.out}); err != nil {
			return
		}
		// Answers that are ready together leave in one write: flush only
		// when the next one is not ready yet.
		select {
		case next = <-order:
		default:
		}
		if next != nil && isDone(next) {
			continue
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// shutdownLinger is how long a stream goes on reading, and dropping,
// what its client still sends after a shutdown began.
const shutdownLinger = time.Second

func isDone(tx *streamTx) bool {
	select {
	case <-tx.done:
		return true
	default:
		return false
	}
}

// readTransactions reads the stream's transactions, submits each to the
// store in the order read, and queues it on order to be answered. It
// closes order at the end of the body, on a read error, or once stop is
// closed; a line that is not a transaction is answered with its error
// and the stream goes on.
func (s *Server) readTransactions(ctx context.Context, stop <-chan struct{}, body io.Reader, order chan<- *streamTx) {
	defer close(order)
	br := bufio.NewReaderSize(body, 64<<10)
	actor := s.store.Actor().String()
	// refused is a line answered on reading, not run.
	refused := func(status int, msg string) *streamTx {
		return &streamTx{done: closedChan, status: status, out: ExecResponse{Results: []ExecResult{{Error: msg}}, ActorID: actor}}
	}
	for {
		line, err := readLine(br, s.opts.MaxBodyBytes)
		select {
		case <-stop:
			// Run nothing more. Read the rest of what the client sends,
			// until the body or the deadline ends (see stopReading),
			// and drop it: the client learns those were not run when
			// the stream ends without their answers.
			if err == nil && len(bytes.TrimSpace(line)) > 0 {
				queueTx(ctx, order, refused(http.StatusServiceUnavailable, "not run: the agent is shutting down"))
			}
			if err == nil {
				_, _ = io.Copy(io.Discard, br)
			}
			return
		default:
		}
		if errors.Is(err, errLineTooLong) {
			if !queueTx(ctx, order, refused(http.StatusRequestEntityTooLarge, fmt.Sprintf("transaction larger than %d bytes", s.opts.MaxBodyBytes))) {
				return
			}
			continue
		}
		if err != nil {
			return // io.EOF: the client has sent everything
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var stmts []Statement
		var bad *streamTx
		if err := json.Unmarshal(line, &stmts); err != nil {
			bad = refused(http.StatusBadRequest, fmt.Sprintf("line is not a JSON array of statements: %v", err))
		} else if len(stmts) == 0 {
			bad = refused(http.StatusBadRequest, "no statements: a transaction must be a non-empty array")
		}
		if bad != nil {
			if !queueTx(ctx, order, bad) {
				return
			}
			continue
		}
		tx := &streamTx{done: make(chan struct{})}
		// Wait for room before submitting, so that at most streamWindow
		// transactions of this stream are in the store's queue.
		if !queueTx(ctx, order, tx) {
			return
		}
		in := make([]store.Statement, len(stmts))
		for i, st := range stmts {
			in[i] = toStoreStatement(st)
		}
		s.store.Submit(ctx, in, func(res *store.TxResult, err error) {
			tx.status, tx.out = s.txResponse(res, err)
			close(tx.done)
		})
	}
}

// closedChan is the done channel of a transaction answered on reading.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// queueTx puts tx on order, unless the stream ends first.
func queueTx(ctx context.Context, order chan<- *streamTx, tx *streamTx) bool {
	select {
	case order <- tx:
		return true
	case <-ctx.Done():
		return false
	}
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most limit bytes. A longer line is read
// to its end and discarded, and errLineTooLong returned.
func readLine(br *bufio.Reader, limit int64) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		n := len(line) + len(chunk)
		if err == nil {
			n-- // the newline ends the line; it is not part of it
		}
		if int64(n) > limit {
			line = nil
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			return nil, errLineTooLong
		}
		switch {
		case err == nil:
			if line == nil {
				return chunk, nil // valid until the next read
			}
			return append(line, chunk...), nil
		case errors.Is(err, bufio.ErrBufferFull):
			line = append(line, chunk...)
		case errors.Is(err, io.EOF) && len(line)+len(chunk) > 0:
			return append(line, chunk...), nil
		default:
			return nil, err
		}
	}
}
