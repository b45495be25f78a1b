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
// operation of the ledger on a single node and on the cluster, side by side:
// the transcripts of what each operation answered must be identical.
func TestLedgerOnRedisClusterAsOnOneNode(t *testing.T) {
	t.Parallel()
	single, sns := testenv.RedisClient(t)
	cluster, cns := testenv.RedisClusterClient(t)

	var onOne, onCluster []string
	t.Run("both", func(t *testing.T) {
		t.Run("one node", func(t *testing.T) {
			t.Parallel()
			onOne = ledgerScenario(t, single, sns)
		})
		t.Run("cluster", func(t *testing.T) {
			t.Parallel()
			onCluster = ledgerScenario(t, cluster, cns)
			requireOneSlot(t, cluster, cns)
		})
	})
	require.NotEmpty(t, onOne)
	require.Equal(t, onOne, onCluster, "the cluster answers every operation as one node does")
}

// ledgerScenario runs a fleet's life through every ledger operation and
// returns a transcript of the answers (no times, no namespace, no session
// IDs: they are random), asserting the protocol's outcomes on the way.
func ledgerScenario(t *testing.T, rdb redis.UniversalClient, ns string) []string {
	t.Helper()
	c := ctx(t)
	var out []string
	note := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	s, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: 30 * time.Second})
	require.NoError(t, err)
	short, err := state.New(rdb, state.Config{Namespace: ns, LeaseTTL: 500 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, s.Load(c))
	pfx := "{" + ns + "}:"
	open := func(st *state.Store, worker string) state.Session {
		se, _, err := st.OpenSession(c, worker)
		require.NoError(t, err)
		require.Equal(t, worker, se.Worker)
		return se
	}

	epoch, age, err := s.EpochAge(c)
	require.NoError(t, err)
	require.NotEmpty(t, epoch)
	require.Less(t, age, 30*time.Second, "a new ledger's epoch is young")
	again, err := s.Epoch(c)
	require.NoError(t, err)
	require.Equal(t, epoch, again, "the epoch stays until Redis loses it")

	// w1's session, held by a Keeper that renews on a client of its own and
	// reads the mailbox on another (Dedicated clones the cluster client too).
	renewer, closeRenewer, err := s.Dedicated(1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = closeRenewer() })
	mailer, closeMailer, err := s.Dedicated(1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = closeMailer() })
	require.NotSame(t, s.Redis(), renewer.Redis(), "a client of its own")
	var lost, aborts []string
	k := state.NewKeeper(renewer, mailer, state.KeeperConfig{Worker: "w1", MailWait: time.Second,
		OnLost: func(id string, tok int64, why state.LossReason) {
			lost = append(lost, fmt.Sprintf("%s:%d:%s", id, tok, why))
		},
		OnAbort: func(id string) { aborts = append(aborts, id) }})
	k.SetEpoch(epoch)
	require.NoError(t, k.Open(c))
	w1 := k.Session()
	require.Equal(t, "w1", w1.Worker)

	// Admission: one batch, one round trip, idempotent by job ID.
	var reqs []state.AdmitRequest
	for _, id := range []string{"a", "b", "c", "d", "e", "a"} {
		reqs = append(reqs, state.AdmitRequest{ID: id, Msg: []byte(`{"jobID":"` + id + `"}`), Source: "OSL/0@" + id})
	}
	res, _, err := s.Admit(c, w1, reqs)
	require.NoError(t, err)
	lease := map[string]state.Lease{}
	for _, r := range res {
		note("admit %s: %s token=%d detail=%q", r.ID, r.Outcome, r.Lease.Token, r.Detail)
		if r.Outcome == state.Admitted {
			lease[r.ID] = r.Lease
			require.True(t, k.Add(w1, r.Lease))
		}
	}
	require.Len(t, lease, 5)
	require.Equal(t, state.Held, res[5].Outcome, "the same job twice in one batch is admitted once")

	// Checkpoints: the plan and a task, read back through the record codec.
	plan := []state.PlannedTask{{Kind: "cbc.event_export", Timeout: state.Duration(time.Hour)}}
	pk, pv := state.PlanField(plan)
	cp := &state.TaskCheckpoint{Kind: "cbc.event_export", TaskID: "7", Ref: []byte(`{"id":"4522"}`)}
	tk, tv := cp.Field()
	require.NoError(t, s.Checkpoint(c, w1, lease["a"], pk, pv, tk, tv))
	rec, err := s.Get(c, "a")
	require.NoError(t, err)
	got, ok, err := rec.Plan()
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, plan, got)
	task, err := rec.Task("cbc.event_export")
	require.NoError(t, err)
	note("record a: owner=%s w1's session=%v token=%d source=%s kinds=%v ref=%s", rec.Owner, rec.Session == w1.ID,
		rec.Token, rec.Source, rec.TaskKinds(), task.Ref)

	// Renewal: one tick of the Keeper, one script whatever the number of
	// jobs; the Store's answer directly.
	require.NoError(t, k.RenewOnce(c))
	require.Equal(t, w1.ID, k.Session().ID, "the same session")
	require.Equal(t, 5, k.Len(), "nothing lost")
	require.True(t, k.Valid("a", lease["a"].Token))
	rr, err := s.Renew(c, w1, k.Len())
	require.NoError(t, err)
	require.Equal(t, epoch, rr.Epoch)
	require.WithinDuration(t, time.Now(), rr.Now, 5*time.Second)
	note("renew w1: alive=%v epoch unchanged=%v", rr.Alive, rr.Epoch == epoch)

	// An operator's release reaches the holder through its mailbox at once.
	owner, ok, err := s.ForceRelease(c, "b", "")
	require.NoError(t, err)
	note("force release b: owner=%s ok=%v", owner, ok)
	owner, ok, err = s.ForceRelease(c, "nope", "")
	require.NoError(t, err)
	note("force release nope: owner=%q ok=%v", owner, ok)
	require.NoError(t, k.ReadMailOnce(c))
	note("keeper mail: lost=%v aborts=%v held=%d", lost, aborts, k.Len())
	require.Equal(t, []string{fmt.Sprintf("b:%d:%s", lease["b"].Token, state.LostStolen)}, lost)
	require.Equal(t, 4, k.Len())
	require.ErrorIs(t, s.Checkpoint(c, w1, lease["b"], "k", "v"), state.ErrStale)

	// Aborts: a held job's session is mailed, a job nobody holds carries
	// the mark; each once. Read with Store.ReadMail (BLPOP) this time.
	n, err := s.NotifyAborts(c, []string{"a", "a", "b", "unknown"}, "")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	mail, err := s.ReadMail(c, w1, time.Second, 10)
	require.NoError(t, err)
	require.Equal(t, []state.Mail{{JobID: "a", Abort: true, Header: "abort a"}}, mail)
	rec, err = s.Get(c, "b")
	require.NoError(t, err)
	note("notify aborts: marked=%d mail=%+v b marked=%s", n, mail, rec.Fields[state.FieldAbort])

	// Finished, and gone with Redis's data: the fenced writes tell which.
	decided, err := s.Decide(c, w1, lease["c"], state.Outcome{State: "success", By: "w1"}.Encode(), state.Event{})
	require.NoError(t, err)
	require.NoError(t, s.Complete(c, w1, lease["c"], "success", state.Event{Ev: "finished"}, []byte(`{"jobId":"c"}`)))
	note("decide+complete c: %s", decided)
	k.Remove("c", lease["c"].Token)
	err = s.Complete(c, w1, lease["c"], "success", state.Event{}, nil)
	require.ErrorIs(t, err, state.ErrStale)
	require.NotErrorIs(t, err, state.ErrGone, "a tombstone says finished, not lost data")
	require.NoError(t, rdb.Del(c, pfx+"job:d").Err())
	gone := s.Checkpoint(c, w1, lease["d"], "k", "v")
	require.ErrorIs(t, gone, state.ErrGone)
	note("complete c again: %v; checkpoint d: %v", err, gone)

	// Claims: the forced-away job is not the old owner's to take back.
	cl, _, err := s.Claim(c, w1, 10)
	require.NoError(t, err)
	require.Empty(t, cl, "released away from w1 by an operator")
	w2 := open(s, "w2")
	cl, _, err = s.Claim(c, w2, 10)
	require.NoError(t, err)
	require.Len(t, cl, 1)
	note("claim w2: %s token=%d msg=%s abort=%s", cl[0].Lease.ID, cl[0].Lease.Token, cl[0].Record.Msg, cl[0].Record.Fields[state.FieldAbort])
	n, err = s.Release(c, w1, []state.Lease{lease["b"]})
	require.NoError(t, err)
	require.Zero(t, n, "a stale token cannot release")
	n, err = s.Release(c, w2, []state.Lease{cl[0].Lease})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	w4 := open(s, "w4")
	cl, _, err = s.Claim(c, w4, 10)
	require.NoError(t, err)
	require.Len(t, cl, 1)
	note("claim w4 after release: %s token=%d", cl[0].Lease.ID, cl[0].Lease.Token)

	// A session that is not renewed dies with all its jobs (Redis time);
	// another worker's claim reaps it and takes them with their checkpoints.
	w3 := open(short, "w3")
	ar, _, err := short.Admit(c, w3, []state.AdmitRequest{{ID: "x", Msg: []byte(`{"jobID":"x"}`)}, {ID: "y", Msg: []byte(`{"jobID":"y"}`)}})
	require.NoError(t, err)
	x3, y3 := ar[0].Lease, ar[1].Lease
	require.NoError(t, short.Checkpoint(c, w3, x3, "task:cbc", `{"ref":{"id":"42"}}`))
	var reaped []state.Claimed
	require.Eventually(t, func() bool {
		got, _, err := s.Claim(c, w4, 10)
		require.NoError(t, err)
		reaped = append(reaped, got...)
		return len(reaped) == 2
	}, 10*time.Second, 20*time.Millisecond, "w3's session expires after its TTL")
	x4, y4 := reaped[0].Lease, reaped[1].Lease
	require.Equal(t, []string{"x", "y"}, []string{x4.ID, y4.ID}, "longest claimable first, then by ID")
	require.Equal(t, `{"ref":{"id":"42"}}`, reaped[0].Record.Fields["task:cbc"], "the takeover sees the checkpoint")
	require.Greater(t, x4.Token, y3.Token)
	require.Equal(t, w4.ID, reaped[1].Record.Session)
	note("w3's session died: x token %d -> %d, y token %d -> %d, owner %s", x3.Token, x4.Token, y3.Token, y4.Token, reaped[0].Record.Owner)
	rr, err = short.Renew(c, w3, 2)
	require.NoError(t, err)
	require.False(t, rr.Alive, "a dead session stays dead")
	require.ErrorIs(t, s.Checkpoint(c, w3, x3, "k", "v"), state.ErrStale)
	_, err = s.Decide(c, w3, x3, []byte(`{"state":"success"}`), state.Event{})
	require.ErrorIs(t, err, state.ErrStale)
	require.ErrorIs(t, s.Complete(c, w3, x3, "success", state.Event{}, nil), state.ErrStale)
	_, _, err = s.Admit(c, w3, []state.AdmitRequest{{ID: "z", Msg: []byte(`{}`)}})
	require.ErrorIs(t, err, state.ErrSessionGone)
	_, _, err = s.Claim(c, w3, 1)
	require.ErrorIs(t, err, state.ErrSessionGone)
	left, err := rdb.Exists(c, pfx+"sess:"+w3.ID, pfx+"owned:"+w3.ID, pfx+"mail:"+w3.ID).Result()
	require.NoError(t, err)
	require.Zero(t, left, "a reaped session is forgotten")
	note("dead session w3: renew alive=%v, admit %v, keys left %d", rr.Alive, state.ErrSessionGone, left)

	// Decide (first wins), the outbox, Complete, the tombstone.
	first, err := s.Decide(c, w4, x4, []byte(`{"state":"aborted"}`), state.Event{})
	require.NoError(t, err)
	second, err := s.Decide(c, w4, x4, []byte(`{"state":"success"}`), state.Event{})
	require.NoError(t, err)
	require.Equal(t, first, second, "exactly one terminal decision")
	depth, err := s.OutboxDepth(c)
	require.NoError(t, err)
	note("decide x: %s then %s, outbox %d", first, second, depth)
	require.NoError(t, s.Complete(c, w4, x4, "aborted", state.Event{}, nil))
	tomb, ok, err := s.Tombstone(c, "x")
	require.NoError(t, err)
	require.True(t, ok)
	w5 := open(s, "w5")
	ar, _, err = s.Admit(c, w5, []state.AdmitRequest{{ID: "x", Msg: []byte(`{}`)}, {ID: "y", Msg: []byte(`{}`)}})
	require.NoError(t, err)
	require.Equal(t, state.Finished, ar[0].Outcome, "the tombstone keeps redeliveries out")
	require.Equal(t, state.Running, ar[1].Outcome, "w4's live session holds y")
	note("complete x: tomb=%s readmit x=%s y=%s (%s)", tomb, ar[0].Outcome, ar[1].Outcome, ar[1].Detail)
	_, err = s.Decide(c, w1, lease["a"], state.Outcome{State: "success", By: "w1"}.Encode(), state.Event{})
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
	cl, _, err = s.Claim(c, w5, 10)
	require.NoError(t, err)
	require.Len(t, cl, 1, "the adopted job at once, the re-seeded one after its grace")
	note("claim w5 adopted: %s token=%d task=%s", cl[0].Lease.ID, cl[0].Lease.Token, cl[0].Record.Fields["task:cbc"])
	known, err := s.Known(c, []string{"a", "c", "lost", "reseeded", "never"})
	require.NoError(t, err)
	note("known: %v", known)
	require.Equal(t, map[string]bool{"a": true, "c": true, "lost": true, "reseeded": true, "never": false}, known)
	// An abort for w5's job waits in its mailbox (read by nobody here: the
	// slot check below finds the mailbox).
	n, err = s.NotifyAborts(c, []string{"lost"}, "")
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// A corrupt record is renamed aside, inside the namespace's slot.
	require.NoError(t, rdb.Set(c, pfx+"job:e", "junk", 0).Err())
	require.ErrorIs(t, s.Checkpoint(c, w1, lease["e"], "k", "v"), state.ErrGone)
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
	require.Len(t, listed, 5, "a, b, y, lost, reseeded: c and x completed, d lost, e quarantined")
	sum, err := s.LeaseSummary(c, time.Minute, 10)
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), sum.Now, 5*time.Second)
	var sessions, due []string
	for _, si := range sum.Sessions {
		sessions = append(sessions, fmt.Sprintf("%s:%d:%v", si.Worker, si.Jobs, si.Expired))
	}
	sort.Strings(sessions) // deadlines a millisecond apart or equal: their order is not the test's
	for _, d := range sum.Due {
		due = append(due, fmt.Sprintf("%s:%s:%v:%v", d.ID, d.Owner, d.Decided, d.Expired))
	}
	note("lease summary: sessions=%v held=%d claimable=%d expiring=%d due=%v", sessions, sum.Held, sum.Claimable, sum.Expiring, due)
	require.Equal(t, []string{"w1:3:false", "w2:0:false", "w4:2:false", "w5:1:false"}, sessions,
		"w1's set still names a and the lost d and e (only a dead session's set is read), w4 holds b and y, w5 lost; w3 reaped")
	require.EqualValues(t, 6, sum.Held)
	require.Equal(t, []string{"reseeded::false:false"}, due, "claimable after its grace")
	workers, err := s.Workers(c)
	require.NoError(t, err)
	var ws []string
	for _, w := range workers {
		ws = append(ws, fmt.Sprintf("%s inflight=%d", w.ID, w.InFlight))
	}
	note("workers: %v", ws)
	require.Len(t, ws, 5, "every worker that opened a session")

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
	cool, err := s.CoolDown(c, "sophos:c")
	require.NoError(t, err)
	require.Greater(t, cool, 50*time.Second)
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
	require.Equal(t, []string{"claimable", "cool", "epoch", "fence", "finished", "job", "leaselog", "lock", "mail", "outbox",
		"owned", "quarantine", "res", "rl", "sess", "sessions", "tl", "tomb", "worker", "workers"}, got,
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
		m, err := cc.MasterForKey(c, "{"+ns+"}:sessions")
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
		se, _, err := s.OpenSession(c, "w1")
		require.NoError(t, err)
		res, _, err := s.Admit(c, se, []state.AdmitRequest{{ID: "j", Msg: []byte(`{}`)}})
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
				require.Len(t, found, 8, "job, timeline, sessions, sess, owned, workers, fence, leaselog of %s on its master: %v", n, found)
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
	m, err := cc.MasterForKey(c, "{"+ns+"}:sessions")
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
