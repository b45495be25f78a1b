// Package reach says in the log when a dependency the worker cannot work
// without (Kafka, Redis) stops answering: once and loudly, at ERROR, naming
// its address and the cause; again every RemindEvery while it stays
// unreachable; and at INFO when it answers again. Whoever probes the
// dependency (a startup wait, a node's watch loop) feeds each probe's
// result to a Tracker.
//
//	up ──probe fails──▶ down: ERROR "kafka unreachable: brokers … — cause; retrying"
//	down ──fails, RemindEvery later──▶ ERROR "kafka still unreachable after 30s: …"
//	down ──probe succeeds──▶ up: INFO "kafka reachable again after 42s: …"
package reach

import (
	"cmp"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultRemindEvery is how often a dependency that stays unreachable is
// mentioned again.
const DefaultRemindEvery = 30 * time.Second

// Tracker follows one dependency's reachability and logs its changes. The
// zero value of every field but Log is usable. Safe for concurrent use.
type Tracker struct {
	// Name is the dependency, as the log and /readyz name it: "kafka",
	// "redis".
	Name string
	// Addr says where it is, without credentials: "brokers
	// 10.0.0.1:9092,10.0.0.2:9092", "redis:6379".
	Addr string
	// Log receives the lines; nil logs nothing.
	Log *zap.Logger
	// RemindEvery is how often an outage that lasts is logged again;
	// default DefaultRemindEvery.
	RemindEvery time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time

	mu    sync.Mutex
	down  bool
	since time.Time // when it was first seen down
	said  time.Time // when the outage was last logged
}

// Observe records one probe's result: nil when the dependency answered.
func (t *Tracker) Observe(err error) {
	now := time.Now()
	if t.Now != nil {
		now = t.Now()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	log := t.Log
	if log == nil {
		log = zap.NewNop()
	}
	// An outage is no bug in this program: no stack trace under the line.
	log = log.WithOptions(zap.AddStacktrace(zapcore.DPanicLevel))
	fields := []zap.Field{zap.String("dependency", t.Name), zap.String("addr", t.Addr)}
	switch {
	case err == nil && t.down:
		t.down = false
		d := now.Sub(t.since).Round(time.Second)
		log.Info(fmt.Sprintf("%s reachable again after %s: %s", t.Name, d, t.Addr),
			append(fields, zap.Duration("down_for", d))...)
	case err == nil:
	case !t.down:
		t.down, t.since, t.said = true, now, now
		log.Error(fmt.Sprintf("%s unreachable: %s — %v; retrying", t.Name, t.Addr, err),
			append(fields, zap.Error(err))...)
	case now.Sub(t.said) >= cmp.Or(t.RemindEvery, DefaultRemindEvery):
		t.said = now
		d := now.Sub(t.since).Round(time.Second)
		log.Error(fmt.Sprintf("%s still unreachable after %s: %s — %v; retrying", t.Name, d, t.Addr, err),
			append(fields, zap.Duration("down_for", d), zap.Error(err))...)
	}
}

// Down reports whether the last probe failed.
func (t *Tracker) Down() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.down
}
