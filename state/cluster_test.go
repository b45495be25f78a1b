package state_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

// The ledger on Redis Cluster: every key of a fleet carries the hash tag
// {namespace}, so all of them live in one slot, on one master, and every
// script runs there. These tests run the whole ledger against a local
// three-master cluster (testenv.RedisClusterClient) and compare it with a
// single redis-server.

// TestLedgerOnRedisClusterAsOnOneNode runs one scenario through every
// operation of the ledger on a single node and on the cluster: the
// transcripts of what each operation answered must be identical.
func TestLedgerOnRedisClusterAsOnOneNode(t *testing.T) {
	t.Parallel()
	single, sns := testenv.RedisClient(t)
	cluster, cns := testenv.RedisClusterClient(t)

	onOne := ledgerScenario(t, single, sns)
	onCluster := ledgerScenario(t, cluster, cns)
	require.Equal(t, onOne, onCluster, "the cluster answers every operation as one node does")

	requireOneSlot(t, cluster, cns)
}

// ledgerScenario runs a fleet's life through every ledger operation and
// returns a transcript of the answers (no times, no namespace), asserting
// the protocol's outcomes on the way.
func ledgerScenario(t *testing.T, rdb redis.UniversalClient, ns string) []string {
	t.Helper()
	c := ctx(t)
	var out []string
	note := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	s, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: 30 * time.Second})
	require.NoError(t, err)
	short, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: 300 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, s.Load(c))
	pfx := "{" + ns + "}:"

	epoch, age, err := s.EpochAge(c)
	require.NoError(t, err)
	require.NotEmpty(t, epoch)
	require.Less(t, age, 30*time.Second, "a new ledger's epoch is young")
	again, err := s.Epoch(c)
	require.NoError(t, err)
	require.Equal(t, epoch, again, "the epoch stays until Redis loses it")

	// Admission: one batch, one round trip, idempotent by job ID.
	var reqs []state.AdmitRequest
	for _, id := range []string{"a", "b", "c", "d", "e", "a"} {
		reqs = append(reqs, state.AdmitRequest{ID: id, Msg: []byte(`{"jobID":"` + id + `"}`), Source: "OSL/0@" + id})
	}
	res, sent, err := s.Admit(c, "w1", reqs)
	require.NoError(t, err)
	lease := map[string]state.Lease{}
	for _, r := range res {
		note("admit %s: %s token=%d detail=%q", r.ID, r.Outcome, r.Lease.Token, r.Detail)
		if r.Outcome == state.Admitted {
			lease[r.ID] = r.Lease
		}
	}
	require.Len(t, lease, 5)
	require.Equal(t, state.Running, res[5].Outcome, "the same job twice in one batch is admitted once")

	// Checkpoints: the plan and a task, read back through the record codec.
	plan := []state.PlannedTask{{Kind: "cbc.event_export", Timeout: state.Duration(time.Hour)}}
	pk, pv := state.PlanField(plan)
	cp := &state.TaskCheckpoint{Kind: "cbc.event_export", TaskID: "7", Ref: []byte(`{"id":"4522"}`)}
	tk, tv := cp.Field()
	require.NoError(t, s.Checkpoint(c, "w1", lease["a"], pk, pv, tk, tv))
	rec, err := s.Get(c, "a")
	require.NoError(t, err)
	got, ok, err := rec.Plan()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, plan, got)
	task, err := rec.Task("cbc.event_export")
	require.NoError(t, err)
	note("record a: owner=%s token=%d source=%s kinds=%v ref=%s", rec.Owner, rec.Token, rec.Source, rec.TaskKinds(), task.Ref)

	// One renewal tick through the Keeper.
	k := state.NewKeeper(s, state.KeeperConfig{Worker: "w1"})
	for _, l := range lease {
		k.Add(l, sent)
	}
	require.NoError(t, k.RenewOnce(c))
	require.Equal(t, 5, k.Len(), "nothing lost")
	require.True(t, k.Valid("a", lease["a"].Token))

	// Losing leases: forced away, finished, gone with Redis's data.
	owner, ok, err := s.ForceRelease(c, "b")
	require.NoError(t, err)
	note("force release b: owner=%s ok=%v", owner, ok)
	owner, ok, err = s.ForceRelease(c, "nope")
	require.NoError(t, err)
	note("force release nope: owner=%q ok=%v", owner, ok)
	decided, err := s.Decide(c, "w1", lease["c"], state.Outcome{State: "success", By: "w1"}.Encode())
	require.NoError(t, err)
	require.NoError(t, s.Complete(c, "w1", lease["c"], "success"))
	note("decide+complete c: %s", decided)
	require.NoError(t, rdb.Del(c, pfx+"job:d").Err())
	held := []state.Lease{lease["a"], lease["b"], lease["c"], lease["d"], lease["e"]}
	rr, err := s.Renew(c, "w1", held)
	require.NoError(t, err)
	require.Equal(t, epoch, rr.Epoch)
	sort.Slice(rr.Lost, func(i, j int) bool { return rr.Lost[i].ID < rr.Lost[j].ID })
	note("renew lost: %v", rr.Lost)
	require.Equal(t, []state.Lost{{ID: "b", Reason: state.LostStolen}, {ID: "c", Reason: state.LostFinished},
		{ID: "d", Reason: state.LostMissing}}, rr.Lost)

	// Claims: the forced-away job is not the old owner's to take back.
	cl, _, err := s.Claim(c, "w1", 10)
	require.NoError(t, err)
	require.Empty(t, cl, "released away from w1 by an operator")
	cl, _, err = s.Claim(c, "w2", 10)
	require.NoError(t, err)
	require.Len(t, cl, 1)
	note("claim w2: %s token=%d msg=%s", cl[0].Lease.ID, cl[0].Lease.Token, cl[0].Record.Msg)
	n, err := s.Release(c, "w1", []state.Lease{lease["b"]})
	require.NoError(t, err)
	require.Zero(t, n, "a stale token cannot release")
	n, err = s.Release(c, "w2", []state.Lease{cl[0].Lease})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	cl, _, err = s.Claim(c, "w4", 10)
	require.NoError(t, err)
	require.Len(t, cl, 1)
	note("claim w4 after release: %s token=%d", cl[0].Lease.ID, cl[0].Lease.Token)

	// A lease that expires (Redis time) is claimed with its checkpoints.
	ar, _, err := short.Admit(c, "w3", []state.AdmitRequest{{ID: "x", Msg: []byte(`{"jobID":"x"}`)}})
	require.NoError(t, err)
	x3 := ar[0].Lease
	require.NoError(t, short.Checkpoint(c, "w3", x3, "task:cbc", `{"ref":{"id":"42"}}`))
	var x4 state.Lease
	require.Eventually(t, func() bool {
		got, _, err := short.Claim(c, "w4", 10)
		require.NoError(t, err)
		if len(got) == 0 {
			return false
		}
		require.Len(t, got, 1)
		require.Equal(t, `{"ref":{"id":"42"}}`, got[0].Record.Fields["task:cbc"], "the takeover sees the checkpoint")
		x4 = got[0].Lease
		return true
	}, 10*time.Second, 20*time.Millisecond, "the lease expires after its TTL")
	require.Greater(t, x4.Token, x3.Token)
	note("expired x: token %d -> %d", x3.Token, x4.Token)
	require.ErrorIs(t, s.Checkpoint(c, "w3", x3, "k", "v"), state.ErrStale)
	_, err = s.Decide(c, "w3", x3, []byte(`{"state":"success"}`))
	require.ErrorIs(t, err, state.ErrStale)
	require.ErrorIs(t, s.Complete(c, "w3", x3, "success"), state.ErrStale)

	// Decide (first wins), the outbox, Complete, the tombstone.
	first, err := s.Decide(c, "w4", x4, []byte(`{"state":"aborted"}`))
	require.NoError(t, err)
	second, err := s.Decide(c, "w4", x4, []byte(`{"state":"success"}`))
	require.NoError(t, err)
	require.Equal(t, first, second, "exactly one terminal decision")
	depth, err := s.OutboxDepth(c)
	require.NoError(t, err)
	note("decide x: %s then %s, outbox %d", first, second, depth)
	require.NoError(t, s.Complete(c, "w4", x4, "aborted"))
	tomb, ok, err := s.Tombstone(c, "x")
	require.NoError(t, err)
	require.True(t, ok)
	ar, _, err = s.Admit(c, "w5", []state.AdmitRequest{{ID: "x", Msg: []byte(`{}`)}})
	require.NoError(t, err)
	require.Equal(t, state.Finished, ar[0].Outcome, "the tombstone keeps redeliveries out")
	note("complete x: tomb=%s readmit=%s", tomb, ar[0].Outcome)
	_, err = s.Decide(c, "w1", lease["a"], state.Outcome{State: "success", By: "w1"}.Encode())
	require.NoError(t, err) // a stays decided, in the outbox

	// Adoption of unknown jobs; Known.
	for _, id := range []string{"a", "c"} {
		ok, err := s.Adopt(c, id, state.FieldMsg, "x")
		require.NoError(t, err)
		require.False(t, ok, "%s is known", id)
	}
	ok, err = s.Adopt(c, "lost", state.FieldMsg, `{"jobID":"lost"}`, "task:cbc", "cp")
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = s.AdoptAfter(c, "reseeded", time.Hour, state.FieldMsg, `{"jobID":"reseeded"}`)
	require.NoError(t, err)
	require.True(t, ok)
	cl, _, err = s.Claim(c, "w5", 10)
	require.NoError(t, err)
	require.Len(t, cl, 1, "the adopted job at once, the re-seeded one after its grace")
	note("claim w5 adopted: %s token=%d task=%s", cl[0].Lease.ID, cl[0].Lease.Token, cl[0].Record.Fields["task:cbc"])
	known, err := s.Known(c, []string{"a", "c", "lost", "reseeded", "never"})
	require.NoError(t, err)
	note("known: %v", known)
	require.Equal(t, map[string]bool{"a": true, "c": true, "lost": true, "reseeded": true, "never": false}, known)

	// A corrupt record is renamed aside, inside the namespace's slot.
	require.NoError(t, rdb.Set(c, pfx+"job:e", "junk", 0).Err())
	require.ErrorIs(t, s.Checkpoint(c, "w1", lease["e"], "k", "v"), state.ErrGone)
	q, err := s.Quarantined(c, 0)
	require.NoError(t, err)
	require.Len(t, q, 1)
	require.True(t, strings.HasPrefix(q[0].Key, pfx+"quarantine:"), q[0].Key)
	require.True(t, strings.HasSuffix(q[0].Key, ":job:e"), q[0].Key)
	note("quarantined: %d", len(q))

	// Operators' views: ListJobs (SCAN), LeaseSummary, Workers.
	var listed []string
	require.NoError(t, s.ListJobs(c, 2, func(e state.JobEntry) error {
		listed = append(listed, fmt.Sprintf("%s owner=%q token=%d lease=%v", e.Record.ID, e.Record.Owner, e.Record.Token, e.HasLease))
		return nil
	}))
	sort.Strings(listed)
	note("list: %v", listed)
	require.Len(t, listed, 4, "a, b, lost, reseeded: c and x completed, d lost, e quarantined")
	sum, err := s.LeaseSummary(c, time.Minute, 10)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), sum.Now, 5*time.Second)
	var due []string
	for _, d := range sum.Due {
		due = append(due, fmt.Sprintf("%s:%s:%v", d.ID, d.Owner, d.Decided))
	}
	sort.Strings(due)
	note("lease summary: total=%d expired=%d expiring=%d due=%v", sum.Total, sum.Expired, sum.Expiring, due)
	require.EqualValues(t, 5, sum.Total, "a, b, lost, reseeded, and d's entry until a claim finds it expired")
	workers, err := s.Workers(c)
	require.NoError(t, err)
	require.Len(t, workers, 1)
	note("workers: %s inflight=%d", workers[0].ID, workers[0].InFlight)

	// Fleet-wide locks.
	for _, step := range []struct {
		holder string
		lock   bool
	}{{"h1", true}, {"h2", true}, {"h2", false}, {"h2", true}, {"h1", false}, {"h2", true}} {
		if step.lock {
			ok, err := s.TryLock(c, "reconciler", step.holder, time.Minute)
			require.NoError(t, err)
			note("lock %s: %v", step.holder, ok)
		} else {
			require.NoError(t, s.Unlock(c, "reconciler", step.holder))
		}
	}

	// The lease history, whole and for one job.
	evs, next, err := s.LeaseHistory(c, "", 1000)
	require.NoError(t, err)
	var seq []string
	for _, e := range evs {
		seq = append(seq, fmt.Sprintf("%s:%s:%s:%d", e.Event, e.JobID, e.Worker, e.Token))
	}
	note("history: %v", seq)
	more, _, err := s.LeaseHistory(c, next, 10)
	require.NoError(t, err)
	require.Empty(t, more)
	bh, err := s.JobLeaseHistory(c, "b")
	require.NoError(t, err)
	require.Len(t, bh, 5, "admitted, forced, claimed, released, claimed")

	// Rate limits last, and slow: their keys expire an interval or so after
	// use, and the slot check that follows must still find them.
	rl := s.RateLimiter("sophos:c", 0.1, 2, nil)
	require.NoError(t, rl.Wait(c))
	require.NoError(t, rl.Wait(c), "a burst of two")
	note("rate limit third wait: %v", waitBriefly(t, rl))
	base := s.RateLimiter("cbc:p", 0.1, 1, nil)
	require.NoError(t, base.ForTenant("acme").Wait(c))
	note("tenant globex after acme spent the credential: %v", waitBriefly(t, base.ForTenant("globex")))
	rl.Throttled(c, time.Minute)
	left, err := s.CoolDown(c, "sophos:c")
	require.NoError(t, err)
	require.Greater(t, left, 50*time.Second)
	cools, err := s.CoolDowns(c)
	require.NoError(t, err)
	require.Len(t, cools, 1)
	note("cool-downs: %s", cools[0].Name)
	return out
}

// waitBriefly waits on l for at most 100ms and returns what Wait answered.
func waitBriefly(t *testing.T, l *state.RateLimiter) error {
	c, cancel := context.WithTimeout(ctx(t), 100*time.Millisecond)
	defer cancel()
	err := l.Wait(c)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the fleet's budget is spent")
	return err
}

// requireOneSlot proves the hash-tag promise on the cluster: every key the
// ledger wrote for namespace ns is in the slot of {ns}, on that slot's
// master, and no other master holds any key of ns.
func requireOneSlot(t *testing.T, cc *redis.ClusterClient, ns string) {
	t.Helper()
	c := ctx(t)
	pfx := "{" + ns + "}:"
	slot, err := cc.ClusterKeySlot(c, pfx).Result()
	require.NoError(t, err)
	owner, err := cc.MasterForKey(c, pfx)
	require.NoError(t, err)

	var keys []string
	var mu sync.Mutex
	require.NoError(t, cc.ForEachMaster(c, func(c context.Context, m *redis.Client) error {
		found, err := scanAll(c, m, "*"+ns+"*")
		mu.Lock()
		defer mu.Unlock()
		if m.Options().Addr != owner.Options().Addr {
			require.Empty(t, found, "master %s holds keys of the namespace", m.Options().Addr)
			return err
		}
		keys = found
		return err
	}))

	kinds := map[string]int{}
	for _, k := range keys {
		ks, err := owner.ClusterKeySlot(c, k).Result()
		require.NoError(t, err)
		require.Equal(t, slot, ks, "key %s", k)
		kind, _, _ := strings.Cut(strings.TrimPrefix(k, pfx), ":")
		kinds[kind]++
	}
	var got []string
	for k := range kinds {
		got = append(got, k)
	}
	sort.Strings(got)
	require.Equal(t, []string{"cool", "epoch", "fence", "job", "leaselog", "leases", "lock", "outbox",
		"quarantine", "rl", "tomb", "worker", "workers"}, got,
		"every kind of key the fleet writes, all in slot %d (%d keys)", slot, len(keys))
}

func scanAll(c context.Context, m *redis.Client, match string) ([]string, error) {
	seen := map[string]bool{}
	it := m.Scan(c, 0, match, 500).Iterator()
	for it.Next(c) {
		seen[it.Val()] = true
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, it.Err()
}

// TestNamespacesSpreadOverMasters: one fleet is one slot on one master;
// another namespace may live on another master, each fleet's keys whole on
// its own master, and both ledgers work side by side.
func TestNamespacesSpreadOverMasters(t *testing.T) {
	t.Parallel()
	cc, ns := testenv.RedisClusterClient(t)
	c := ctx(t)
	masterOf := func(ns string) string {
		m, err := cc.MasterForKey(c, "{"+ns+"}:leases")
		require.NoError(t, err)
		return m.Options().Addr
	}
	other := testenv.Namespace(t)
	for i := 0; masterOf(other) == masterOf(ns); i++ {
		require.Less(t, i, 100, "no namespace on another master in 100 tries")
		other = testenv.Namespace(t)
	}
	for _, n := range []string{ns, other} {
		s, err := state.New(cc, state.Config{Namespace: n})
		require.NoError(t, err)
		require.NoError(t, s.Load(c))
		res, _, err := s.Admit(c, "w1", []state.AdmitRequest{{ID: "j", Msg: []byte(`{}`)}})
		require.NoError(t, err)
		require.Equal(t, state.Admitted, res[0].Outcome)
		require.EqualValues(t, 1, res[0].Lease.Token, "each fleet has its own fencing counter")
		var ids []string
		require.NoError(t, s.ListJobs(c, 0, func(e state.JobEntry) error { ids = append(ids, e.Record.ID); return nil }))
		require.Equal(t, []string{"j"}, ids)
	}
	for _, n := range []string{ns, other} {
		require.NoError(t, cc.ForEachMaster(c, func(c context.Context, m *redis.Client) error {
			found, err := scanAll(c, m, "{"+n+"}:*")
			if m.Options().Addr == masterOf(n) {
				require.Len(t, found, 4, "job, leases, fence, leaselog of %s on its master: %v", n, found)
			} else {
				require.Empty(t, found)
			}
			return err
		}))
	}
	require.NotEqual(t, masterOf(ns), masterOf(other))
}

// TestNowIsTheClockOfTheNamespacesMaster: leases are judged by the clock of
// the master that runs the scripts (the one owning the namespace's slot),
// so Now, which operators' views compare deadlines against, must ask that
// master, not whichever master a keyless command happens to reach.
func TestNowIsTheClockOfTheNamespacesMaster(t *testing.T) {
	t.Parallel()
	cc := testenv.RedisCluster(t).Client()
	t.Cleanup(func() { cc.Close() })
	var mu sync.Mutex
	asked := map[string]int{}
	cc.OnNewNode(func(n *redis.Client) {
		addr := n.Options().Addr
		n.AddHook(timeHook{func() { mu.Lock(); asked[addr]++; mu.Unlock() }})
	})
	ns := testenv.Namespace(t)
	s, err := state.New(cc, state.Config{Namespace: ns})
	require.NoError(t, err)
	c := ctx(t)
	for range 12 {
		now, err := s.Now(c)
		require.NoError(t, err)
		require.WithinDuration(t, time.Now(), now, 5*time.Second)
	}
	m, err := cc.MasterForKey(c, "{"+ns+"}:leases")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{m.Options().Addr: 12}, asked)
}

// timeHook calls fn for every TIME command a node client sends.
type timeHook struct{ fn func() }

func (h timeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h timeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if strings.EqualFold(cmd.Name(), "time") {
			h.fn()
		}
		return next(ctx, cmd)
	}
}
func (h timeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
