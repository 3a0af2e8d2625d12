package reseed

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Options describe one reseed. Set exactly one source: BBolt files, or
// SQLite with Table.
type Options struct {
	// BBolt lists hosts' bbolt files; their machine records are written
	// to the machines and machine_checks tables.
	BBolt []string
	// SQLite is a source database whose table Table is copied into the
	// cluster's table of the same name, column by column.
	SQLite string
	Table  string

	// APIs are the cluster's agents (http://host:port); ranges are spread
	// over them and a failed attempt goes to the next one.
	APIs  []string
	Token string
	// HTTPClient sends the requests (default: one with a connection pool
	// sized for Parallel and a per-request timeout).
	HTTPClient *http.Client

	// Ranges is how many ranges the keys are split into (default 64).
	Ranges int
	// Parallel is how many ranges are written at once (default 4).
	Parallel int
	// Rate caps the rows written per second over all ranges (0: no cap).
	Rate float64
	// Batch is the most rows per transaction (default 1000); a batch is
	// cut earlier when its parameters would weigh more than MaxBodyBytes.
	Batch int
	// MaxBodyBytes bounds a transaction's parameters (default 4 MiB: the
	// agent's request limit is 8 MiB, and statements and JSON add to it).
	MaxBodyBytes int

	// MaxAttempts is how many times one batch is tried before its range
	// is given up (default 8).
	MaxAttempts int
	// RetryBase is the first retry's delay, doubled for each failure
	// after it up to RetryMax (defaults 250ms and 30s).
	RetryBase, RetryMax time.Duration

	// StatePath records the plan and the finished ranges (default:
	// DefaultStatePath of the sources, in the current directory). It is
	// removed when every range is done.
	StatePath string

	// Progress, when set, shows a progress bar with rows/s.
	Progress io.Writer
	// Logger receives warnings (corrupt records, retries); default
	// slog.Default().
	Logger *slog.Logger
	// OnEvent, when set, is told of every range's progress, in order for
	// each range. It is called from the workers and must be quick.
	OnEvent func(Event)
}

// DefaultOptions are the values Run uses for the fields left zero.
func DefaultOptions() Options {
	return Options{Ranges: 64, Parallel: 4, Batch: 1000, MaxBodyBytes: 4 << 20, MaxAttempts: 8,
		RetryBase: 250 * time.Millisecond, RetryMax: 30 * time.Second}
}

// withDefaults fills unset fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	switch {
	case len(o.BBolt) > 0 && o.SQLite != "":
		errs = append(errs, errors.New("give bbolt files or a SQLite database, not both"))
	case len(o.BBolt) == 0 && o.SQLite == "":
		errs = append(errs, errors.New("no source: give bbolt files (--bbolt) or a SQLite database (--sqlite with --table)"))
	case o.SQLite != "" && o.Table == "":
		errs = append(errs, errors.New("a SQLite source needs --table"))
	case len(o.BBolt) > 0 && o.Table != "":
		errs = append(errs, errors.New("--table goes with --sqlite: bbolt files always fill machines and machine_checks"))
	}
	if len(o.APIs) == 0 {
		errs = append(errs, errors.New("no agent API address (--api)"))
	}
	d := DefaultOptions()
	for _, f := range []struct{ v, def *int }{{&o.Ranges, &d.Ranges}, {&o.Parallel, &d.Parallel}, {&o.Batch, &d.Batch}, {&o.MaxBodyBytes, &d.MaxBodyBytes}, {&o.MaxAttempts, &d.MaxAttempts}} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if o.RetryBase == 0 {
		o.RetryBase = d.RetryBase
	}
	if o.RetryMax == 0 {
		o.RetryMax = d.RetryMax
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"ranges", o.Ranges}, {"parallel", o.Parallel}, {"batch", o.Batch}, {"max body bytes", o.MaxBodyBytes}, {"attempts", o.MaxAttempts}} {
		if c.v < 1 {
			errs = append(errs, fmt.Errorf("%s %d: want at least 1", c.name, c.v))
		}
	}
	if o.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %g: want 0 (no cap) or more", o.Rate))
	}
	if o.RetryBase < 0 || o.RetryMax < o.RetryBase {
		errs = append(errs, fmt.Errorf("retry delays %s..%s: want 0 <= base <= max", o.RetryBase, o.RetryMax))
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{
			Timeout:   2 * time.Minute,
			Transport: &http.Transport{MaxIdleConnsPerHost: o.Parallel * 2, IdleConnTimeout: time.Minute},
		}
	}
	if err := errors.Join(errs...); err != nil {
		return o, fmt.Errorf("reseed: %w", err)
	}
	return o, nil
}
