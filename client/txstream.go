package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/api"
)

// TxStream sends transactions to one agent over a single request
// (POST /v1/transactions/stream), any number of goroutines at once. Each
// Transact waits for its own answer while others are in flight, so many
// writers share one connection, and the agent commits what they send
// together. Transactions commit in the order their Transact calls sent
// them.
//
// A Transact whose context ends before its answer returns the context's
// error, but its transaction may still commit: it is already on its way.
// A stream that fails (the agent goes away, the connection breaks) fails
// every transaction waiting on it and every later Transact; open a new
// one.
type TxStream struct {
	cancel context.CancelFunc
	resp   *http.Response
	pw     *io.PipeWriter

	mu      sync.Mutex
	buf     []byte          // lines not yet handed to the connection
	waiting []chan txAnswer // answers owed, oldest first
	closing bool            // Close was called: send what is queued, then end
	err     error           // set once the stream has failed or closed
	kick    chan struct{}   // tells the sender there is something to send
	done    chan struct{}   // closed when the reader has stopped
}

type txAnswer struct {
	res *api.TxStreamResult
	err error
}

// ErrStreamClosed is what Transact returns on a stream that was closed.
var ErrStreamClosed = errors.New("client: transaction stream closed")

// OpenTxStream opens a transaction stream. It lives until Close or until
// ctx ends.
func (c *Client) OpenTxStream(ctx context.Context) (*TxStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v1/transactions/stream", pr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// The transport sends a body of unknown length only once it has
	// bytes of it (or after waiting a while to see whether it is empty):
	// an empty line, which the agent skips, gets the request going now.
	s := &TxStream{cancel: cancel, pw: pw, buf: []byte{'\n'}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.kick <- struct{}{}
	go s.send()
	resp, err := c.http.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = readError(resp)
		resp.Body.Close()
	}
	if err != nil {
		s.fail(err)
		close(s.done)
		return nil, fmt.Errorf("client: open transaction stream: %w", err)
	}
	s.resp = resp
	go s.read()
	return s, nil
}

// Transact runs statements as one transaction, sent on the stream behind
// those already sent.
func (s *TxStream) Transact(ctx context.Context, stmts ...Statement) (*api.ExecResponse, error) {
	// A context that has already ended sends nothing: once queued, the
	// transaction is on its way and may commit.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	line, err := json.Marshal(stmts)
	if err != nil {
		return nil, fmt.Errorf("client: encode transaction: %w", err)
	}
	ch := make(chan txAnswer, 1)
	s.mu.Lock()
	if s.err != nil || s.closing {
		err := s.err
		if err == nil {
			err = ErrStreamClosed
		}
		s.mu.Unlock()
		return nil, err
	}
	s.buf = append(append(s.buf, line...), '\n')
	s.waiting = append(s.waiting, ch)
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	select {
	case a := <-ch:
		if a.err != nil {
			return nil, a.err
		}
		return &a.res.ExecResponse, txError(a.res.Status, &a.res.ExecResponse)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// send hands what Transact calls queued to the connection, all that has
// queued in one write.
func (s *TxStream) send() {
	var out []byte
	for {
		select {
		case <-s.kick:
		case <-s.done:
			return
		}
		s.mu.Lock()
		out, s.buf = s.buf, out[:0]
		failed, closing := s.err != nil, s.closing
		s.mu.Unlock()
		if failed {
			return
		}
		if len(out) > 0 {
			if _, err := s.pw.Write(out); err != nil {
				// The agent has stopped reading (it ended the response,
				// or the connection broke). Answers to what it read may
				// still be on their way: the reader delivers them, and
				// fails the rest when the response ends. Only new
				// transactions are refused from here.
				s.mu.Lock()
				if s.err == nil {
					s.err = fmt.Errorf("client: transaction stream: %w", err)
				}
				s.mu.Unlock()
				return
			}
		}
		if closing {
			// The agent answers what it has read, then ends the response.
			_ = s.pw.Close()
			return
		}
	}
}

// read matches the agent's answers to the waiting transactions, in order.
func (s *TxStream) read() {
	defer close(s.done)
	dec := json.NewDecoder(bufio.NewReaderSize(s.resp.Body, 64<<10))
	for {
		var res api.TxStreamResult
		if err := dec.Decode(&res); err != nil {
			s.mu.Lock()
			clean := errors.Is(err, io.EOF) && s.closing && len(s.waiting) == 0
			s.mu.Unlock()
			if clean {
				s.fail(ErrStreamClosed)
				return
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			s.fail(fmt.Errorf("client: transaction stream: %w", err))
			return
		}
		s.mu.Lock()
		if len(s.waiting) == 0 {
			s.mu.Unlock()
			s.fail(errors.New("client: transaction stream: an answer to no transaction"))
			return
		}
		ch := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.mu.Unlock()
		ch <- txAnswer{res: &res}
	}
}

// fail ends the stream with err: every waiting transaction gets it.
func (s *TxStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	waiting := s.waiting
	s.waiting = nil
	err = s.err
	s.mu.Unlock()
	for _, ch := range waiting {
		ch <- txAnswer{err: err}
	}
	s.cancel()
	_ = s.pw.CloseWithError(err)
}

// closeWait bounds how long Close waits for the agent to answer what was
// sent before it breaks the stream off.
const closeWait = 30 * time.Second

// Close ends the stream: what was sent is answered first, then the
// stream ends. If the agent has not answered within 30 s, or the stream
// breaks, the transactions still waiting get an error instead; they may
// or may not have committed.
func (s *TxStream) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	select {
	case s.kick <- struct{}{}:
	default:
	}
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.fail(fmt.Errorf("client: transaction stream: no answer %s after close", closeWait))
		<-s.done
	}
	s.resp.Body.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(s.err, ErrStreamClosed) {
		return nil
	}
	return s.err
}
