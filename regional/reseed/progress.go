package reseed

import (
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress shows rows written against the rows planned, with rows/s.
// Without a writer it shows nothing.
type progress struct {
	bar *progressbar.ProgressBar
}

func newProgress(w io.Writer, total int64) *progress {
	if w == nil {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("reseed"),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("rows"),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionOnCompletion(func() { io.WriteString(w, "\n") }),
	)}
}

// add counts rows written, raising the total when a source holds more
// rows than planned (rows added since the plan).
func (p *progress) add(n int) {
	if p.bar == nil {
		return
	}
	if cur := p.bar.State().CurrentNum; cur+int64(n) > p.bar.GetMax64() {
		p.bar.ChangeMax64(cur + int64(n))
	}
	p.bar.Add(n)
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Exit()
		p.bar = nil
	}
}
