package runner

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

// TestAbortListingIsOncePerFleet: however many workers a fleet has, one
// interval costs SampleDB ceil(N/1000) list requests for the whole fleet,
// and an abort requested among N active jobs is noted once.
func TestAbortListingIsOncePerFleet(t *testing.T) {
	t.Parallel()
	w := newJobWorld(t, cbcOnly(), []edr.Driver{&fakeDriver{kind: edr.KindCBCEventExport}}, nil)
	const n = 2500 // active jobs: 3 pages of 1,000
	var aborted string
	for i := range n {
		m := jobMsg(nil)
		m.JobID = fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		w.sim.CreateJob(m)
		if i == n/2 {
			aborted = m.JobID
			b, err := json.Marshal(m)
			require.NoError(t, err)
			w.admit(m.JobID, b) // the ledger knows it: the fleet runs it
		}
	}
	_, ok := w.sim.Abort(aborted)
	require.True(t, ok)

	noted := 0
	for _, workers := range []int{1, 3, 10} {
		fleet := []*Runner{w.runner}
		for i := 1; i < workers; i++ {
			cfg := w.runner.cfg
			cfg.WorkerID = fmt.Sprintf("worker-%d", i+1)
			r, err := New(cfg)
			require.NoError(t, err)
			t.Cleanup(r.Stop)
			fleet = append(fleet, r)
		}
		w.unlock("aborts") // a new interval
		before := w.count("GET", "/sampledb/v2/job")
		var wg sync.WaitGroup
		var mu sync.Mutex
		listed := 0
		for _, r := range fleet {
			wg.Go(func() {
				got := r.aborts.runOnce(ctx(t))
				mu.Lock()
				defer mu.Unlock()
				if got >= 0 {
					listed++
					noted += got
				}
			})
		}
		wg.Wait()
		require.Equal(t, 1, listed, "%d workers: one of them lists", workers)
		require.Equal(t, 3, w.count("GET", "/sampledb/v2/job")-before,
			"%d workers: ceil(%d/1000) list requests for the fleet", workers, n)
	}
	require.Equal(t, 1, noted, "the abort is noted once, whatever the number of listings")
}
