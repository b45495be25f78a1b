package state_test

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

// The figures of SIZING.md: what one job costs the one slot its fleet lives
// in, counted by Redis itself (INFO commandstats counts the commands a
// script runs, and EVALSHA once per round trip) and weighed by it (MEMORY
// USAGE, used_memory), on a private redis-server so nothing else runs
// there. `go test -run Sizing -v ./state/` prints them.

// sizingMsg is a job-creation record as SampleDB posts it (job/bench_test.go).
const sizingMsg = `{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"id":"abcdef01-abcd-abcd-abcd-abcdef012345","customer":"customerid","sample":{"id":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"},"createdByUser":{"id":0,"shortName":"sn","name":"name","customer":null,"domain":null},"createdTimestamp":123,"name":"fielname.exe","timestamp":124,"mimeType":"application/octet-stream","metaData":{"key":"value","sensorIds":[1,2]},"tlp":"white","acl":[],"userAgent":{"name":"python-requests","version":"3"}},"classification":{"sample":"8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9","classificationID":"12345678-1234-1234-1234-123456789012","createdTimestamp":123,"version":"1","type":"PE","superType":"executable","arch":"x86","platform":"win","meta":{}}}`

// sizingKinds is the default playbook for a Windows sample with sensors:
// every task runs.
var sizingKinds = []string{edr.KindCBCEventExport, edr.KindSophosXDR, edr.KindCytomicOSQuery, edr.KindCBLRTriage}

// sizingProgress is how many polls per task report new progress (each a
// progress line, state/lines.go: not a checkpoint).
const sizingProgress = 2

type sizing struct {
	t   *testing.T
	rdb *redis.Client
	s   *state.Store
}

func newSizing(t *testing.T) *sizing {
	srv, err := testenv.StartRedis()
	require.NoError(t, err)
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: srv.Socket})
	t.Cleanup(func() { rdb.Close() })
	s, err := state.New(rdb, state.Config{}) // the defaults: namespace, 30s leases, 7-day tombstones
	require.NoError(t, err)
	require.NoError(t, s.Load(ctx(t)))
	return &sizing{t: t, rdb: rdb, s: s}
}

func (z *sizing) open(worker string) state.Session {
	se, _, err := z.s.OpenSession(ctx(z.t), worker)
	require.NoError(z.t, err)
	return se
}

// cmdCount is one phase's INFO commandstats: the scripts called (EVALSHA,
// one round trip each), the commands they ran together with any command
// sent directly (BLPOP), and the server time the scripts took.
type cmdCount struct {
	evalsha int
	inner   map[string]int
	usec    int // server time of the EVALSHAs, scripts included
}

func (c cmdCount) total() int {
	n := 0
	for _, v := range c.inner {
		n += v
	}
	return n
}

func (c cmdCount) String() string {
	names := make([]string, 0, len(c.inner))
	for k := range c.inner {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, c.inner[k])
	}
	return fmt.Sprintf("EVALSHA %d, commands %d (%s), %d µs in scripts", c.evalsha, c.total(), strings.Join(parts, " "), c.usec)
}

// measure runs fn with the server's command statistics reset before.
func (z *sizing) measure(fn func()) cmdCount {
	c := ctx(z.t)
	require.NoError(z.t, z.rdb.ConfigResetStat(c).Err())
	fn()
	info, err := z.rdb.Info(c, "commandstats").Result()
	require.NoError(z.t, err)
	out := cmdCount{inner: map[string]int{}}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		f := map[string]int{}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f[k], _ = strconv.Atoi(v)
		}
		switch name {
		case "config|resetstat", "info": // this measurement's own
		case "evalsha", "eval":
			out.evalsha += f["calls"]
			out.usec += f["usec"]
		default:
			out.inner[name] += f["calls"]
		}
	}
	return out
}

func (z *sizing) usedMemory() int64 {
	info, err := z.rdb.Info(ctx(z.t), "memory").Result()
	require.NoError(z.t, err)
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(z.t, err)
			return n
		}
	}
	z.t.Fatal("no used_memory in INFO memory")
	return 0
}

func (z *sizing) memoryUsage(key string) int64 {
	n, err := z.rdb.MemoryUsage(ctx(z.t), key, 0).Result() // SAMPLES 0: every element
	require.NoError(z.t, err)
	return n
}

func sizingID(i int) string { return fmt.Sprintf("%08x-1234-1234-1234-123456789abc", i) }

func (z *sizing) admit(se state.Session, from, n int) []state.Lease {
	reqs := make([]state.AdmitRequest, n)
	for i := range reqs {
		reqs[i] = state.AdmitRequest{ID: sizingID(from + i), Msg: []byte(sizingMsg), Source: "Sample.Analysis.Job.OSL/3@" + strconv.Itoa(123456+from+i)}
	}
	res, _, err := z.s.Admit(ctx(z.t), se, reqs)
	require.NoError(z.t, err)
	out := make([]state.Lease, n)
	for i, r := range res {
		require.Equal(z.t, state.Admitted, r.Outcome)
		out[i] = r.Lease
	}
	return out
}

// sizingTask returns the checkpoints a task writes in its life, in order:
// the SampleDB task ID, the start intent, the vendor reference, the end
// (with its result), SampleDB's acknowledgement. Its progress lines go to
// the session's lines hash (sizingLines).
func sizingTask(id string, kind string, result *edr.Result) []*state.TaskCheckpoint {
	cp := state.TaskCheckpoint{Kind: kind}
	var out []*state.TaskCheckpoint
	step := func(f func(*state.TaskCheckpoint)) {
		f(&cp)
		c := cp
		out = append(out, &c)
	}
	step(func(c *state.TaskCheckpoint) { c.TaskID = "5f0c6a3e-8d1b-4c52-9f43-2a7b9e1d0c88" })
	step(func(c *state.TaskCheckpoint) {
		c.Attempts = 1
		c.Intent = &edr.Intent{Key: id + "/" + kind + "/17.1", At: 1795437046000}
	})
	step(func(c *state.TaskCheckpoint) {
		c.Ref, c.Started = []byte(`{"id":"4522b6f0-1c2d-4e5f-8a9b-0c1d2e3f4a5b","org":"7DESJ9GN"}`), 1795437046500
	})
	step(func(c *state.TaskCheckpoint) { c.State, c.Ended, c.Result = "success", 1795440646000, result })
	step(func(c *state.TaskCheckpoint) { c.Reported = true })
	return out
}

var sizingResult = &edr.Result{Rows: 18234, Hosts: []string{"WS-0042", "WS-0043", "SRV-FILE01"}, HostsTotal: 3,
	Notes: []string{"1 of 3 machines answered after the first poll"}}

// sizingBigResult is a result with every list at its cap (edr.MaxListed).
func sizingBigResult() *edr.Result {
	r := &edr.Result{Rows: 1 << 30, HostsTotal: 5000}
	for i := range edr.MaxListed {
		host := fmt.Sprintf("WORKSTATION-%04d.corp.example.com", i)
		r.Hosts = append(r.Hosts, host)
		r.Files = append(r.Files, edr.File{Host: host, Path: `C:\Users\someone\AppData\Local\Temp\fielname.exe`, Size: 123456,
			SHA256: "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9", Matches: true})
	}
	return r
}

func must2(name, value string) []string { return []string{name, value} }

// sizingPlan is the plan checkpoint of a job running every sizingKinds task.
func sizingPlan() []string {
	plan := make([]state.PlannedTask, len(sizingKinds))
	for i, k := range sizingKinds {
		plan[i] = state.PlannedTask{Kind: k, Timeout: state.Duration(2 * time.Hour)}
	}
	return must2(state.PlanField(plan))
}

// finished returns the plan and every task's last checkpoint: a record's
// fields once all its tasks ended.
func finished(id string, result *edr.Result) []string {
	kv := sizingPlan()
	for _, k := range sizingKinds {
		cps := sizingTask(id, k, result)
		kv = append(kv, must2(cps[len(cps)-1].Field())...)
	}
	return kv
}

// TestSizingOneJobOnOneSlot measures the commands and bytes one job costs
// its fleet's slot, and holds them to budgets so that a change that makes a
// job much dearer fails here (and SIZING.md is measured again). It proves
// that a session's renewal costs the same whatever the number of jobs.
func TestSizingOneJobOnOneSlot(t *testing.T) {
	t.Parallel()
	z := newSizing(t)
	c := ctx(t)
	pfx := "{" + state.DefaultNamespace + "}:"
	w1 := z.open("w1")

	// Admission: one round trip per batch, commands per job.
	var batch []state.Lease
	adm := z.measure(func() { batch = z.admit(w1, 0, 100) })
	require.Equal(t, 1, adm.evalsha, "a batch is one round trip")
	t.Logf("admit, batch of 100: %s", adm)

	// One job's life after admission, step by step: the plan, every task's
	// checkpoints, the decision, the completion. Each is one round trip.
	l := batch[0]
	plan := z.measure(func() { require.NoError(t, z.s.Checkpoint(c, w1, l, sizingPlan()...)) })
	require.Equal(t, 1, plan.evalsha)
	checkpoints := 0
	tasks := z.measure(func() {
		for _, k := range sizingKinds {
			for _, cp := range sizingTask(l.ID, k, sizingResult) {
				require.NoError(t, z.s.Checkpoint(c, w1, l, must2(cp.Field())...))
				checkpoints++
			}
		}
	})
	require.Equal(t, len(sizingKinds)*5, checkpoints)
	require.Equal(t, checkpoints, tasks.evalsha, "every checkpoint is one round trip")
	require.Equal(t, checkpoints*plan.total(), tasks.total(), "every checkpoint runs the same commands")
	decide := z.measure(func() {
		_, err := z.s.Decide(c, w1, l, state.Outcome{State: "success", By: "w1", At: 1795440650000}.Encode(), state.Event{})
		require.NoError(t, err)
	})
	complete := z.measure(func() { require.NoError(t, z.s.Complete(c, w1, l, "success", state.Event{}, nil)) })
	require.Equal(t, 1, decide.evalsha)
	require.Equal(t, 1, complete.evalsha)
	t.Logf("checkpoint: %s", plan)
	t.Logf("decide: %s", decide)
	t.Logf("complete: %s", complete)
	// Progress lines: a worker writes the lines of a second in one HSET
	// (and renews the hash's expiry), the same two commands for one line
	// as for the 100 a second it writes at most (runner.progressLines).
	writeLines := func(n int) cmdCount {
		kv := make([]string, 0, 2*n)
		for i := range n {
			l := state.ProgressLine{Progress: fmt.Sprintf("running: %d of 3 hosts answered", i%3+1), Polls: 7, NextPoll: 1795437100000}
			kv = append(kv, state.LineField(fmt.Sprintf("%08d-1234-1234-1234-123456789abc", i), sizingKinds[i%len(sizingKinds)]), l.Encode())
		}
		return z.measure(func() { require.NoError(t, z.s.WriteLines(c, w1, kv, nil)) })
	}
	writeLines(1) // a pipeline may take a new connection: its HELLO is not the lines'
	line, hundred := writeLines(1), writeLines(100)
	require.Equal(t, 2, line.total(), "HSET, PEXPIRE")
	require.Equal(t, line.total(), hundred.total(), "a hundred lines cost the commands of one")
	t.Logf("progress lines, one write of 1 line: %s; of 100 lines: %s", line, hundred)
	t.Logf("life of one job (%d tasks): %d round trips, %d commands, %d µs; and %d progress lines per task, each a share of a lines write",
		len(sizingKinds), 1+checkpoints+2, plan.total()+tasks.total()+decide.total()+complete.total(),
		plan.usec+tasks.usec+decide.usec+complete.usec, sizingProgress)
	perJob := adm.total()/100 + plan.total() + tasks.total() + decide.total() + complete.total()
	require.LessOrEqual(t, perJob, 220, "commands per job lifetime, without vendor budget")
	t.Logf("commands per job lifetime (admission's per-batch commands shared by 100): %d", perJob)

	// Renewal: one script per session and tick, the same commands whatever
	// the number of jobs the session holds: none, 1,000 or 10,000.
	// Each is measured five times and the fastest kept: the first script
	// after a big admission also pays for Lua's garbage collection of it.
	renew := func(se state.Session, n int) cmdCount {
		var best cmdCount
		for i := range 5 {
			m := z.measure(func() {
				r, err := z.s.Renew(c, se, n)
				require.NoError(t, err)
				require.True(t, r.Alive)
			})
			if i > 0 {
				require.Equal(t, best.inner, m.inner, "every renewal runs the same commands")
			}
			if i == 0 || m.usec < best.usec {
				best = m
			}
		}
		return best
	}
	empty := renew(z.open("w0"), 0)
	w2 := z.open("w2")
	held := z.admit(w2, 100_000, 1000)
	thousand := renew(w2, 1000)
	w3 := z.open("w3")
	for i := range 10 {
		z.admit(w3, 200_000+i*1000, 1000)
	}
	tenThousand := renew(w3, 10_000)
	require.Equal(t, 1, thousand.evalsha)
	require.Equal(t, 1, tenThousand.evalsha)
	require.Equal(t, empty.inner, thousand.inner, "renewal does not depend on the number of jobs")
	require.Equal(t, thousand.inner, tenThousand.inner, "renewal does not depend on the number of jobs")
	require.Equal(t, int64(1000), z.rdb.SCard(c, pfx+"owned:"+w2.ID).Val())
	require.Equal(t, int64(10_000), z.rdb.SCard(c, pfx+"owned:"+w3.ID).Val())
	t.Logf("renew tick (fastest of 5), session holding 0 jobs: %s", empty)
	t.Logf("renew tick (fastest of 5), session holding 1,000 jobs: %s", thousand)
	t.Logf("renew tick (fastest of 5), session holding 10,000 jobs: %s", tenThousand)

	// The mailbox: an idle read (BLPOP until it times out), an operator's
	// release, and the read that delivers it.
	idle := z.measure(func() {
		m, err := z.s.ReadMail(c, w2, time.Second, 100)
		require.NoError(t, err)
		require.Empty(t, m)
	})
	t.Logf("mailbox read, idle (1 s wait): %s", idle)
	force := z.measure(func() {
		_, ok, err := z.s.ForceRelease(c, held[0].ID, "")
		require.NoError(t, err)
		require.True(t, ok)
	})
	t.Logf("force release: %s", force)
	mailBytes := z.memoryUsage(pfx + "mail:" + w2.ID)
	read := z.measure(func() {
		m, err := z.s.ReadMail(c, w2, time.Second, 100)
		require.NoError(t, err)
		require.Len(t, m, 1)
	})
	t.Logf("mailbox read, one message: %s", read)

	// A claim tick that finds nothing; then a dead session's 1,000 jobs
	// reaped into {ns}:claimable (a claim of none) and claimed (a claim of
	// 1,000). The dead session's deadline is set in the past instead of
	// waited for: the scripts see what they see when it passes.
	w4 := z.open("w4")
	forced := z.measure(func() {
		got, _, err := z.s.Claim(c, w4, 100)
		require.NoError(t, err)
		require.Len(t, got, 1, "only the force-released job")
	})
	t.Logf("claim tick, one force-released job: %s", forced)
	nothing := z.measure(func() {
		got, _, err := z.s.Claim(c, w4, 100)
		require.NoError(t, err)
		require.Empty(t, got)
	})
	t.Logf("claim tick, nothing claimable: %s", nothing)
	dead := z.open("w9")
	z.admit(dead, 300_000, 1000)
	require.EqualValues(t, 1, z.rdb.ZAddArgs(c, pfx+"sessions", redis.ZAddArgs{XX: true, Ch: true,
		Members: []redis.Z{{Score: 1, Member: dead.ID}}}).Val(), "the dead session's deadline: 1970")
	reap := z.measure(func() {
		got, _, err := z.s.Claim(c, w4, 0)
		require.NoError(t, err)
		require.Empty(t, got)
	})
	require.Equal(t, int64(1000), z.rdb.ZCard(c, pfx+"claimable").Val(), "every job of the dead session is claimable")
	require.Zero(t, z.rdb.Exists(c, pfx+"sess:"+dead.ID, pfx+"owned:"+dead.ID).Val(), "the dead session is forgotten")
	var claimed []state.Claimed
	claim := z.measure(func() {
		var err error
		claimed, _, err = z.s.Claim(c, w4, 1000)
		require.NoError(t, err)
	})
	require.Len(t, claimed, 1000)
	require.Equal(t, 1, reap.evalsha)
	require.Equal(t, 1, claim.evalsha)
	t.Logf("claim reaping a dead session of 1,000 jobs, taking none: %s; per job %.2f commands",
		reap, float64(reap.total()-nothing.total())/1000)
	t.Logf("claim taking 1,000 claimable jobs: %s; per job %.2f commands, %.2f µs",
		claim, float64(claim.total()-nothing.total())/1000, float64(claim.usec)/1000)
	require.LessOrEqual(t, reap.total(), 5*1000, "reaping a job")
	require.LessOrEqual(t, claim.total(), 16*1000, "claiming a job")

	// A rate limiter's ask.
	rl := z.s.RateLimiter("cbc:org", 1000, 1000, nil)
	ask := z.measure(func() { require.NoError(t, rl.Wait(c)) })
	fair := z.measure(func() { require.NoError(t, rl.ForTenant("acme").Wait(c)) })
	t.Logf("vendor budget per vendor call: %s; per tenant: %s", ask, fair)
	require.Equal(t, 1, ask.evalsha)
	require.Equal(t, 3, ask.total(), "TIME, one MGET of the bucket and the cool-down, SET")
	require.Equal(t, 8, fair.total())
	// The limiter's keys live about one interval past their last use (the
	// tenants set two FairWindows): weigh a slow credential's at once.
	slow := z.s.RateLimiter("sophos:slow", 0.01, 1, nil)
	require.NoError(t, slow.ForTenant("acme").Wait(c))
	slow.Throttled(c, time.Minute)
	t.Logf("rate limit keys: tat %d B, cool-down %d B, tenant tat %d B, tenants %d B", z.memoryUsage(pfx+"rl:sophos:slow"),
		z.memoryUsage(pfx+"cool:sophos:slow"), z.memoryUsage(pfx+"rl:sophos:slow:t:acme"), z.memoryUsage(pfx+"rl:sophos:slow:tenants"))

	// Bytes: one record, as admitted and with every checkpoint written.
	one := z.admit(w1, 5000, 1)[0]
	admitted := z.memoryUsage(pfx + "job:" + one.ID)
	require.NoError(t, z.s.Checkpoint(c, w1, one, finished(one.ID, sizingResult)...))
	full := z.memoryUsage(pfx + "job:" + one.ID)
	rec, err := z.s.Get(c, one.ID)
	require.NoError(t, err)
	payload := len(rec.Msg) + len(rec.Source)
	for k, v := range rec.Fields {
		payload += len(k) + len(v)
	}
	enc, err := z.rdb.ObjectEncoding(c, pfx+"job:"+one.ID).Result()
	require.NoError(t, err)
	t.Logf("record encoding: %s", enc)
	t.Logf("record: %d B admitted (msg %d B), %d B with plan and %d finished tasks (%d B of field names and values)",
		admitted, len(sizingMsg), full, len(sizingKinds), payload)
	require.Less(t, full, int64(8<<10), "a record with four finished tasks")

	big := z.admit(w1, 5001, 1)[0]
	require.NoError(t, z.s.Checkpoint(c, w1, big, finished(big.ID, sizingBigResult())...))
	t.Logf("record with every result list at its cap (%d hosts, %d files per task): %d B",
		edr.MaxListed, edr.MaxListed, z.memoryUsage(pfx+"job:"+big.ID))

	// The owned set: one member per job a session holds.
	ownedEnc, err := z.rdb.ObjectEncoding(c, pfx+"owned:"+w3.ID).Result()
	require.NoError(t, err)
	owned := z.memoryUsage(pfx + "owned:" + w3.ID)
	t.Logf("owned set of 10,000 jobs (%s): %d B, %.1f B per job", ownedEnc, owned, float64(owned)/10_000)
	require.Less(t, owned/10_000, int64(128), "an owned-set member")
	t.Logf("session: member of %ssessions, %ssess:<sid> %d B; worker key %d B; a mailbox with one message %d B",
		pfx, pfx, z.memoryUsage(pfx+"sess:"+w2.ID), z.memoryUsage(pfx+"worker:w2"), mailBytes)

	// Bytes per in-flight job, all included (record, owned-set member, key
	// space), and per tombstone: used_memory over 2000 jobs of one session.
	const n = 2000
	w5 := z.open("w5")
	logBefore := z.memoryUsage(pfx + "leaselog")
	start := z.usedMemory()
	var leases []state.Lease
	for i := range n / 500 {
		leases = append(leases, z.admit(w5, 10000+i*500, 500)...)
	}
	for _, l := range leases {
		require.NoError(t, z.s.Checkpoint(c, w5, l, finished(l.ID, sizingResult)...))
	}
	logMid := z.memoryUsage(pfx + "leaselog")
	inflight := (z.usedMemory() - start - (logMid - logBefore)) / n
	t.Logf("per in-flight job (record, owned-set member, key space; lease log apart): %d B", inflight)

	for _, l := range leases {
		_, err := z.s.Decide(c, w5, l, state.Outcome{State: "success", By: "w5", At: 1795440650000}.Encode(), state.Event{})
		require.NoError(t, err)
	}
	t.Logf("outbox: %d B for %d decided jobs", z.memoryUsage(pfx+"outbox"), n)

	// Completed, nothing of the jobs is left but tombstones and log entries.
	for _, l := range leases {
		require.NoError(t, z.s.Complete(c, w5, l, "success", state.Event{}, nil))
	}
	require.Zero(t, z.rdb.Exists(c, pfx+"owned:"+w5.ID).Val(), "the owned set empties as jobs complete")
	logAfter := z.memoryUsage(pfx + "leaselog")
	tombs := (z.usedMemory() - start - (logAfter - logBefore)) / n
	ttl, err := z.rdb.PTTL(c, pfx+"tomb:"+leases[0].ID).Result()
	require.NoError(t, err)
	require.Greater(t, ttl, 6*24*time.Hour)
	entries, err := z.rdb.XLen(c, pfx+"leaselog").Result()
	require.NoError(t, err)
	t.Logf("per finished job, tombstone and history (timeline, finished index; TTL %s): %d B", state.DefaultHistoryTTL, tombs)
	// The history expires first; what stays for the tombstone's TTL alone:
	for _, l := range leases {
		require.NoError(t, z.rdb.Del(c, pfx+"tl:"+l.ID, pfx+"res:"+l.ID).Err())
	}
	require.NoError(t, z.rdb.Del(c, pfx+"finished").Err())
	history := tombs
	tombs = (z.usedMemory() - start - (logAfter - logBefore)) / n
	t.Logf("per tombstone (TTL %s): %d B (MEMORY USAGE of the key alone: %d B)", state.DefaultTombstoneTTL, tombs,
		z.memoryUsage(pfx+"tomb:"+leases[0].ID))
	t.Logf("lease log: %d entries, %d B, %.0f B per entry (capped near 100,000 entries)", entries, logAfter,
		float64(logAfter)/float64(entries))
	// used_memory after the history keys went still counts the key space's
	// hash table grown for them (it shrinks lazily): 257 B was seen.
	require.Less(t, tombs, int64(320), "a tombstone")
	require.Less(t, history, int64(2048), "a finished job's history")
}
