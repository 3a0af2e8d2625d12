package subs

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkEvaluate: 100 subscriptions on different apps; each iteration
// writes batch rows (spread over the apps, untimed) and evaluates them.
func BenchmarkEvaluate(b *testing.B) {
	for _, batch := range []int{1, 10} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			dir := b.TempDir()
			st := openStore(b, dir)
			defer st.Close()
			e := openEngine(b, dir, st, 10000)
			defer e.Close()
			for a := 0; a < 100; a++ {
				write(b, st, `INSERT INTO machines (id, app, state) VALUES (?, ?, 'started')`, fmt.Sprintf("seed%d", a), fmt.Sprintf("app%03d", a))
				subscribe(b, e, joinQuery, fmt.Sprintf("app%03d", a))
			}
			e.evaluatePending(context.Background())
			b.ResetTimer()
			seq := 0
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for j := 0; j < batch; j++ {
					write(b, st, `INSERT INTO machines (id, app, state) VALUES (?, ?, 'started')`, fmt.Sprintf("m%d", seq), fmt.Sprintf("app%03d", seq%100))
					seq++
				}
				b.StartTimer()
				e.evaluatePending(context.Background())
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*batch), "µs/write")
		})
	}
}
