package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/patina-db/patina/internal/sysmon"
)

// defaultGCPercent is the agent's garbage-collector target: the heap may
// grow to five times what is live before a collection, instead of Go's
// twice. An agent's live heap is small (tens of MiB: queues, caches,
// statements), and its work allocates a lot per row (JSON parameters,
// changesets, protobuf messages), so at Go's default the collector took
// about 15% of the CPU under write load. At 400 a reseed of 300,000 rows
// into three agents on two cores ran in 20 s instead of 24 s. The price
// is memory: a heap that peaks a few times higher. GOMEMLIMIT, when
// set, still bounds it.
const defaultGCPercent = 400

// applyRuntime sets the collector's target for the process (0: the
// default) unless the operator set GOGC in the environment, which wins,
// and, until ctx ends, the monitor thread's scheduling policy. Agents
// sharing a process (tests, in-process benchmarks) each apply the same
// settings; the monitor thread has one keeper for all of them, and goes
// back under the normal policy when the last of them stops.
func applyRuntime(ctx context.Context, c RuntimeConfig, log *slog.Logger) {
	if c.SysmonBatch {
		// Under a write load that saturates the host, the monitor's
		// wake-ups (thousands a second, see internal/sysmon) stop
		// preempting the threads doing the work: a 3-node region on two
		// cores wrote 18–33% more (docs/performance.md).
		tid, err := sysmon.Batch(ctx)
		switch {
		case errors.Is(err, errors.ErrUnsupported):
		case err != nil:
			log.Warn("runtime monitor thread keeps its scheduling policy", "err", err)
		default:
			log.Debug("runtime monitor thread under SCHED_BATCH", "thread", tid)
		}
	}
	if os.Getenv("GOGC") != "" {
		return
	}
	pct := c.GCPercent
	if pct == 0 {
		pct = defaultGCPercent
	}
	if prev := debug.SetGCPercent(pct); prev != pct {
		log.Debug("garbage collector target set", "gc_percent", pct, "was", prev)
	}
}
