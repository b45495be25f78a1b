package intake

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/state"
)

// TestAdmissionWhoseAnswerWasLostStillRuns: Redis applied an admission
// but the worker never got the answer (a timeout under load): the records
// were read again, and the ledger names this very session as the holder.
// The job must run here — before, it was dropped as "running elsewhere"
// and stayed held, renewed and never run, for as long as the worker lived.
func TestAdmissionWhoseAnswerWasLostStillRuns(t *testing.T) {
	t.Parallel()
	in := newIntake(t, intakeOpts{})
	const id = "0badc0de-0000-4000-8000-000000000001"
	rec := jobRecord(topicOSL, id)
	// The admission that went through, its answer lost.
	res, _, err := in.c.cfg.Store.Admit(testCtx(t), in.runner.sess, []state.AdmitRequest{{ID: id, Msg: rec.Value, Source: "lost answer"}})
	require.NoError(t, err)
	require.Equal(t, state.Admitted, res[0].Outcome)
	require.Empty(t, in.runner.records(), "nothing launched: the answer never arrived")

	in.produce(rec)
	in.waitCommitted(topicOSL)
	recs := in.runner.records()
	require.Len(t, recs, 1, "the job runs on the worker that holds it")
	require.Equal(t, id, recs[0].ID)
	require.Equal(t, res[0].Lease.Token, recs[0].Token, "under the lease it was admitted with")
	admitted, _ := in.obs.snapshot()
	require.Equal(t, map[string]int{"held": 1}, admitted)
}
