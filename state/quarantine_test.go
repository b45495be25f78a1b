package state_test

import (
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/state"
)

// TestCorruptKeyIsQuarantinedNotFleetWide: one job key overwritten with a
// string (and a tombstone with a hash) must not fail the batched scripts for
// everyone. Renewal keeps the session, claims and admissions go on,
// and the corrupt keys are moved aside where an operator can see them.
func TestCorruptKeyIsQuarantinedNotFleetWide(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	var mu sync.Mutex
	var reported []string
	b.store.OnQuarantine(func(keys []string) {
		mu.Lock()
		reported = append(reported, keys...)
		mu.Unlock()
	})
	a, bad, c := admitOne(t, b.store, "w1", "job-a"), admitOne(t, b.store, "w1", "job-b"), admitOne(t, b.store, "w1", "job-c")
	pfx := "{" + b.ns + "}:"
	require.NoError(t, b.rdb.Set(ctx(t), pfx+"job:job-b", "not a hash", 0).Err())

	res, err := b.store.Renew(ctx(t), sess(t, b.store, "w1"), 3)
	require.NoError(t, err, "one corrupt record must not fail the session's renewal")
	require.True(t, res.Alive)
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), bad.Lease, "k", "v"), state.ErrGone,
		"the holder's next write finds the corrupt record quarantined: it re-seeds the job from memory")

	// A corrupt record whose lease expired must not stop anyone's claims.
	require.NoError(t, b.rdb.Set(ctx(t), pfx+"job:job-d", "junk", 0).Err())
	require.NoError(t, b.rdb.ZAdd(ctx(t), pfx+"claimable", redisZ(0, "job-d")).Err())
	_, err = b.store.Release(ctx(t), sess(t, b.store, "w1"), []state.Lease{c.Lease})
	require.NoError(t, err)
	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "job-c", got[0].Lease.ID)

	// A tombstone of the wrong type, and a fenced write on a corrupt record.
	require.NoError(t, b.rdb.HSet(ctx(t), pfx+"tomb:job-e", "x", "y").Err())
	e := admitOne(t, b.store, "w2", "job-e")
	require.Equal(t, state.Admitted, e.Outcome)
	require.NoError(t, b.rdb.Set(ctx(t), pfx+"job:job-a", "junk", 0).Err())
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), a.Lease, "k", "v"), state.ErrGone,
		"the owner re-seeds the job from memory")

	q, err := b.store.Quarantined(ctx(t), 0)
	require.NoError(t, err)
	require.Len(t, q, 4)
	mu.Lock()
	require.Len(t, reported, 4)
	mu.Unlock()
	n, err := b.store.QuarantineDepth(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
	// The job re-seeded after the quarantine is adopted normally.
	ok, err := b.store.Adopt(ctx(t), "job-a", state.FieldMsg, "{}")
	require.NoError(t, err)
	require.True(t, ok)
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// TestForceReleaseExcludesTheOwner: an operator releases a job away from a
// live worker; that worker's claim loop must not take it straight back.
// Another worker takes it; the old owner could only after the grace.
func TestForceReleaseExcludesTheOwner(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	admitOne(t, b.store, "w1", "job-1")
	owner, ok, err := b.store.ForceRelease(ctx(t), "job-1", "")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "w1", owner)

	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w1"), 10)
	require.NoError(t, err)
	require.Empty(t, got, "the released owner does not claim the job back")
	again := admitOne(t, b.store, "w1", "job-1")
	require.Equal(t, state.Running, again.Outcome, "nor take it over by a redelivered record")

	got, _, err = b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, "job-1", got[0].Lease.ID)
}
