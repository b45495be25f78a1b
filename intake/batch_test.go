package intake

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
)

// TestLargePollIsAdmittedInBoundedBatches: a poll of 1,200 records is
// admitted by three ledger calls of at most MaxAdmitBatch jobs, not one
// script holding Redis for the whole poll; every job is launched.
func TestLargePollIsAdmittedInBoundedBatches(t *testing.T) {
	t.Parallel()
	in := newIntake(t, intakeOpts{})
	in.runner.Unacquire(1200) // room for them all
	var items []*item
	for i := range 1200 {
		r := jobRecord(topicOSL, fmt.Sprintf("%08x-0000-4000-8000-000000000000", i))
		r.Offset = int64(i)
		msg, value, err := job.DecodeRecord(r.Value, 1<<20)
		require.NoError(t, err)
		items = append(items, &item{rec: r, msg: msg, value: value, slot: true})
	}
	require.Equal(t, 1200, in.runner.TryAcquire(1200))
	h := &testutil.RedisCounter{}
	in.c.cfg.Store.Redis().AddHook(h)
	require.NoError(t, in.c.admit(testCtx(t), items))
	require.EqualValues(t, 3, h.Scripts.Load(), "ceil(1200/%d) admission scripts", MaxAdmitBatch)
	require.Len(t, in.runner.records(), 1200)
}
