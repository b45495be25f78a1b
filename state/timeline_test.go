package state_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/state"
)

// TestTimelineFollowsTheJobAndOutlivesIt: the scripts and the runner's
// notes build one timeline per job, in order, with the worker and token
// of each step; it, the result summary and the finished index stay after
// the record is gone.
func TestTimelineFollowsTheJobAndOutlivesIt(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	c := ctx(t)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	se := sess(t, b.store, "w1")
	require.NoError(t, b.store.CheckpointNotes(c, se, l, []state.Event{
		{Ev: "executing", Worker: "w1", Token: l.Token},
		{Ev: "task created", Detail: strings.Repeat("x", 2000)},
	}, "plan", "p"))
	_, err := b.store.Decide(c, se, l, []byte(`{"state":"success"}`), state.Event{Ev: "decided", Worker: "w1", Token: l.Token, Detail: "success"})
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(c, se, l, "success", state.Event{Ev: "finished", Worker: "w1", Token: l.Token}, []byte(`{"hits":1}`)))

	tl, err := b.store.Timeline(c, "job-1")
	require.NoError(t, err)
	var evs []string
	for _, e := range tl {
		evs = append(evs, e.Ev)
		require.False(t, e.At.IsZero(), "%s has a time", e.Ev)
	}
	require.Equal(t, []string{"admitted", "executing", "task created", "decided", "finished"}, evs)
	require.Equal(t, "w1", tl[0].Worker)
	require.Equal(t, l.Token, tl[0].Token)
	require.LessOrEqual(t, len(tl[2].Detail), 520, "a detail is capped")

	res, err := b.store.Result(c, "job-1")
	require.NoError(t, err)
	require.JSONEq(t, `{"hits":1}`, string(res))
	ttl := b.rdb.PTTL(c, "{"+b.ns+"}:tl:job-1").Val()
	require.Greater(t, ttl, 23*time.Hour)
	require.LessOrEqual(t, ttl, state.DefaultHistoryTTL)

	none, err := b.store.Result(c, "never")
	require.NoError(t, err)
	require.Nil(t, none)
	empty, err := b.store.Timeline(c, "never")
	require.NoError(t, err)
	require.Empty(t, empty)
}

// TestTimelineKeepsTheLastEvents: a job with more events than MaxTimeline
// keeps the newest; an entry that does not parse shows as unreadable.
func TestTimelineKeepsTheLastEvents(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	c := ctx(t)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	se := sess(t, b.store, "w1")
	evs := make([]state.Event, 0, state.MaxTimeline+50)
	for i := range state.MaxTimeline + 50 {
		evs = append(evs, state.Event{Ev: "poll", Detail: strconv.Itoa(i)})
	}
	require.NoError(t, b.store.CheckpointNotes(c, se, l, evs))
	require.NoError(t, b.rdb.RPush(c, "{"+b.ns+"}:tl:job-1", "not json").Err())
	tl, err := b.store.Timeline(c, "job-1")
	require.NoError(t, err)
	require.Len(t, tl, state.MaxTimeline+1)
	require.Equal(t, "50", tl[0].Detail, "the oldest are dropped")
	require.Equal(t, "unreadable", tl[len(tl)-1].Ev)
}

// TestFinishedPagesNewestFirst: the finished index pages newest first with
// a cursor, across jobs finished in the same millisecond, without repeats.
func TestFinishedPagesNewestFirst(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	c := ctx(t)
	const n = 157
	for i := range n {
		id := "job-" + strconv.Itoa(1000+i)
		l := admitOne(t, b.store, "w1", id).Lease
		require.NoError(t, b.store.Complete(c, sess(t, b.store, "w1"), l, "success", state.Event{}, nil))
	}
	count, err := b.store.FinishedCount(c)
	require.NoError(t, err)
	require.EqualValues(t, n, count)
	seen := map[string]bool{}
	var last time.Time
	cursor, pages := "", 0
	for {
		page, next, err := b.store.Finished(c, cursor, 10)
		require.NoError(t, err)
		pages++
		for _, f := range page {
			require.False(t, seen[f.ID], "%s twice", f.ID)
			seen[f.ID] = true
			if !last.IsZero() {
				require.False(t, f.At.After(last), "newest first")
			}
			last = f.At
		}
		if next == "" {
			break
		}
		cursor = next
	}
	require.Len(t, seen, n)
	require.Equal(t, 16, pages)
	_, _, err = b.store.Finished(c, "nonsense", 10)
	require.Error(t, err)
}
