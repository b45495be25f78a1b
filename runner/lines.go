package runner

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/state"
)

// lines writes the vendors' progress lines of this worker's tasks to its
// session's lines hash (state.WriteLines): a poll whose only news is its
// line puts it here, and once a second the lines of every task go in one
// round trip of at most three commands, however many tasks wait. A job's
// end deletes its lines the same way. See state/lines.go.
type lines struct {
	startstop.Service
	r     *Runner
	every time.Duration

	mu      sync.Mutex
	set     map[state.Session]map[string]string // field → line
	del     map[state.Session][]string
	renewed map[state.Session]time.Time // the hash's expiry last renewed
}

// linesEvery is how often the lines are written.
const linesEvery = time.Second

func newLines(r *Runner) *lines {
	return &lines{r: r, every: linesEvery, renewed: map[state.Session]time.Time{}}
}

func (l *lines) start(ctx context.Context) error {
	return l.Start(ctx, func(ctx context.Context) {
		startstop.Every(ctx, l.every, func(ctx context.Context) { l.runOnce(ctx) })
		// What the last jobs queued (their lines' deletion).
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		l.runOnce(ctx)
	})
}

// put queues the line of task kind of job id, held under sess; a later
// line of the same task replaces it.
func (l *lines) put(sess state.Session, id, kind string, line state.ProgressLine) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set == nil {
		l.set = map[state.Session]map[string]string{}
	}
	m := l.set[sess]
	if m == nil {
		m = map[string]string{}
		l.set[sess] = m
	}
	m[state.LineField(id, kind)] = line.Encode()
}

// drop queues the deletion of the lines of the tasks of kinds of job id.
func (l *lines) drop(sess state.Session, id string, kinds []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.del == nil {
		l.del = map[state.Session][]string{}
	}
	for _, k := range kinds {
		f := state.LineField(id, k)
		delete(l.set[sess], f)
		l.del[sess] = append(l.del[sess], f)
	}
}

// runOnce writes what was queued, a round trip per session (there is one,
// or two around a lost session), and renews the expiry of the current
// session's hash when it was not renewed for half of state.LinesTTL. It
// returns how many lines it wrote. A failed write is dropped: lines are
// for people, and the next poll's line replaces it.
func (l *lines) runOnce(ctx context.Context) int {
	l.mu.Lock()
	set, del := l.set, l.del
	l.set, l.del = nil, nil
	l.mu.Unlock()
	now := time.Now()
	sessions := map[state.Session]bool{}
	for s := range set {
		sessions[s] = true
	}
	for s := range del {
		sessions[s] = true
	}
	if cur := l.r.keeper.Session(); cur.ID != "" && now.Sub(l.renewed[cur]) >= state.LinesTTL/2 {
		sessions[cur] = true
	}
	written := 0
	for s := range sessions {
		kv := make([]string, 0, 2*len(set[s]))
		for f, v := range set[s] {
			kv = append(kv, f, v)
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := l.r.store.WriteLines(ctx, s, kv, del[s])
		cancel()
		if err != nil {
			l.r.log.Debug("progress lines not written", zap.Int("lines", len(set[s])), zap.Error(err))
			continue
		}
		written += len(set[s])
		l.renewed[s] = now
	}
	for s, at := range l.renewed {
		if now.Sub(at) > state.LinesTTL {
			delete(l.renewed, s) // expired, or a session long gone
		}
	}
	return written
}

// jobEnded queues the deletion of the lines j's tasks may have written.
func (l *lines) jobEnded(j *jobRun) {
	j.mu.Lock()
	var kinds []string
	for _, t := range j.tasks {
		if t.lined {
			kinds = append(kinds, t.pt.Kind)
		}
	}
	j.mu.Unlock()
	if len(kinds) > 0 && j.sess != nil {
		l.drop(*j.sess, j.lease.ID, kinds)
	}
}
