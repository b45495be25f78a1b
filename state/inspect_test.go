package state_test

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/state"
)

func admitMany(t *testing.T, s *state.Store, worker, prefix string, n int) []state.Lease {
	t.Helper()
	reqs := make([]state.AdmitRequest, n)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: fmt.Sprintf("%s-%04d", prefix, i), Msg: []byte(`{}`), Source: "OSL/0@" + fmt.Sprint(i)}
	}
	res, _, err := s.Admit(ctx(t), sess(t, s, worker), reqs)
	require.NoError(t, err)
	out := make([]state.Lease, n)
	for i, r := range res {
		require.Equal(t, state.Admitted, r.Outcome)
		out[i] = r.Lease
	}
	return out
}

func TestListJobsReadsEveryRecordWithItsLeaseAcrossBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	leases := admitMany(t, b.store, "w1", "job", 450)
	require.NoError(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), leases[7], "task:cbc.event_export", `{"kind":"cbc.event_export"}`))
	_, err := b.store.Release(ctx(t), sess(t, b.store, "w1"), leases[8:9])
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), leases[9], "success", state.Event{}, nil))

	// A namespace that a glob-unescaped pattern of ours would match must
	// stay invisible: "?" matches any one character in SCAN MATCH.
	tricky, err := state.New(b.rdb, state.Config{Namespace: b.ns + "?"})
	require.NoError(t, err)
	other, err := state.New(b.rdb, state.Config{Namespace: b.ns + "x"})
	require.NoError(t, err)
	admitMany(t, other, "w9", "other", 3)
	admitMany(t, tricky, "w8", "tricky", 2)

	got := map[string]state.JobEntry{}
	require.NoError(t, b.store.ListJobs(ctx(t), 100, func(e state.JobEntry) error {
		_, dup := got[e.Record.ID]
		require.False(t, dup, "each job once")
		got[e.Record.ID] = e
		return nil
	}))
	require.Len(t, got, 449, "every record but the completed one")
	require.NotContains(t, got, "job-0009")
	e := got["job-0007"]
	require.Equal(t, "w1", e.Record.Owner)
	require.Equal(t, leases[7].Token, e.Record.Token)
	require.Equal(t, "OSL/0@7", e.Record.Source)
	require.Equal(t, `{"kind":"cbc.event_export"}`, e.Record.Fields["task:cbc.event_export"])
	require.True(t, e.HasLease)
	require.WithinDuration(t, time.Now().Add(30*time.Second), e.Deadline, 5*time.Second)
	rel := got["job-0008"]
	require.True(t, rel.HasLease)
	require.Equal(t, int64(0), rel.Deadline.UnixMilli(), "a released lease has deadline 0")
	require.Empty(t, rel.Record.Owner)

	var trickyIDs []string
	require.NoError(t, tricky.ListJobs(ctx(t), 0, func(e state.JobEntry) error {
		trickyIDs = append(trickyIDs, e.Record.ID)
		return nil
	}))
	sort.Strings(trickyIDs)
	require.Equal(t, []string{"tricky-0000", "tricky-0001"}, trickyIDs, "the glob characters of a namespace are escaped")

	stop := fmt.Errorf("stop")
	n := 0
	err = b.store.ListJobs(ctx(t), 50, func(state.JobEntry) error { n++; return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 1, n, "an error from fn stops the listing")
}

func TestLeaseSummaryCountsExpiredAndExpiringByRedisTime(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	long, err := state.New(b.rdb, state.Config{Namespace: b.ns, LeaseTTL: 10 * time.Minute})
	require.NoError(t, err)
	short := admitMany(t, b.store, "w1", "short", 2)
	admitMany(t, long, "w2", "long", 1)
	_, err = b.store.Release(ctx(t), sess(t, b.store, "w1"), short[:1])
	require.NoError(t, err)
	_, err = b.store.Decide(ctx(t), sess(t, b.store, "w1"), short[1], []byte(`{"state":"success"}`), state.Event{})
	require.NoError(t, err)

	sum, err := b.store.LeaseSummary(ctx(t), time.Minute, 10)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), sum.Now, 5*time.Second)
	require.Equal(t, int64(2), sum.Held)
	require.Equal(t, int64(1), sum.Claimable)
	require.Equal(t, int64(1), sum.Expiring, "the 30s session's job; the ten-minute one is not due")
	require.Len(t, sum.Sessions, 2)
	require.Equal(t, "w1", sum.Sessions[0].Worker, "earliest deadline first")
	require.Equal(t, int64(1), sum.Sessions[0].Jobs, "the released job left the session")
	require.Equal(t, "w2", sum.Sessions[1].Worker)
	require.Len(t, sum.Due, 1)
	require.Equal(t, state.DueLease{ID: "short-0000", Owner: "", Token: short[0].Token, Deadline: time.UnixMilli(0),
		Expired: true}, sum.Due[0], "released: claimable")

	sum, err = b.store.LeaseSummary(ctx(t), time.Minute, 0)
	require.NoError(t, err)
	require.Empty(t, sum.Due, "limit bounds the list, not the counts")
	require.Equal(t, int64(1), sum.Claimable)

	dl, ok, err := b.store.LeaseDeadline(ctx(t), "long-0000")
	require.NoError(t, err)
	require.True(t, ok)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), dl, 5*time.Second, "its session's deadline")
	dl, ok, err = b.store.LeaseDeadline(ctx(t), "short-0000")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, int64(0), dl.UnixMilli(), "released: claimable since the epoch")
	_, ok, err = b.store.LeaseDeadline(ctx(t), "nope")
	require.NoError(t, err)
	require.False(t, ok)
}

func TestCoolDownsListsTheOnesInForce(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	b.store.RateLimiter("sophos:abc", 1, 1, nil).Throttled(ctx(t), 2*time.Minute)
	b.store.RateLimiter("cbc:def", 1, 1, nil).Throttled(ctx(t), 30*time.Second)
	b.store.RateLimiter("cytomic:zzz", 1, 1, nil) // never throttled
	other, err := state.New(b.rdb, state.Config{Namespace: b.ns + "x"})
	require.NoError(t, err)
	other.RateLimiter("sophos:other", 1, 1, nil).Throttled(ctx(t), time.Minute)

	got, err := b.store.CoolDowns(ctx(t))
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "cbc:def", got[0].Name)
	require.Equal(t, "sophos:abc", got[1].Name)
	require.InDelta(t, 30*time.Second, got[0].Left, float64(5*time.Second))
	require.InDelta(t, 2*time.Minute, got[1].Left, float64(5*time.Second))
	d, err := b.store.CoolDown(ctx(t), "sophos:abc")
	require.NoError(t, err)
	require.InDelta(t, got[1].Left, d, float64(5*time.Second))
}

// TestLimitersListsTheFleetsBudgets: every limiter a request went through,
// with how far its budget is spent ahead; not another fleet's, not a
// credential's tenant set.
func TestLimitersListsTheFleetsBudgets(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	before := time.Now()
	require.NoError(t, b.store.RateLimiter("sophos:abc", 1, 1, nil).Wait(ctx(t)))
	require.NoError(t, b.store.RateLimiter("cbc:def", 1, 1, nil).Wait(ctx(t)))
	other, err := state.New(b.rdb, state.Config{Namespace: b.ns + "x"})
	require.NoError(t, err)
	require.NoError(t, other.RateLimiter("sophos:other", 1, 1, nil).Wait(ctx(t)))
	require.NoError(t, b.rdb.SAdd(ctx(t), "{"+b.ns+"}:rl:cbc:def:tenants", "acme").Err())

	got, err := b.store.Limiters(ctx(t))
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "cbc:def", got[0].Name)
	require.Equal(t, "sophos:abc", got[1].Name)
	for _, l := range got {
		require.WithinRange(t, l.TAT, before.Add(-5*time.Second), time.Now().Add(5*time.Second), l.Name)
	}
}

func TestJobLeaseHistoryFollowsOneJobAcrossPages(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	first := admitOne(t, b.store, "w1", "target")
	admitMany(t, b.store, "w1", "noise", 2500) // more than one page of the log
	_, err := b.store.Release(ctx(t), sess(t, b.store, "w1"), []state.Lease{first.Lease})
	require.NoError(t, err)
	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	owner, ok, err := b.store.ForceRelease(ctx(t), "target", "")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "w2", owner)
	got, _, err = b.store.Claim(ctx(t), sess(t, b.store, "w3"), 1)
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w3"), got[0].Lease, "success", state.Event{}, nil))

	evs, err := b.store.JobLeaseHistory(ctx(t), "target")
	require.NoError(t, err)
	var line []string
	for _, ev := range evs {
		require.Equal(t, "target", ev.JobID)
		line = append(line, ev.Event+"/"+ev.Worker)
	}
	require.Equal(t, []string{"admitted/w1", "released/w1", "claimed/w2", "forced/w2", "claimed/w3", "completed/w3"}, line)
	for i := 1; i < len(evs); i++ {
		require.False(t, evs[i].At.Before(evs[i-1].At), "oldest first")
		require.GreaterOrEqual(t, evs[i].Token, evs[i-1].Token)
	}
}

// TestLeaseLogNewestFirstFilteredAndCapped: LeaseLog reads the newest
// lease events backwards across pages, keeps the events asked for, and
// reads no further back than LeaseLogScanMax entries.
func TestLeaseLogNewestFirstFilteredAndCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	handOver(t, b.store, "target")
	line := func(evs []state.LeaseEvent) []string {
		var out []string
		for _, ev := range evs {
			out = append(out, fmt.Sprintf("%s/%s/%s", ev.Event, ev.Worker, ev.JobID))
		}
		return out
	}
	moves := []string{"takeover", "claimed", "released", "forced"}
	evs, err := b.store.LeaseLog(ctx(t), 10, moves...)
	require.NoError(t, err)
	require.Equal(t, []string{"claimed/w3/target", "forced/w2/target", "claimed/w2/target", "released/w1/target"}, line(evs), "newest first")
	require.Greater(t, evs[0].Token, evs[2].Token)
	require.False(t, evs[0].At.IsZero())
	evs, err = b.store.LeaseLog(ctx(t), 2)
	require.NoError(t, err)
	require.Equal(t, []string{"claimed/w3/target", "forced/w2/target"}, line(evs), "every event without a filter")

	// Found across pages of the log, within the scan bound…
	admitMany(t, b.store, "w1", "noise", state.LeaseLogScanMax-100)
	evs, err = b.store.LeaseLog(ctx(t), 10, moves...)
	require.NoError(t, err)
	require.Len(t, evs, 4)
	evs, err = b.store.LeaseLog(ctx(t), 10_000)
	require.NoError(t, err)
	require.Len(t, evs, 500, "at most 500 events")
	// …not beyond it.
	admitMany(t, b.store, "w1", "more", 200)
	evs, err = b.store.LeaseLog(ctx(t), 10, moves...)
	require.NoError(t, err)
	require.Empty(t, evs)
}

// TestReleaseGoesInBoundedBatches: a drain handing 1,200 leases over runs
// three release scripts of at most MaxReleaseBatch leases (one script for
// 100,000 held Redis for seconds: every renewal answered BUSY), and every
// lease is handed over.
func TestReleaseGoesInBoundedBatches(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	leases := admitMany(t, b.store, "w1", "job", 1200)
	evals := &testutil.RedisCounter{}
	b.rdb.AddHook(evals)
	n, err := b.store.Release(ctx(t), sess(t, b.store, "w1"), leases)
	require.NoError(t, err)
	require.Equal(t, 1200, n)
	require.EqualValues(t, 3, evals.Scripts.Load(), "ceil(1200/%d) scripts", state.MaxReleaseBatch)
	claimable, err := b.rdb.ZCard(ctx(t), "{"+b.ns+"}:claimable").Result()
	require.NoError(t, err)
	require.EqualValues(t, 1200, claimable)
}
