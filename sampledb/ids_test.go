package sampledb_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// TestJobIDsAreCanonical: a UUID names one job whatever its case. The
// client addresses a job by the lower-case form and reads every job ID
// SampleDB sends back in that form, so a job created with an upper-case ID
// and one the fleet holds in lower case are the same job (issue 10: the
// same UUID in two cases ran twice).
func TestJobIDsAreCanonical(t *testing.T) {
	t.Parallel()
	const upper = "ABCDEF01-ABCD-ABCD-ABCD-ABCDEF012345"
	lower := strings.ToLower(upper)
	b := setup(t)
	c := b.client(t, analyzerKey)
	b.job(t, upper)

	j, err := c.UpdateJob(ctx(t), upper, sampledb.StateExecuting)
	require.NoError(t, err)
	require.Equal(t, lower, j.ID, "the job's ID is read in its canonical form")
	j, err = c.GetJob(ctx(t), lower)
	require.NoError(t, err, "the lower-case ID addresses the job created with upper case")
	require.Equal(t, lower, j.ID)
	require.Equal(t, lower, j.Message().JobID)
	tk, err := c.CreateTask(ctx(t), "AbCdEf01-aBcD-ABCD-abcd-ABCDEF012345", "cbc.event_export")
	require.NoError(t, err)
	_, err = c.UpdateTask(ctx(t), upper, tk.ID, sampledb.TaskSuccess)
	require.NoError(t, err)
	j, err = b.client(t, userKey).AbortJob(ctx(t), upper)
	require.NoError(t, err)
	require.Equal(t, lower, j.ID)
	var listed []string
	require.NoError(t, c.ListJobs(ctx(t), sampledb.ListOptions{}, func(p []sampledb.Job) error {
		for _, j := range p {
			listed = append(listed, j.ID)
		}
		return nil
	}))
	require.Equal(t, []string{lower}, listed)

	reqs := b.seen()
	require.Len(t, reqs, 6)
	for _, r := range reqs {
		if r.method == http.MethodGet && r.path == jobRoot {
			continue
		}
		require.True(t, strings.HasPrefix(r.path, jobRoot+"/"+lower), "%s %s: the client sends the canonical job ID", r.method, r.path)
	}

	// IDs that are not UUIDs are SampleDB's business: sent as they are.
	require.Equal(t, "Job-A", job.CanonicalID("Job-A"))
	require.Equal(t, lower, job.CanonicalID(upper))
	require.Equal(t, "{"+upper+"}", job.CanonicalID("{"+upper+"}"))
}
