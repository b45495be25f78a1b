package runner

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

// progressDriver's operations report a progress line on each of polls
// polls (a new one each time when moving), then are done.
type progressDriver struct {
	fakeDriver
	polls  int32
	moving bool
	n      atomic.Int32
}

func (d *progressDriver) Poll(context.Context, edr.Ref) (edr.Status, error) {
	n := d.n.Add(1)
	if n >= d.polls {
		return edr.Status{Done: true}, nil
	}
	p := "0/100 rows"
	if d.moving {
		p = fmt.Sprintf("%d/100 rows", n)
	}
	return edr.Status{Progress: p}, nil
}

// TestProgressAloneIsNotWrittenEveryPoll: an export whose progress line
// changes with every poll costs the ledger no more writes than one whose
// line stands still (within progressEvery): the line is for people and
// nothing resumes from it, and at 100,000 exports a write per poll was
// most of the ledger's traffic.
func TestProgressAloneIsNotWrittenEveryPoll(t *testing.T) {
	t.Parallel()
	writes := func(moving bool, id string) int32 {
		d := &progressDriver{fakeDriver: fakeDriver{kind: edr.KindCBCEventExport}, polls: 20, moving: moving}
		w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
		var evals atomic.Int32
		w.store.Redis().AddHook(scriptCounter{&evals})
		m := jobMsg(nil)
		m.JobID = id
		j := w.run(m)
		require.Equal(t, exitDone, j.exit)
		require.EqualValues(t, 20, d.n.Load(), "every poll made")
		return evals.Load()
	}
	still := writes(false, "42345678-1234-1234-1234-123456789abc")
	moving := writes(true, "52345678-1234-1234-1234-123456789abc")
	require.Equal(t, still, moving, "19 new progress lines cost no more ledger scripts than none")
}

// scriptCounter counts the scripts run on a Redis client.
type scriptCounter struct{ n *atomic.Int32 }

func (h scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.HasPrefix(cmd.Name(), "eval") {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
