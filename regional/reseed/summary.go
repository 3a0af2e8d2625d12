package reseed

import (
	"fmt"
	"strings"
	"time"
)

// EventKind says what happened to a range.
type EventKind int

const (
	// RangeSkipped: finished by an earlier run, per the state file.
	RangeSkipped EventKind = iota
	// RangeStarted: a worker took the range (again, after a retry).
	RangeStarted
	// BatchWritten: one transaction committed; Rows says how many rows.
	BatchWritten
	// RangeRetry: an attempt failed (Err); the range waits Delay and is
	// tried again, on the next agent.
	RangeRetry
	// RangeDone: every row of the range is written and recorded.
	RangeDone
	// RangeFailed: the range gave up (Err); the run fails at its end.
	RangeFailed
)

func (k EventKind) String() string {
	return [...]string{"skipped", "started", "batch", "retry", "done", "failed"}[k]
}

// Event is one step of one range.
type Event struct {
	Kind  EventKind
	Range int
	// Rows written by this batch (BatchWritten).
	Rows int
	// Attempt is the failed attempt's number (RangeRetry, RangeFailed).
	Attempt int
	// API is the agent the attempt went to.
	API   string
	Delay time.Duration
	Err   error
}

// Summary is what a run did.
type Summary struct {
	// Rows is the source rows written (machine records for bbolt files,
	// table rows for SQLite) by this run.
	Rows int64 `json:"rows"`
	// Ranges is the plan's number of ranges; Done were finished by this
	// run, Skipped by an earlier one, Failed gave up.
	Ranges        int `json:"ranges"`
	RangesDone    int `json:"ranges_done"`
	RangesSkipped int `json:"ranges_skipped"`
	RangesFailed  int `json:"ranges_failed"`
	// Failures names every range that gave up and why.
	Failures []RangeFailure `json:"failures,omitempty"`
	// Retries counts failed attempts that were tried again.
	Retries int `json:"retries"`
	// Corrupt counts records skipped because they did not decode;
	// Duplicates the machine ids found in more than one file.
	Corrupt    int `json:"corrupt"`
	Duplicates int `json:"duplicates"`
	// Transactions is the number of transactions committed.
	Transactions int64         `json:"transactions"`
	Elapsed      time.Duration `json:"elapsed_ns"`
	RowsPerSec   float64       `json:"rows_per_s"`
	// StatePath is the state file; empty when it was removed because
	// every range is done.
	StatePath string `json:"state_path,omitempty"`
}

// RangeFailure is a range that gave up.
type RangeFailure struct {
	Range    int    `json:"range"`
	Span     string `json:"span"`
	Attempts int    `json:"attempts"`
	Err      string `json:"error"`
}

// String is the summary for people, one fact per line.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rows written:  %d in %d transactions (%.0f rows/s over %s)\n", s.Rows, s.Transactions, s.RowsPerSec, s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "ranges:        %d: %d done, %d skipped (done before), %d failed, %d not finished\n",
		s.Ranges, s.RangesDone, s.RangesSkipped, s.RangesFailed, s.Ranges-s.RangesDone-s.RangesSkipped-s.RangesFailed)
	fmt.Fprintf(&b, "retries:       %d\n", s.Retries)
	fmt.Fprintf(&b, "skipped rows:  %d corrupt, %d duplicate ids (newest record kept)\n", s.Corrupt, s.Duplicates)
	for _, f := range s.Failures {
		fmt.Fprintf(&b, "failed:        %s after %d attempts: %s\n", f.Span, f.Attempts, f.Err)
	}
	if s.StatePath != "" {
		fmt.Fprintf(&b, "state:         %s (run again with the same sources to resume)\n", s.StatePath)
	}
	return b.String()
}
