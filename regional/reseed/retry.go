package reseed

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/patina-db/patina/client"
)

// backoff is how long a range waits before its attempt-th retry
// (attempt >= 1): base doubled for each failure before it, capped at
// max, then jittered into [d/2, d) by jitter in [0, 1) so that ranges
// that failed together do not come back together.
func backoff(attempt int, base, max time.Duration, jitter float64) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// retryable tells a failure worth trying again (the agent or the network
// failed: a connection error, a 5xx, 429 or 408, an answer cut short)
// from one that would fail
// again the same way (the agent refused the statements: any other 4xx).
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// Deadline of one request, not of the run: the run's own end is
		// checked by the caller before it retries.
		return true
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status < 400 || ce.Status >= 500 || ce.Status == http.StatusTooManyRequests || ce.Status == http.StatusRequestTimeout
	}
	return true
}
