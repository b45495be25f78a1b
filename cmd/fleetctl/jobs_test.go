package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/state"
)

// ids returns the job IDs of a `jobs` table, in order.
func ids(t *testing.T, out string) []string {
	t.Helper()
	var got []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "job-") {
			got = append(got, strings.Fields(line)[0])
		}
	}
	return got
}

func TestJobsListsTheLedgerWithFilters(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedLedger()

	out := w.ok("jobs").stdout
	t.Logf("fleetctl jobs:\n%s", out)
	require.Equal(t, []string{"job-a", "job-b", "job-c", "job-d"}, ids(t, out), "oldest first; the completed job is gone")
	require.Regexp(t, `job-a\s+running\s+w1\s+\d+\s+expires in \S+\s+1/2\s+-\s+Sample\.Analysis\.Job\.OSL/0@0\n`, out)
	require.Regexp(t, `job-b\s+running\s+w1\s+\d+\s+expires in \S+\s+0/1\s+-\s+`, out)
	require.Regexp(t, `job-c\s+finishing\s+w2\s+\d+\s+expires in \S+\s+1/1\s+failed\s+Sample\.Analysis\.Job\.SVG/0@3\n`, out)
	require.Regexp(t, `job-d\s+claimable\s+-\s+\d+\s+released\s+-\s+-\s+`, out)
	require.Contains(t, out, "4 of 4 matched")

	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--state", "running"}, []string{"job-a", "job-b"}},
		{[]string{"--state", "finishing"}, []string{"job-c"}},
		{[]string{"--state", "claimable"}, []string{"job-d"}},
		{[]string{"--worker", "w2"}, []string{"job-c"}},
		{[]string{"--worker", "w1", "--state", "running"}, []string{"job-a", "job-b"}},
		{[]string{"--vendor", "sophos"}, []string{"job-a"}},
		{[]string{"--vendor", "cbc"}, []string{"job-a", "job-c"}},
		{[]string{"--vendor", "cytomic.osquery"}, []string{"job-b"}},
		{[]string{"--vendor", "cblr"}, nil},
	} {
		got := ids(t, w.ok(append([]string{"jobs"}, c.args...)...).stdout)
		require.Equal(t, c.want, got, "%v", c.args)
	}

	limited := w.ok("jobs", "--limit", "2").stdout
	require.Equal(t, []string{"job-a", "job-b"}, ids(t, limited))
	require.Contains(t, limited, "4 of 4 matched; showing the 2 oldest (--limit 0 for all)")

	// A claimed job is running again, under its new owner.
	got, _, err := w.long.Claim(ctx(t), w.sess(w.long, "w3"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "job-d", got[0].Lease.ID)
	require.Regexp(t, `job-d\s+running\s+w3\s+`, w.ok("jobs", "--worker", "w3").stdout)
	require.Greater(t, got[0].Lease.Token, f.d.Token)
}

func TestJobsJSON(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedLedger()
	r := w.ok("jobs", "-o", "json", "--state", "finishing")
	var rep jobsReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, 4, rep.Total)
	require.Equal(t, 1, rep.Matched)
	require.Len(t, rep.Jobs, 1)
	j := rep.Jobs[0]
	require.Equal(t, "job-c", j.ID)
	require.Equal(t, "finishing", j.State)
	require.Equal(t, "w2", j.Owner)
	require.Equal(t, f.c.Token, j.Token)
	require.False(t, j.LeaseExpired)
	require.True(t, j.Planned)
	require.Equal(t, 1, j.TasksDone)
	require.Equal(t, 1, j.TasksTotal)
	require.Equal(t, "failed", j.Outcome)
	require.Equal(t, "cbc.event_export: cbc: 403 forbidden", j.OutcomeReason)
	require.Equal(t, "Sample.Analysis.Job.SVG/0@3", j.Source)
	require.Equal(t, sha('c'), j.SHA256)
	require.Equal(t, "linux", j.Platform)
	require.Equal(t, []string{"cbc"}, j.Vendors)

	var raw struct {
		Jobs []map[string]any `json:"jobs"`
	}
	require.NoError(t, json.Unmarshal([]byte(w.ok("jobs", "-o", "json").stdout), &raw))
	for _, k := range []string{"id", "state", "owner", "token", "leaseDeadline", "leaseExpired", "tasksDone", "tasksTotal", "source", "created", "vendors"} {
		require.Contains(t, raw.Jobs[0], k)
	}
	require.Equal(t, "1970-01-01T00:00:00.000Z", raw.Jobs[3]["leaseDeadline"], "job-d: released")
	require.Equal(t, true, raw.Jobs[3]["leaseExpired"])
}

func TestJobShowsPlanCheckpointsAndLeaseHistory(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedLedger()
	// One more hand-over for the history: w1 lets job-a go, w3 claims it.
	_, err := w.long.Release(ctx(t), w.sess(w.long, "w1"), []state.Lease{f.a})
	require.NoError(t, err)
	claimed, _, err := w.long.Claim(ctx(t), w.sess(w.long, "w3"), 1) // job-a and job-d tie at deadline 0: by ID
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	require.Equal(t, "job-a", claimed[0].Lease.ID)
	tokA := claimed[0].Lease.Token

	out := w.ok("job", "job-a").stdout
	t.Logf("fleetctl job job-a:\n%s", out)
	require.Regexp(t, `state\s+running\n`, out)
	require.Regexp(t, `owner\s+w3\n`, out)
	require.Regexp(t, `lease\s+expires in \S+ \(`, out)
	require.Regexp(t, `source\s+Sample\.Analysis\.Job\.OSL/0@0\n`, out)
	require.Contains(t, out, sha('a')+" (platform win)")
	require.Regexp(t, `outcome\s+not decided\n`, out)
	require.Regexp(t, `cbc\.event_export\s+-\s+success\s+101\s+\{"id":"4522"\}\s+3 rows\s+-\s+-\n`, out)
	require.Regexp(t, `sophos\.xdr_query\s+2h0m0s\s+running\s+102\s+\{"runId":"run-77","expiresAt":"2026-01-02T00:00:00Z"\}\s+query running\s+-\s+-\n`, out)
	hist := regexp.MustCompile(`(?m)^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z\s+(\S+)\s+(\S+)\s+(\d+)$`).FindAllStringSubmatch(out, -1)
	var evs []string
	for _, h := range hist {
		evs = append(evs, h[1]+"/"+h[2])
	}
	require.Equal(t, []string{"admitted/w1", "released/w1", "claimed/w3"}, evs)

	// The failed task's error and cancel, and a decided outcome.
	out = w.ok("job", "job-c").stdout
	require.Regexp(t, `state\s+finishing\n`, out)
	require.Regexp(t, `outcome\s+failed: cbc\.event_export: cbc: 403 forbidden \(decided by w2 at 2026-01-01 00:01:40Z; waiting for SampleDB\)`, out)
	require.Regexp(t, `cbc\.event_export\s+-\s+failed\s+301\s+\{"id":"99"\}\s+-\s+cbc: 403 forbidden: check CBC_API_ID\s+abandoned \(no cancel API\)\n`, out)

	// A task in the plan without a checkpoint yet, and a released lease.
	out = w.ok("job", "job-d").stdout
	require.Regexp(t, `state\s+claimable\n`, out)
	require.Regexp(t, `owner\s+none \(released\)\n`, out)
	require.Regexp(t, `lease\s+released: claimable\n`, out)
	require.Contains(t, out, "not planned yet")

	// JSON: worker.View plus lease and history.
	var rep jobReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("job", "job-a", "-o", "json").stdout), &rep))
	require.Equal(t, "job-a", rep.ID)
	require.Equal(t, "running", rep.State)
	require.NotNil(t, rep.Lease)
	require.False(t, rep.Lease.Expired)
	require.Equal(t, "w3", rep.Job.Owner)
	require.Equal(t, tokA, rep.Job.Token)
	require.Len(t, rep.Job.Plan, 2)
	require.Len(t, rep.Job.Tasks, 2)
	require.Equal(t, "success", rep.Job.Tasks[0].State)
	require.Equal(t, "101", string(rep.Job.Tasks[0].TaskID))
	require.JSONEq(t, `{"id":"4522"}`, string(rep.Job.Tasks[0].Ref))
	require.Len(t, rep.History, 3)
	require.Equal(t, historyEvent{At: rep.History[2].At, Event: "claimed", Worker: "w3", Token: tokA}, rep.History[2])
	require.Empty(t, rep.Finished)
}

func TestJobFinishedShowsTheTombstone(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedLedger()
	out := w.ok("job", "job-e").stdout
	require.Regexp(t, `state\s+finished: success\n`, out)
	require.Contains(t, out, "tombstone keeps redeliveries out for 7d")
	require.Regexp(t, `admitted\s+w2`, out)
	require.Regexp(t, `completed\s+w2`, out)
	require.Contains(t, out, "its timeline and result summary are kept for 1d")
	require.Regexp(t, `result\s+success\n`, out)
	require.Regexp(t, `cbc\.event_export\s+success\s+3\s+2\s+ws-1, ws-2\s+1\n`, out)
	require.Regexp(t, `ws-1\s+C:\\x\.exe\s+12\s+`+sha('e')+`\s+true\n`, out)
	require.Regexp(t, `(?m)^timeline$`, out)
	require.Regexp(t, `admitted\s+w2\s+\d+\s+from Sample\.Analysis\.Job\.SVG/2@\d+\n`, out)
	require.Regexp(t, `finished\s+w2\s+\d+\s+SampleDB has the job as success`, out)

	var rep jobReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("job", "-o", "json", "job-e").stdout), &rep))
	require.Equal(t, "success", rep.Finished)
	require.Nil(t, rep.Job)
	require.Len(t, rep.History, 2)
	require.Equal(t, "finished", rep.Timeline[len(rep.Timeline)-1].Event)
	var sum results.Summary
	require.NoError(t, json.Unmarshal(rep.Result, &sum))
	require.Equal(t, int64(3), sum.Tasks[0].Result.Rows)

	r := w.run("", "job", "job-zzz")
	require.Equal(t, 1, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "fleetctl: job job-zzz: not in the ledger (no record and no tombstone; tombstones expire 7d after a job ends)\n", r.stderr)
}

func TestReleaseMovesTheLeaseAndFencesTheOldOwner(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedLedger()
	r := w.ok("release", "job-a")
	require.Contains(t, r.stdout, "released job job-a; previous owner: w1\n")
	require.Contains(t, r.stdout, "w1 is fenced off")

	got, _, err := w.long.Claim(ctx(t), w.sess(w.long, "w2"), 10)
	require.NoError(t, err)
	var claimed []string
	for _, c := range got {
		claimed = append(claimed, c.Lease.ID)
		if c.Lease.ID == "job-a" {
			require.Greater(t, c.Lease.Token, f.a.Token)
			require.Equal(t, "w2", c.Record.Owner)
			require.Contains(t, c.Record.Fields, "task:sophos.xdr_query", "the new owner resumes from the checkpoints")
		}
	}
	require.ElementsMatch(t, []string{"job-a", "job-d"}, claimed)
	require.ErrorIs(t, w.store.Checkpoint(ctx(t), w.sess(w.long, "w1"), f.a, "x", "y"), state.ErrStale, "the old owner is fenced")
	_, err = w.store.Decide(ctx(t), w.sess(w.long, "w1"), f.a, []byte(`{"state":"success"}`), state.Event{})
	require.ErrorIs(t, err, state.ErrStale)

	var rep releaseReport
	require.NoError(t, json.Unmarshal([]byte(w.ok("release", "job-a", "-o", "json").stdout), &rep))
	require.Equal(t, releaseReport{ID: "job-a", PreviousOwner: "w2"}, rep)
	require.Contains(t, w.ok("release", "job-a").stdout, "previous owner: none (it was already released)")

	r = w.run("", "release", "job-e")
	require.Equal(t, 1, r.code)
	require.Equal(t, "fleetctl: job job-e is finished (success): there is no lease to release\n", r.stderr)
	r = w.run("", "release", "job-nope")
	require.Equal(t, 1, r.code)
	require.Equal(t, "fleetctl: job job-nope: no such job in the ledger\n", r.stderr)
	require.Empty(t, r.stdout)
}

// TestJobIDsInAnyCase: the ledger keys a job by its canonical (lower-case)
// UUID; an operator may paste it in any case.
func TestJobIDsInAnyCase(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	const id = "abcdef01-abcd-abcd-abcd-abcdef01234a"
	w.admit(w.long, "w1", id, "win", "Sample.Analysis.Job.OSL/0@0")
	upper := strings.ToUpper(id)
	require.Contains(t, w.ok("job", upper).stdout, id)
	require.Contains(t, w.ok("release", upper).stdout, "released job "+id+"; previous owner: w1")
}

// TestRefusalsAndQuarantineAreVisible: a terminal state SampleDB keeps
// refusing shows on the job, and a ledger key quarantined for holding the
// wrong type shows in the status.
func TestRefusalsAndQuarantineAreVisible(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	f := w.seedLedger()
	w.checkpoint(w.long, "w2", f.c, "delivery", `{"attempts":7,"sampledbState":"executing","answer":"sampledb PUT: HTTP 412: job is locked","at":1767225800000}`)
	out := w.ok("job", "job-c").stdout
	require.Regexp(t, `REFUSED\s+SampleDB has refused this terminal state 7 times \(it holds the job as executing\); last at 2026-01-01 00:03:20Z \(.*\): sampledb PUT: HTTP 412: job is locked`, out)

	// Something writes a string over job-b's record; its holder's next
	// write moves it aside.
	require.NoError(t, w.rdb.Set(ctx(t), "{"+w.ns+"}:job:job-b", "junk", 0).Err())
	require.ErrorIs(t, w.store.Checkpoint(ctx(t), w.sess(w.store, "w1"), f.b, "x", "y"), state.ErrGone)
	out = w.ok("status").stdout
	require.Regexp(t, `QUARANTINED\s+1 ledger key of the wrong type moved aside`, out)
	require.Contains(t, out, "quarantine:")
	require.Contains(t, out, ":job:job-b")
}
