package reach

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type line struct {
	level zapcore.Level
	msg   string
}

func lines(logs *observer.ObservedLogs) []line {
	var out []line
	for _, e := range logs.TakeAll() {
		out = append(out, line{e.Level, e.Message})
	}
	return out
}

// An outage is said once at ERROR with the address and the cause, then
// once per RemindEvery however often it is probed, and its end once at
// INFO; a dependency that answers is never mentioned.
func TestTrackerSaysAnOutageOnceRemindsAndSaysItsEnd(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	now := time.Unix(1_700_000_000, 0)
	tr := &Tracker{Name: "kafka", Addr: "brokers 127.0.0.1:1", Log: zap.New(core), Now: func() time.Time { return now }}
	refused := errors.New("unable to dial: dial tcp 127.0.0.1:1: connect: connection refused")
	step := func(d time.Duration, err error) {
		now = now.Add(d)
		tr.Observe(err)
	}

	step(0, nil)
	step(5*time.Second, nil)
	require.Empty(t, lines(logs), "nothing to say while it answers")
	require.False(t, tr.Down())

	step(5*time.Second, refused)
	require.Equal(t, []line{{zapcore.ErrorLevel,
		"kafka unreachable: brokers 127.0.0.1:1 — unable to dial: dial tcp 127.0.0.1:1: connect: connection refused; retrying"}},
		lines(logs))
	require.True(t, tr.Down())
	for range 5 { // 25s of probes: no repeat
		step(5*time.Second, refused)
	}
	require.Empty(t, lines(logs))
	step(5*time.Second, refused) // 30s
	require.Equal(t, []line{{zapcore.ErrorLevel,
		"kafka still unreachable after 30s: brokers 127.0.0.1:1 — unable to dial: dial tcp 127.0.0.1:1: connect: connection refused; retrying"}},
		lines(logs))
	step(29*time.Second, refused)
	require.Empty(t, lines(logs))
	step(time.Second, refused)
	require.Len(t, lines(logs), 1, "the next reminder 30s later")

	step(12*time.Second, nil)
	require.Equal(t, []line{{zapcore.InfoLevel, "kafka reachable again after 1m12s: brokers 127.0.0.1:1"}}, lines(logs))
	require.False(t, tr.Down())
	step(5*time.Second, nil)
	require.Empty(t, lines(logs))

	// A new outage is announced afresh.
	step(5*time.Second, refused)
	require.Len(t, lines(logs), 1)
}

func TestTrackerRemindEvery(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	now := time.Unix(0, 0)
	tr := &Tracker{Name: "redis", Addr: "redis://127.0.0.1:1", Log: zap.New(core), RemindEvery: time.Minute,
		Now: func() time.Time { return now }}
	for range 12 {
		tr.Observe(errors.New("connection refused"))
		now = now.Add(10 * time.Second)
	}
	// At 0s, 60s and 120s would be three; 0..110s is two.
	require.Len(t, lines(logs), 2)
	var nilTracker Tracker // no logger: no panic
	nilTracker.Observe(errors.New("x"))
	require.True(t, nilTracker.Down())
}
