package state_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/state"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type bundle struct {
	rdb   *redis.Client
	store *state.Store
	ns    string
}

func setup(t *testing.T, ttl time.Duration) bundle {
	t.Helper()
	rdb, ns := testenv.RedisClient(t)
	s, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: ttl})
	require.NoError(t, err)
	require.NoError(t, s.Load(ctx(t)))
	return bundle{rdb: rdb, store: s, ns: ns}
}

func ctx(t *testing.T) context.Context { return testutil.Context(t, 30*time.Second) }

// sessions holds one open session per store and worker for a test.
var sessions sync.Map // sessionKey → state.Session

type sessionKey struct {
	s      *state.Store
	worker string
}

// sess returns worker's session on s, opening it the first time.
func sess(t testing.TB, s *state.Store, worker string) state.Session {
	t.Helper()
	if v, ok := sessions.Load(sessionKey{s, worker}); ok {
		return v.(state.Session)
	}
	se, _, err := s.OpenSession(context.Background(), worker)
	require.NoError(t, err)
	v, _ := sessions.LoadOrStore(sessionKey{s, worker}, se)
	return v.(state.Session)
}

func admitOne(t *testing.T, s *state.Store, worker, id string) state.AdmitResult {
	t.Helper()
	res, _, err := s.Admit(ctx(t), sess(t, s, worker), []state.AdmitRequest{{ID: id, Msg: []byte(`{"jobID":"` + id + `"}`), Source: "test"}})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[0]
}

// admitN admits jobs job-0 … job-(n-1) under worker's session, one at a
// time (admitOne), and returns their leases in that order.
func admitN(t *testing.T, s *state.Store, worker string, n int) []state.Lease {
	t.Helper()
	var leases []state.Lease
	for i := range n {
		leases = append(leases, admitOne(t, s, worker, fmt.Sprintf("job-%d", i)).Lease)
	}
	return leases
}

// handOver takes job id through every hand-over but takeover: w1 admits it
// and releases it, w2 claims it and is forced off, w3 claims it. It returns
// w3's lease.
func handOver(t *testing.T, s *state.Store, id string) state.Lease {
	t.Helper()
	first := admitOne(t, s, "w1", id).Lease
	_, err := s.Release(ctx(t), sess(t, s, "w1"), []state.Lease{first})
	require.NoError(t, err)
	got, _, err := s.Claim(ctx(t), sess(t, s, "w2"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	_, _, err = s.ForceRelease(ctx(t), id, "")
	require.NoError(t, err)
	got, _, err = s.Claim(ctx(t), sess(t, s, "w3"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	return got[0].Lease
}

func TestAdmitIsIdempotentByJobID(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	first := admitOne(t, b.store, "w1", "job-1")
	require.Equal(t, state.Admitted, first.Outcome)
	require.Positive(t, first.Lease.Token)
	require.Equal(t, "w1", first.Record.Owner)

	again := admitOne(t, b.store, "w2", "job-1")
	require.Equal(t, state.Running, again.Outcome, "a live lease keeps the duplicate out")
	require.Equal(t, "w1", again.Detail)
	mine := admitOne(t, b.store, "w1", "job-1")
	require.Equal(t, state.Held, mine.Outcome, "the holder's own redelivery (or lost answer) is handed back to it")
	require.Equal(t, first.Lease, mine.Lease)
	require.Equal(t, "w1", mine.Record.Owner)

	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), first.Lease, "success", state.Event{}, nil))
	after := admitOne(t, b.store, "w2", "job-1")
	require.Equal(t, state.Finished, after.Outcome, "the tombstone keeps redeliveries out")
	require.Equal(t, "success", after.Detail)
}

func TestAdmitBatchInOneCall(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	reqs := []state.AdmitRequest{{ID: "a", Msg: []byte("1")}, {ID: "b", Msg: []byte("2")}, {ID: "a", Msg: []byte("1")}}
	res, _, err := b.store.Admit(ctx(t), sess(t, b.store, "w1"), reqs)
	require.NoError(t, err)
	require.Equal(t, []state.AdmitOutcome{state.Admitted, state.Admitted, state.Held},
		[]state.AdmitOutcome{res[0].Outcome, res[1].Outcome, res[2].Outcome},
		"the same job twice in one batch is admitted once; the second finds it held by the same session")
	require.Equal(t, res[0].Lease, res[2].Lease, "with the same lease (no new token)")
}

func TestExpiredLeaseIsTakenOverWithHigherTokenAndCheckpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, 300*time.Millisecond)
	first := admitOne(t, b.store, "w1", "job-1")
	require.NoError(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), first.Lease, "task:cbc", `{"ref":{"id":"42"}}`))

	require.Eventually(t, func() bool {
		_, err := b.store.Renew(ctx(t), sess(t, b.store, "w2"), 0) // w2 lives on; w1 does not
		require.NoError(t, err)
		got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
		require.NoError(t, err)
		if len(got) == 0 {
			return false
		}
		require.Len(t, got, 1)
		require.Greater(t, got[0].Lease.Token, first.Lease.Token, "fencing token increases at every acquisition")
		require.Equal(t, `{"ref":{"id":"42"}}`, got[0].Record.Fields["task:cbc"], "the takeover sees the checkpoint")
		require.Equal(t, "w2", got[0].Record.Owner)
		return true
	}, 5*time.Second, 20*time.Millisecond)

	// The first owner is fenced off every write.
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), first.Lease, "x", "y"), state.ErrStale)
	_, err := b.store.Decide(ctx(t), sess(t, b.store, "w1"), first.Lease, []byte(`{"state":"success"}`), state.Event{})
	require.ErrorIs(t, err, state.ErrStale)
	require.ErrorIs(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), first.Lease, "success", state.Event{}, nil), state.ErrStale)
	rec, err := b.store.Get(ctx(t), "job-1")
	require.NoError(t, err)
	require.NotContains(t, rec.Fields, "x")
}

func TestClaimTakesOnlyExpiredOldestFirstUpToMax(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	leases := admitN(t, b.store, "w1", 5)
	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Empty(t, got, "live leases are not claimable")

	// Release in reverse order; all get deadline 0, then claim 2.
	n, err := b.store.Release(ctx(t), sess(t, b.store, "w1"), leases[3:])
	require.NoError(t, err)
	require.Equal(t, 2, n)
	got, _, err = b.store.Claim(ctx(t), sess(t, b.store, "w2"), 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	got2, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Len(t, got2, 1, "max bounds each claim; only released leases are claimable")
}

func TestReleaseRequiresOwnership(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	n, err := b.store.Release(ctx(t), sess(t, b.store, "w2"), []state.Lease{l})
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = b.store.Release(ctx(t), sess(t, b.store, "w1"), []state.Lease{{ID: l.ID, Token: l.Token + 1}})
	require.NoError(t, err)
	require.Zero(t, n, "a stale token cannot release")
}

func TestDecideFirstWins(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	got, err := b.store.Decide(ctx(t), sess(t, b.store, "w1"), l, []byte(`{"state":"aborted"}`), state.Event{})
	require.NoError(t, err)
	require.JSONEq(t, `{"state":"aborted"}`, string(got))
	got, err = b.store.Decide(ctx(t), sess(t, b.store, "w1"), l, []byte(`{"state":"success"}`), state.Event{})
	require.NoError(t, err)
	require.JSONEq(t, `{"state":"aborted"}`, string(got), "exactly one terminal decision")
	depth, err := b.store.OutboxDepth(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, depth)
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), l, "aborted", state.Event{}, nil))
	depth, err = b.store.OutboxDepth(ctx(t))
	require.NoError(t, err)
	require.Zero(t, depth)
}

// TestForceReleaseMailsTheHolder: an operator's release reaches the
// holder's session mailbox at once; other jobs stay held.
func TestForceReleaseMailsTheHolder(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	kept := admitOne(t, b.store, "w1", "kept").Lease
	stolen := admitOne(t, b.store, "w1", "stolen").Lease
	_, ok, err := b.store.ForceRelease(ctx(t), "stolen", "")
	require.NoError(t, err)
	require.True(t, ok)

	mail, err := b.store.ReadMail(ctx(t), sess(t, b.store, "w1"), time.Second, 10)
	require.NoError(t, err)
	require.Len(t, mail, 1)
	require.Equal(t, state.Mail{JobID: "stolen", Token: stolen.Token, Lost: state.LostStolen,
		Header: fmt.Sprintf("lost stolen %d stolen", stolen.Token)}, mail[0])
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), stolen, "x", "y"), state.ErrStale)
	require.NoError(t, b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), kept, "x", "y"), "the other job is still held")

	n, err := b.store.NotifyAborts(ctx(t), []string{"kept", "kept", "stolen", "unknown"}, "")
	require.NoError(t, err)
	require.Equal(t, 2, n, "each known job marked once")
	mail, err = b.store.ReadMail(ctx(t), sess(t, b.store, "w1"), time.Second, 10)
	require.NoError(t, err)
	require.Equal(t, []state.Mail{{JobID: "kept", Abort: true, Header: "abort kept"}}, mail,
		"only the holder of a held job is told; the released one carries the mark")
	rec, err := b.store.Get(ctx(t), "stolen")
	require.NoError(t, err)
	require.Equal(t, "1", rec.Fields[state.FieldAbort])
	n, err = b.store.NotifyAborts(ctx(t), []string{"kept"}, "")
	require.NoError(t, err)
	require.Zero(t, n, "an abort already noted is not mailed again")
}

// TestExpiredSessionsJobsAreReapedAndClaimed: a session that is not renewed
// dies with all its jobs; another worker's claim takes them over with higher
// tokens, and the dead session can neither renew nor write.
func TestExpiredSessionsJobsAreReapedAndClaimed(t *testing.T) {
	t.Parallel()
	b := setup(t, 300*time.Millisecond)
	dead := sess(t, b.store, "w1")
	held := admitMany(t, b.store, "w1", "job", 5)
	var got []state.Claimed
	require.Eventually(t, func() bool {
		c, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 2)
		require.NoError(t, err)
		got = append(got, c...)
		// w2 must stay alive meanwhile.
		_, err = b.store.Renew(ctx(t), sess(t, b.store, "w2"), len(got))
		require.NoError(t, err)
		return len(got) == 5
	}, 10*time.Second, 20*time.Millisecond)
	for _, c := range got {
		require.Equal(t, "w2", c.Record.Owner)
		require.Equal(t, sess(t, b.store, "w2").ID, c.Record.Session)
	}
	res, err := b.store.Renew(ctx(t), dead, 5)
	require.NoError(t, err)
	require.False(t, res.Alive, "a dead session stays dead")
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), dead, held[0], "x", "y"), state.ErrStale)
	_, _, err = b.store.Admit(ctx(t), dead, []state.AdmitRequest{{ID: "new", Msg: []byte("{}")}})
	require.ErrorIs(t, err, state.ErrSessionGone)
	_, _, err = b.store.Claim(ctx(t), dead, 1)
	require.ErrorIs(t, err, state.ErrSessionGone)
	sum, err := b.store.LeaseSummary(ctx(t), time.Second, 0)
	require.NoError(t, err)
	for _, si := range sum.Sessions {
		require.NotEqual(t, dead.ID, si.ID, "a reaped session is forgotten")
	}
}

func TestRenewalOfThousandLeasesIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	reqs := make([]state.AdmitRequest, 1000)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: fmt.Sprintf("job-%04d", i), Msg: []byte("{}")}
	}
	k := state.NewKeeper(b.store, nil, state.KeeperConfig{Worker: "w1"})
	require.NoError(t, k.Open(ctx(t)))
	res, _, err := b.store.Admit(ctx(t), k.Session(), reqs)
	require.NoError(t, err)
	for _, r := range res {
		require.Equal(t, state.Admitted, r.Outcome)
		require.True(t, k.Add(k.Session(), r.Lease))
	}
	require.Equal(t, 1000, k.Len())

	hook := &testutil.RedisCounter{}
	b.rdb.AddHook(hook)
	require.NoError(t, k.RenewOnce(ctx(t)))
	require.EqualValues(t, 1, hook.Trips.Load(), "one renewal tick for 1,000 in-flight jobs is one Redis round trip")
	require.Equal(t, 1000, k.Len(), "nothing lost")
}

// TestKeeperLocalValidityRunsOutWithoutRedis: when renewals cannot reach
// Redis, the local view of the session (and so of every job) runs out after
// TTL minus the margin, before Redis would hand the jobs to others; a
// worker paused longer than that finds every job invalid on waking.
func TestKeeperLocalValidityRunsOutWithoutRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, 500*time.Millisecond)
	own := redis.NewClient(b.rdb.Options())
	ks, err := state.New(own, state.Config{Namespace: b.ns, LeaseTTL: 500 * time.Millisecond})
	require.NoError(t, err)

	var mu sync.Mutex
	var lost []state.LossReason
	k := state.NewKeeper(ks, nil, state.KeeperConfig{Worker: "w1", OnLost: func(id string, _ int64, why state.LossReason) {
		mu.Lock()
		lost = append(lost, why)
		mu.Unlock()
	}})
	require.NoError(t, k.Open(ctx(t)))
	res, _, err := ks.Admit(ctx(t), k.Session(), []state.AdmitRequest{{ID: "job-1", Msg: []byte("{}")}})
	require.NoError(t, err)
	l := res[0].Lease
	require.True(t, k.Add(k.Session(), l))
	require.False(t, k.Add(state.Session{ID: "w1.other"}, state.Lease{ID: "x", Token: 1}), "a lease of another session is not kept")
	require.True(t, k.Valid(l.ID, l.Token))
	require.False(t, k.Valid(l.ID, l.Token+1), "another token is not valid")

	require.NoError(t, own.Close()) // Redis unreachable from now on
	require.Eventually(t, func() bool { return !k.Valid(l.ID, l.Token) }, 5*time.Second, 10*time.Millisecond,
		"without renewals the local view expires after TTL-margin")
	require.Error(t, k.RenewOnce(ctx(t)))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []state.LossReason{state.LostExpired}, lost)
	require.Zero(t, k.Len())
}

// TestKeeperAbandonsASessionRenewedAfterItsLocalValidity: a renewal that
// reaches Redis only after the local validity ran out (a worker starved of
// CPU) keeps the session alive in Redis, but the jobs that checked Valid
// meanwhile have stopped. The keeper must not revive it: every job is
// reported lost and a new session opened, so the old one expires and its
// jobs are claimed (found by the soak test: 849 jobs held by a live session
// nobody ran).
func TestKeeperAbandonsASessionRenewedAfterItsLocalValidity(t *testing.T) {
	t.Parallel()
	b := setup(t, time.Second)
	var mu sync.Mutex
	var lost []state.LossReason
	// A margin of 900 ms: the local view lapses 100 ms after the session
	// opened, Redis keeps it for a second.
	k := state.NewKeeper(b.store, nil, state.KeeperConfig{Worker: "w1", Margin: 900 * time.Millisecond,
		OnLost: func(_ string, _ int64, why state.LossReason) {
			mu.Lock()
			lost = append(lost, why)
			mu.Unlock()
		}})
	require.NoError(t, k.Open(ctx(t)))
	first := k.Session()
	res, _, err := b.store.Admit(ctx(t), first, []state.AdmitRequest{{ID: "job-1", Msg: []byte("{}")}})
	require.NoError(t, err)
	l := res[0].Lease
	require.True(t, k.Add(first, l))
	require.Eventually(t, func() bool { return !k.Valid(l.ID, l.Token) }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, k.RenewOnce(ctx(t)))
	mu.Lock()
	require.Equal(t, []state.LossReason{state.LostExpired}, lost, "the late renewal does not revive the jobs")
	mu.Unlock()
	require.NotEqual(t, first.ID, k.Session().ID, "a new session is open")
	require.Zero(t, k.Len())
	require.False(t, k.Valid(l.ID, l.Token))
}

// TestKeeperReopensAfterLosingItsSession: Redis says the session is gone
// (its data lost); every job is reported lost and a new session opened.
func TestKeeperReopensAfterLosingItsSession(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	var lost []string
	var why state.LossReason
	core, logs := observer.New(zap.InfoLevel)
	k := state.NewKeeper(b.store, nil, state.KeeperConfig{Worker: "w1", Logger: zap.New(core),
		OnLost:        func(id string, _ int64, _ state.LossReason) { lost = append(lost, id) },
		OnSessionLost: func(r state.LossReason, _ int) { why = r }})
	require.NoError(t, k.Open(ctx(t)))
	opened := time.Now()
	first := k.Session()
	res, _, err := b.store.Admit(ctx(t), first, []state.AdmitRequest{{ID: "a", Msg: []byte("{}")}, {ID: "b", Msg: []byte("{}")}})
	require.NoError(t, err)
	for _, r := range res {
		k.Add(first, r.Lease)
	}
	require.NoError(t, b.rdb.ZRem(ctx(t), "{"+b.ns+"}:sessions", first.ID).Err())
	require.NoError(t, k.RenewOnce(ctx(t)))
	sort.Strings(lost)
	require.Equal(t, []string{"a", "b"}, lost)
	require.Equal(t, state.LostMissing, why, "no epoch seen before and the session unknown: lost data")
	require.NotEqual(t, first.ID, k.Session().ID, "a new session is open")
	require.Zero(t, k.Len())
	// The log says how long ago the session was last kept alive (here:
	// when it opened), to tell stalled renewals from a failed one.
	lostLogs := logs.FilterMessage("session lost: every job it held is dropped").All()
	require.Len(t, lostLogs, 1)
	ago, ok := lostLogs[0].ContextMap()["renewed_ago"].(time.Duration)
	require.True(t, ok, "%v", lostLogs[0].ContextMap())
	require.Positive(t, ago)
	require.LessOrEqual(t, ago, time.Since(opened)+time.Second)
}

func TestKeeperDetectsEpochChange(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	e, err := b.store.Epoch(ctx(t))
	require.NoError(t, err)
	changed := make(chan string, 1)
	k := state.NewKeeper(b.store, nil, state.KeeperConfig{Worker: "w1", OnEpoch: func(_, n string) { changed <- n }})
	require.NoError(t, k.Open(ctx(t)))
	k.SetEpoch(e)
	require.NoError(t, k.RenewOnce(ctx(t)))
	require.Empty(t, changed)
	// Redis loses the namespace's data.
	keys, err := b.rdb.Keys(ctx(t), "{"+b.ns+"}:*").Result()
	require.NoError(t, err)
	require.NoError(t, b.rdb.Del(ctx(t), keys...).Err())
	require.NoError(t, k.RenewOnce(ctx(t)))
	select {
	case n := <-changed:
		require.NotEqual(t, e, n)
	default:
		t.Fatal("epoch change not reported")
	}
}

// TestEpochAge: a new epoch is young (a data loss just happened); an epoch
// keeps its creation time; one without a recorded time counts as old.
func TestEpochAge(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	e, age, err := b.store.EpochAge(ctx(t))
	require.NoError(t, err)
	require.NotEmpty(t, e)
	require.Less(t, age, 30*time.Second, "just created")

	at := "{" + b.ns + "}:epoch:at"
	ms, err := b.rdb.Get(ctx(t), at).Int64()
	require.NoError(t, err)
	require.NoError(t, b.rdb.Set(ctx(t), at, ms-int64(time.Hour/time.Millisecond), 0).Err())
	e2, age, err := b.store.EpochAge(ctx(t))
	require.NoError(t, err)
	require.Equal(t, e, e2)
	require.GreaterOrEqual(t, age, time.Hour)

	require.NoError(t, b.rdb.Del(ctx(t), at).Err()) // an epoch from before creation times were kept
	_, age, err = b.store.EpochAge(ctx(t))
	require.NoError(t, err)
	require.Greater(t, age, 30*time.Second)
}

func TestAdoptOnlyUnknownJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "known").Lease
	ok, err := b.store.Adopt(ctx(t), "known", state.FieldMsg, "x")
	require.NoError(t, err)
	require.False(t, ok)
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), l, "success", state.Event{}, nil))
	ok, err = b.store.Adopt(ctx(t), "known", state.FieldMsg, "x")
	require.NoError(t, err)
	require.False(t, ok, "a tombstoned job is not adopted")

	ok, err = b.store.Adopt(ctx(t), "lost", state.FieldMsg, `{"jobID":"lost"}`, "task:cbc", "cp")
	require.NoError(t, err)
	require.True(t, ok)
	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "an adopted job is claimable at once")
	require.Equal(t, "cp", got[0].Record.Fields["task:cbc"])
	require.Equal(t, `{"jobID":"lost"}`, string(got[0].Record.Msg))

	// Re-seeded with a grace: not claimable before it ends.
	ok, err = b.store.AdoptAfter(ctx(t), "reseeded", time.Hour, state.FieldMsg, `{"jobID":"reseeded"}`)
	require.NoError(t, err)
	require.True(t, ok)
	got, _, err = b.store.Claim(ctx(t), sess(t, b.store, "w2"), 10)
	require.NoError(t, err)
	require.Empty(t, got, "claimable only after the grace")
	rec, err := b.store.Get(ctx(t), "reseeded")
	require.NoError(t, err)
	require.NotNil(t, rec)
}

func TestScriptsSurviveRedisForgettingThem(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	require.NoError(t, b.rdb.ScriptFlush(ctx(t)).Err())
	require.Equal(t, state.Admitted, admitOne(t, b.store, "w1", "job-1").Outcome)
}

func TestConcurrentClaimsNeverShareAJob(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	leases := admitN(t, b.store, "w0", 200)
	_, err := b.store.Release(ctx(t), sess(t, b.store, "w0"), leases)
	require.NoError(t, err)
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprintf("w%d", w+1)
			for {
				got, _, err := b.store.Claim(context.Background(), sess(t, b.store, worker), 7)
				if err != nil || len(got) == 0 {
					return
				}
				mu.Lock()
				for _, c := range got {
					if prev, dup := seen[c.Lease.ID]; dup {
						t.Errorf("job %s claimed by %s and %s", c.Lease.ID, prev, worker)
					}
					seen[c.Lease.ID] = worker
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Len(t, seen, 200)
}

func TestLeaseHistoryRecordsEveryHandOver(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := handOver(t, b.store, "job-1")
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w3"), l, "success", state.Event{}, nil))

	evs, next, err := b.store.LeaseHistory(ctx(t), "", 100)
	require.NoError(t, err)
	var seq []string
	for _, e := range evs {
		require.Equal(t, "job-1", e.JobID)
		require.False(t, e.At.IsZero())
		seq = append(seq, e.Event+":"+e.Worker)
	}
	require.Equal(t, []string{"admitted:w1", "released:w1", "claimed:w2", "forced:w2", "claimed:w3", "completed:w3"}, seq)
	require.Less(t, evs[0].Token, evs[2].Token)
	more, _, err := b.store.LeaseHistory(ctx(t), next, 100)
	require.NoError(t, err)
	require.Empty(t, more, "reading on from the last ID returns only new events")
}

func TestFencedWritesTellLostDataFromLostLease(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	require.NoError(t, b.rdb.Del(ctx(t), "{"+b.ns+"}:job:job-1").Err()) // Redis lost it
	err := b.store.Checkpoint(ctx(t), sess(t, b.store, "w1"), l, "x", "y")
	require.ErrorIs(t, err, state.ErrGone)
	require.ErrorIs(t, err, state.ErrStale, "gone is also not owned")
	_, err = b.store.Decide(ctx(t), sess(t, b.store, "w1"), l, []byte(`{}`), state.Event{})
	require.ErrorIs(t, err, state.ErrGone)
	require.ErrorIs(t, b.store.Complete(ctx(t), sess(t, b.store, "w1"), l, "success", state.Event{}, nil), state.ErrGone)

	// Finished elsewhere (tombstone) is a lost lease, not lost data.
	l2 := admitOne(t, b.store, "w1", "job-2").Lease
	_, _, err = b.store.ForceRelease(ctx(t), "job-2", "")
	require.NoError(t, err)
	got, _, err := b.store.Claim(ctx(t), sess(t, b.store, "w2"), 1)
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(ctx(t), sess(t, b.store, "w2"), got[0].Lease, "success", state.Event{}, nil))
	err = b.store.Complete(ctx(t), sess(t, b.store, "w1"), l2, "success", state.Event{}, nil)
	require.ErrorIs(t, err, state.ErrStale)
	require.NotErrorIs(t, err, state.ErrGone)
}

// TestKeeperSaysWhenARenewalWasSlow: a renewal that took longer than the
// renewal interval is logged with how long it took.
func TestKeeperSaysWhenARenewalWasSlow(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	core, logs := observer.New(zap.InfoLevel)
	// An interval of a nanosecond: every round trip is longer.
	k := state.NewKeeper(b.store, nil, state.KeeperConfig{Worker: "w1", Interval: time.Nanosecond, Logger: zap.New(core)})
	require.NoError(t, k.Open(ctx(t)))
	require.NoError(t, k.RenewOnce(ctx(t)))
	slow := logs.FilterMessage("session renewal was slow").All()
	require.Len(t, slow, 1)
	require.Positive(t, slow[0].ContextMap()["took"])
}
