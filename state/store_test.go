package state_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
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

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func admitOne(t *testing.T, s *state.Store, worker, id string) state.AdmitResult {
	t.Helper()
	res, _, err := s.Admit(ctx(t), worker, []state.AdmitRequest{{ID: id, Msg: []byte(`{"jobID":"` + id + `"}`), Source: "test"}})
	require.NoError(t, err)
	require.Len(t, res, 1)
	return res[0]
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

	require.NoError(t, b.store.Complete(ctx(t), "w1", first.Lease, "success"))
	after := admitOne(t, b.store, "w2", "job-1")
	require.Equal(t, state.Finished, after.Outcome, "the tombstone keeps redeliveries out")
	require.Equal(t, "success", after.Detail)
}

func TestAdmitBatchInOneCall(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	reqs := []state.AdmitRequest{{ID: "a", Msg: []byte("1")}, {ID: "b", Msg: []byte("2")}, {ID: "a", Msg: []byte("1")}}
	res, _, err := b.store.Admit(ctx(t), "w1", reqs)
	require.NoError(t, err)
	require.Equal(t, []state.AdmitOutcome{state.Admitted, state.Admitted, state.Running},
		[]state.AdmitOutcome{res[0].Outcome, res[1].Outcome, res[2].Outcome},
		"the same job twice in one batch is admitted once")
}

func TestExpiredLeaseIsTakenOverWithHigherTokenAndCheckpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, 300*time.Millisecond)
	first := admitOne(t, b.store, "w1", "job-1")
	require.NoError(t, b.store.Checkpoint(ctx(t), "w1", first.Lease, "task:cbc", `{"ref":{"id":"42"}}`))

	require.Eventually(t, func() bool {
		got, _, err := b.store.Claim(ctx(t), "w2", 10)
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
	require.ErrorIs(t, b.store.Checkpoint(ctx(t), "w1", first.Lease, "x", "y"), state.ErrStale)
	_, err := b.store.Decide(ctx(t), "w1", first.Lease, []byte(`{"state":"success"}`))
	require.ErrorIs(t, err, state.ErrStale)
	require.ErrorIs(t, b.store.Complete(ctx(t), "w1", first.Lease, "success"), state.ErrStale)
	rec, err := b.store.Get(ctx(t), "job-1")
	require.NoError(t, err)
	require.NotContains(t, rec.Fields, "x")
}

func TestClaimTakesOnlyExpiredOldestFirstUpToMax(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	var leases []state.Lease
	for i := range 5 {
		leases = append(leases, admitOne(t, b.store, "w1", fmt.Sprintf("job-%d", i)).Lease)
	}
	got, _, err := b.store.Claim(ctx(t), "w2", 10)
	require.NoError(t, err)
	require.Empty(t, got, "live leases are not claimable")

	// Release in reverse order; all get deadline 0, then claim 2.
	n, err := b.store.Release(ctx(t), "w1", leases[3:])
	require.NoError(t, err)
	require.Equal(t, 2, n)
	got, _, err = b.store.Claim(ctx(t), "w2", 1)
	require.NoError(t, err)
	require.Len(t, got, 1)
	got2, _, err := b.store.Claim(ctx(t), "w2", 10)
	require.NoError(t, err)
	require.Len(t, got2, 1, "max bounds each claim; only released leases are claimable")
}

func TestReleaseRequiresOwnership(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	n, err := b.store.Release(ctx(t), "w2", []state.Lease{l})
	require.NoError(t, err)
	require.Zero(t, n)
	n, err = b.store.Release(ctx(t), "w1", []state.Lease{{ID: l.ID, Token: l.Token + 1}})
	require.NoError(t, err)
	require.Zero(t, n, "a stale token cannot release")
}

func TestDecideFirstWins(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	got, err := b.store.Decide(ctx(t), "w1", l, []byte(`{"state":"aborted"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"state":"aborted"}`, string(got))
	got, err = b.store.Decide(ctx(t), "w1", l, []byte(`{"state":"success"}`))
	require.NoError(t, err)
	require.JSONEq(t, `{"state":"aborted"}`, string(got), "exactly one terminal decision")
	depth, err := b.store.OutboxDepth(ctx(t))
	require.NoError(t, err)
	require.EqualValues(t, 1, depth)
	require.NoError(t, b.store.Complete(ctx(t), "w1", l, "aborted"))
	depth, err = b.store.OutboxDepth(ctx(t))
	require.NoError(t, err)
	require.Zero(t, depth)
}

func TestRenewReportsLossReasons(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	epoch, err := b.store.Epoch(ctx(t))
	require.NoError(t, err)
	kept := admitOne(t, b.store, "w1", "kept").Lease
	stolen := admitOne(t, b.store, "w1", "stolen").Lease
	finished := admitOne(t, b.store, "w1", "finished").Lease
	missing := admitOne(t, b.store, "w1", "missing").Lease

	_, ok, err := b.store.ForceRelease(ctx(t), "stolen")
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, b.store.Complete(ctx(t), "w1", finished, "success"))
	require.NoError(t, b.rdb.Del(ctx(t), "{"+b.ns+"}:job:missing").Err())

	res, err := b.store.Renew(ctx(t), "w1", []state.Lease{kept, stolen, finished, missing})
	require.NoError(t, err)
	require.ElementsMatch(t, []state.Lost{
		{ID: "stolen", Reason: state.LostStolen},
		{ID: "finished", Reason: state.LostFinished},
		{ID: "missing", Reason: state.LostMissing},
	}, res.Lost)
	require.Equal(t, epoch, res.Epoch)
}

// countingHook counts round trips (a pipeline is one).
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

func TestRenewalOfThousandLeasesIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	reqs := make([]state.AdmitRequest, 1000)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: fmt.Sprintf("job-%04d", i), Msg: []byte("{}")}
	}
	res, sent, err := b.store.Admit(ctx(t), "w1", reqs)
	require.NoError(t, err)
	k := state.NewKeeper(b.store, state.KeeperConfig{Worker: "w1"})
	for _, r := range res {
		require.Equal(t, state.Admitted, r.Outcome)
		k.Add(r.Lease, sent)
	}
	require.Equal(t, 1000, k.Len())

	hook := &countingHook{}
	b.rdb.AddHook(hook)
	require.NoError(t, k.RenewOnce(ctx(t)))
	require.EqualValues(t, 1, hook.n.Load(), "one renewal tick for 1,000 in-flight jobs is one Redis round trip")
	require.Equal(t, 1000, k.Len(), "nothing lost")
}

func TestKeeperLocalValidityRunsOutWithoutRedis(t *testing.T) {
	t.Parallel()
	b := setup(t, 500*time.Millisecond)
	l := admitOne(t, b.store, "w1", "job-1").Lease

	// A store whose Redis is unreachable.
	dead := redis.NewClient(&redis.Options{Network: "unix", Addr: t.TempDir() + "/none.sock", MaxRetries: -1,
		Dialer: func(context.Context, string, string) (net.Conn, error) { return nil, fmt.Errorf("refused") }})
	t.Cleanup(func() { dead.Close() })
	ds, err := state.New(dead, state.Config{Namespace: b.ns, LeaseTTL: 500 * time.Millisecond})
	require.NoError(t, err)

	var mu sync.Mutex
	var lost []state.LossReason
	k := state.NewKeeper(ds, state.KeeperConfig{Worker: "w1", OnLost: func(id string, _ int64, why state.LossReason) {
		mu.Lock()
		lost = append(lost, why)
		mu.Unlock()
	}})
	k.Add(l, time.Now())
	require.True(t, k.Valid(l.ID, l.Token))
	require.False(t, k.Valid(l.ID, l.Token+1), "another token is not valid")
	require.Eventually(t, func() bool { return !k.Valid(l.ID, l.Token) }, 5*time.Second, 10*time.Millisecond,
		"without renewals the local view expires after TTL-margin")
	require.Error(t, k.RenewOnce(ctx(t)))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []state.LossReason{state.LostExpired}, lost)
	require.Zero(t, k.Len())
}

func TestKeeperPausedWorkerIsInvalidBeforeRenewal(t *testing.T) {
	t.Parallel()
	b := setup(t, time.Second)
	l := admitOne(t, b.store, "w1", "job-1").Lease
	k := state.NewKeeper(b.store, state.KeeperConfig{Worker: "w1"})
	// As if the process had been stopped for two TTLs right after acquiring.
	k.Add(l, time.Now().Add(-2*time.Second))
	require.False(t, k.Valid(l.ID, l.Token), "a worker waking from a pause longer than the TTL makes no call")
}

func TestKeeperDetectsEpochChange(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	e, err := b.store.Epoch(ctx(t))
	require.NoError(t, err)
	changed := make(chan string, 1)
	k := state.NewKeeper(b.store, state.KeeperConfig{Worker: "w1", OnEpoch: func(_, n string) { changed <- n }})
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
	require.NoError(t, b.store.Complete(ctx(t), "w1", l, "success"))
	ok, err = b.store.Adopt(ctx(t), "known", state.FieldMsg, "x")
	require.NoError(t, err)
	require.False(t, ok, "a tombstoned job is not adopted")

	ok, err = b.store.Adopt(ctx(t), "lost", state.FieldMsg, `{"jobID":"lost"}`, "task:cbc", "cp")
	require.NoError(t, err)
	require.True(t, ok)
	got, _, err := b.store.Claim(ctx(t), "w2", 10)
	require.NoError(t, err)
	require.Len(t, got, 1, "an adopted job is claimable at once")
	require.Equal(t, "cp", got[0].Record.Fields["task:cbc"])
	require.Equal(t, `{"jobID":"lost"}`, string(got[0].Record.Msg))

	// Re-seeded with a grace: not claimable before it ends.
	ok, err = b.store.AdoptAfter(ctx(t), "reseeded", time.Hour, state.FieldMsg, `{"jobID":"reseeded"}`)
	require.NoError(t, err)
	require.True(t, ok)
	got, _, err = b.store.Claim(ctx(t), "w2", 10)
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
	var leases []state.Lease
	for i := range 200 {
		leases = append(leases, admitOne(t, b.store, "w0", fmt.Sprintf("job-%d", i)).Lease)
	}
	_, err := b.store.Release(ctx(t), "w0", leases)
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
				got, _, err := b.store.Claim(context.Background(), worker, 7)
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
	first := admitOne(t, b.store, "w1", "job-1").Lease
	_, err := b.store.Release(ctx(t), "w1", []state.Lease{first})
	require.NoError(t, err)
	got, _, err := b.store.Claim(ctx(t), "w2", 10)
	require.NoError(t, err)
	require.Len(t, got, 1)
	_, _, err = b.store.ForceRelease(ctx(t), "job-1")
	require.NoError(t, err)
	got, _, err = b.store.Claim(ctx(t), "w3", 10)
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(ctx(t), "w3", got[0].Lease, "success"))

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
	err := b.store.Checkpoint(ctx(t), "w1", l, "x", "y")
	require.ErrorIs(t, err, state.ErrGone)
	require.ErrorIs(t, err, state.ErrStale, "gone is also not owned")
	_, err = b.store.Decide(ctx(t), "w1", l, []byte(`{}`))
	require.ErrorIs(t, err, state.ErrGone)
	require.ErrorIs(t, b.store.Complete(ctx(t), "w1", l, "success"), state.ErrGone)

	// Finished elsewhere (tombstone) is a lost lease, not lost data.
	l2 := admitOne(t, b.store, "w1", "job-2").Lease
	_, _, err = b.store.ForceRelease(ctx(t), "job-2")
	require.NoError(t, err)
	got, _, err := b.store.Claim(ctx(t), "w2", 1)
	require.NoError(t, err)
	require.NoError(t, b.store.Complete(ctx(t), "w2", got[0].Lease, "success"))
	err = b.store.Complete(ctx(t), "w1", l2, "success")
	require.ErrorIs(t, err, state.ErrStale)
	require.NotErrorIs(t, err, state.ErrGone)
}
