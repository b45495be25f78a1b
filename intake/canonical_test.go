package intake

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// reads (issue 10: it ran twice).
func TestSameJobInTwoCasesIsAdmittedOnce(t *testing.T) {
	t.Parallel()
	in := newIntake(t, intakeOpts{})
	const lower = "abcdef01-abcd-abcd-abcd-abcdef012345"
	in.produce(jobRecord(topicOSL, lower))
	in.waitCommitted(topicOSL)
	in.produce(jobRecord(topicSVG, strings.ToUpper(lower)))
	in.waitCommitted(topicSVG)

	recs := in.runner.records()
	require.Len(t, recs, 1, "one job, one run")
	require.Equal(t, lower, recs[0].ID)
	admitted, _ := in.obs.snapshot()
	require.Equal(t, map[string]int{"admitted": 1, "held": 1}, admitted, "the second is this session's own job")

	// Upper case first: the ledger and the message hold the canonical ID.
	const upper = "FEDCBA98-7654-3210-FEDC-BA9876543210"
	in.produce(jobRecord(topicSVG, upper))
	in.waitCommitted(topicSVG)
	recs = in.runner.records()
	require.Len(t, recs, 2)
	require.Equal(t, strings.ToLower(upper), recs[1].ID)
	var msg struct {
		JobID string `json:"jobID"`
	}
	require.NoError(t, json.Unmarshal(recs[1].Msg, &msg))
	require.Equal(t, strings.ToLower(upper), msg.JobID, "the stored message names the job as the ledger does")
	want := string(jobRecord(topicSVG, strings.ToLower(upper)).Value)
	require.Equal(t, want, string(recs[1].Msg), "nothing else in the message changes")
}
