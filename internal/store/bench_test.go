package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/schemas"
)

const benchUpsert = `INSERT INTO machines (id, app, region, host, address, port, state, image, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (id) DO UPDATE SET app = excluded.app, region = excluded.region, host = excluded.host, address = excluded.address,
	port = excluded.port, state = excluded.state, image = excluded.image, updated_at = excluded.updated_at`

func machineRow(i, gen int) []any {
	state := "started"
	if gen%2 == 1 {
		state = "stopped"
	}
	return []any{fmt.Sprintf("m%08d", i), fmt.Sprintf("app%d", i%100), "ams", fmt.Sprintf("host%d", i%50),
		fmt.Sprintf("fdaa::%x", i), int64(8080), state, "registry/app:v1", int64(1_700_000_000_000 + gen)}
}

// upsertRows runs the benchmark upsert for rows [from, from+n) with the
// given generation (which decides state and updated_at) on tx.
func upsertRows(ctx context.Context, tx Tx, from, n, gen int) error {
	st, err := tx.PrepareContext(ctx, benchUpsert)
	if err != nil {
		return err
	}
	defer st.Close()
	for i := from; i < from+n; i++ {
		if _, err := st.ExecContext(ctx, machineRow(i, gen)...); err != nil {
			return err
		}
	}
	return nil
}

// openPlain opens a database with the regional schema and no capture,
// tuned like the store's writer, as the baseline.
func openPlain(b *testing.B, dir string) *sql.Conn {
	p := url.Values{}
	p.Set("_journal_mode", "WAL")
	p.Set("_synchronous", "NORMAL")
	p.Set("_txlock", "immediate")
	p.Set("_cache_size", "-65536")
	path := filepath.Join(dir, "plain.db")
	if err := createDatabase(context.Background(), path); err != nil { // the store's page size
		b.Fatal(err)
	}
	conn := openSQLite(b, path, p)
	if _, err := conn.ExecContext(context.Background(), schemas.Regional()); err != nil {
		b.Fatal(err)
	}
	return conn
}

// BenchmarkCaptureOverhead upserts machine rows with change capture and
// the same statements on a plain table, in the same run, and reports the
// per-row cost of each and their ratio. Kinds: insert (fresh rows),
// update (state and updated_at change), identical (re-publishing the same
// values, which must cost no version).
func BenchmarkCaptureOverhead(b *testing.B) {
	const batch = 10_000
	for _, kind := range []string{"insert", "update", "identical"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			plain := openPlain(b, dir)
			s := regionalStore(b, dir, "captured")
			defer s.Close()
			var plainDur, capDur time.Duration
			next := 0
			for it := 0; it < b.N; it++ {
				from, gen := next, 0
				if kind == "insert" {
					next += batch
				} else if it == 0 {
					// Seed the rows once; not timed.
					if err := plainTx(ctx, plain, func(tx Tx) error { return upsertRows(ctx, tx, 0, batch, 0) }); err != nil {
						b.Fatal(err)
					}
					if _, err := s.Write(ctx, func(tx Tx) error { return upsertRows(ctx, tx, 0, batch, 0) }); err != nil {
						b.Fatal(err)
					}
				}
				if kind == "update" {
					gen = it + 1
				}
				t0 := time.Now()
				if err := plainTx(ctx, plain, func(tx Tx) error { return upsertRows(ctx, tx, from, batch, gen) }); err != nil {
					b.Fatal(err)
				}
				plainDur += time.Since(t0)
				t0 = time.Now()
				v, err := s.Write(ctx, func(tx Tx) error { return upsertRows(ctx, tx, from, batch, gen) })
				if err != nil {
					b.Fatal(err)
				}
				capDur += time.Since(t0)
				if kind == "identical" && v != 0 {
					b.Fatalf("identical re-publish consumed version %d", v)
				}
			}
			rows := float64(b.N * batch)
			b.ReportMetric(float64(plainDur.Nanoseconds())/rows, "plain-ns/row")
			b.ReportMetric(float64(capDur.Nanoseconds())/rows, "capture-ns/row")
			b.ReportMetric(float64(capDur)/float64(plainDur), "ratio")
		})
	}
}

func plainTx(ctx context.Context, conn *sql.Conn, fn func(tx Tx) error) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// exportVersions writes n versions of perVersion machine rows each (row
// i*perVersion onwards for version i) on src and reads them back as
// changesets, with the number of changes they carry.
func exportVersions(b *testing.B, src *Store, n, perVersion, gen int) (css []*crdt.Changeset, changes int) {
	ctx := context.Background()
	for v := 0; v < n; v++ {
		ver, err := src.Write(ctx, func(tx Tx) error { return upsertRows(ctx, tx, v*perVersion, perVersion, gen) })
		if err != nil {
			b.Fatal(err)
		}
		cs, _, err := src.Changes(ctx, src.Actor(), ver)
		if err != nil {
			b.Fatal(err)
		}
		changes += len(cs.Changes)
		css = append(css, cs)
	}
	return css, changes
}

// BenchmarkApplyRemote applies changesets written on another node and
// reports changes (cells and row sentinels) applied per second. insert:
// fresh machine rows (a sentinel and 8 cells each), 100 rows per version,
// 100 versions per Apply batch; update: state and updated_at of existing
// rows, which compares against the local clock and values; small: one
// fresh row per version, 20 versions per batch, as a region under load
// receives them (also reported as versions/s).
func BenchmarkApplyRemote(b *testing.B) {
	for _, kind := range []string{"insert", "update", "small"} {
		b.Run(kind, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			src := regionalStore(b, dir, "src")
			defer src.Close()
			perVersion, perBatch := 100, 100
			if kind == "small" {
				perVersion, perBatch = 1, 20
			}
			export := func(gen int) ([]*crdt.Changeset, int) {
				return exportVersions(b, src, b.N*perBatch, perVersion, gen)
			}
			dst := regionalStore(b, dir, "dst")
			defer dst.Close()
			css, changes := export(0)
			if kind == "update" {
				for i := 0; i < b.N; i++ {
					if _, err := dst.Apply(ctx, css[i*perBatch:(i+1)*perBatch]); err != nil {
						b.Fatal(err)
					}
				}
				css, changes = export(1)
			}
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				res, err := dst.Apply(ctx, css[i*perBatch:(i+1)*perBatch])
				if err != nil || len(res.Failed) > 0 || res.Applied != perBatch {
					b.Fatalf("apply: %v %+v", err, res)
				}
			}
			el := time.Since(t0)
			b.ReportMetric(float64(changes)/el.Seconds(), "changes/s")
			if kind == "small" {
				b.ReportMetric(float64(b.N*perBatch)/el.Seconds(), "versions/s")
			}
		})
	}
}

// BenchmarkMixedWriteApply is a node of a busy region: one-row local
// writes and one-row remote versions, one Apply each, in the ratio of a
// region of ten (mix: 1 local write to 9 applies), against the same work
// done apart (local: writes only; remote: applies only). Reported per
// operation.
func BenchmarkMixedWriteApply(b *testing.B) {
	for _, mode := range []string{"mix", "local", "remote"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			src := regionalStore(b, dir, "src")
			defer src.Close()
			dst := regionalStore(b, dir, "dst")
			defer dst.Close()
			n := b.N * 10
			var css []*crdt.Changeset
			if mode != "local" {
				css, _ = exportVersions(b, src, n, 1, 0)
			}
			local := func(i int) {
				if _, err := dst.Transact(ctx, []Statement{{SQL: benchUpsert, Args: machineRow(n+i, 0)}}); err != nil {
					b.Fatal(err)
				}
			}
			next := 0
			remote := func() {
				if res, err := dst.Apply(ctx, css[next:next+1]); err != nil || res.Applied != 1 {
					b.Fatalf("apply: %v %+v", err, res)
				}
				next++
			}
			b.ResetTimer()
			for i := 0; i < n; i++ {
				switch {
				case mode == "local":
					local(i)
				case mode == "remote":
					remote()
				case i%10 == 0:
					local(i)
				default:
					remote()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/write")
		})
	}
}
