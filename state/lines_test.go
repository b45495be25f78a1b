package state_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/state"
)

// TestProgressLinesAreReadFromTheHoldingSession: a job's progress lines
// come from the lines hash of the session that holds it, and only when
// newer (more polls) than the task's checkpoint; a worker that lost the
// job cannot show its lines over the new owner's; Get and ListJobs read
// them alike; the hash expires LinesTTL after its last write.
func TestProgressLinesAreReadFromTheHoldingSession(t *testing.T) {
	t.Parallel()
	b := setup(t, 10*time.Second)
	s := b.store
	const id, kind = "job-lines-1", "cbc-events"
	owner := admitOne(t, s, "w1", id).Lease
	rec, err := s.Get(ctx(t), id)
	require.NoError(t, err)
	require.Nil(t, rec.Lines, "a record without task checkpoints has no lines to read")
	cp := state.TaskCheckpoint{Kind: kind, Progress: "10 rows", Polls: 3, NextPoll: 1000}
	name, value := cp.Field()
	require.NoError(t, s.Checkpoint(ctx(t), sess(t, s, "w1"), owner, name, value))

	task := func() *state.TaskCheckpoint {
		t.Helper()
		rec, err := s.Get(ctx(t), id)
		require.NoError(t, err)
		got, err := rec.Task(kind)
		require.NoError(t, err)
		var listed *state.TaskCheckpoint
		require.NoError(t, s.ListJobs(ctx(t), 0, func(e state.JobEntry) error {
			if e.Record.ID == id {
				listed, err = e.Record.Task(kind)
			}
			return err
		}))
		require.Equal(t, got, listed, "ListJobs reads what Get reads")
		return got
	}
	line := func(worker, progress string, polls int) {
		t.Helper()
		l := state.ProgressLine{Progress: progress, Polls: polls, NextPoll: 2000}
		require.NoError(t, s.WriteLines(ctx(t), sess(t, s, worker), []string{state.LineField(id, kind), l.Encode()}, nil))
	}

	require.Equal(t, "10 rows", task().Progress, "no line: the checkpoint's")
	line("w1", "40 rows", 5)
	got := task()
	require.Equal(t, "40 rows", got.Progress, "a newer line")
	require.Equal(t, 5, got.Polls)
	require.EqualValues(t, 2000, got.NextPoll)
	line("w1", "5 rows", 2)
	require.Equal(t, "10 rows", task().Progress, "a line older than the checkpoint is not shown")

	line("w2", "99 rows", 50)
	require.Equal(t, "10 rows", task().Progress, "another session's line is not the holder's")

	ttl, err := b.rdb.PTTL(ctx(t), "{"+b.ns+"}:lines:"+sess(t, s, "w1").ID).Result()
	require.NoError(t, err)
	require.InDelta(t, state.LinesTTL.Seconds(), ttl.Seconds(), 5, "the hash expires LinesTTL after its last write")

	line("w1", "40 rows", 5)
	require.NoError(t, s.WriteLines(ctx(t), sess(t, s, "w1"), nil, []string{state.LineField(id, kind)}))
	require.Equal(t, "10 rows", task().Progress, "a deleted line is gone")
	line("w1", "40 rows", 5)
	require.NoError(t, s.DropLines(ctx(t), sess(t, s, "w1")))
	require.Equal(t, "10 rows", task().Progress, "a dropped hash is gone")
}
