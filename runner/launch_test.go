package runner

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

// TestLaunchOfARunningJobIsANoop: intake launches a job again when an
// admission whose answer was lost is made again (state.Held); the run
// already going on is kept, and the second slot is given back.
func TestLaunchOfARunningJobIsANoop(t *testing.T) {
	t.Parallel()
	d := &blockingDriver{fakeDriver: fakeDriver{kind: edr.KindCBCEventExport}, polling: make(chan struct{})}
	w := newJobWorld(t, cbcOnly(), []edr.Driver{d}, nil)
	msg := jobMsg(nil)
	w.sim.CreateJob(msg)
	b, err := json.Marshal(msg)
	require.NoError(t, err)
	free := w.runner.Free()
	require.Equal(t, 1, w.runner.TryAcquire(1))
	l, rec := w.admit(msg.JobID, b)
	w.runner.Launch(w.runner.Session(), l, rec)
	<-d.polling
	first := w.runner.slots.get(msg.JobID)
	require.NotNil(t, first)

	require.Equal(t, 1, w.runner.TryAcquire(1))
	w.runner.Launch(w.runner.Session(), l, rec)
	require.Same(t, first, w.runner.slots.get(msg.JobID), "the running job is kept")
	require.Equal(t, free-1, w.runner.Free(), "one slot for one job")
	require.EqualValues(t, 1, d.starts.Load(), "started once")
}
