package fleettest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/failpoint"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

func ctx(t *testing.T) context.Context { return testutil.Context(t, 5*time.Minute) }

// Fault 1: kill -9 at random moments while 2,000 jobs flow, and at the
// failpoints between the ledger write and the offset commit, between the
// vendor accepting an operation and its checkpoint, and around the terminal
// PUT. A supervisor restarts dead workers after a second, as Kubernetes would.
func TestKillNineWhileJobsFlow(t *testing.T) {
	t.Parallel()
	// Each failpoint is armed in one worker process (the three first starts
	// and the first restart), so every window is hit without each restarted
	// process dying again.
	c := newCluster(t, clusterOpts{failpointsOnce: []string{
		failpoint.AdmittedBeforeCommit + "=0.05",
		failpoint.StartedBeforeCheckpoint + "=0.01",
		failpoint.DecidedBeforePut + "=0.01",
		failpoint.TerminalPutBeforeComplete + "=0.01",
	}})
	stopSup := c.supervise(restartAfter)
	stop := make(chan struct{})
	var killer sync.WaitGroup
	killer.Add(1)
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		killer.Wait()
	})
	go func() { // a random worker dies every 6–10 s, while more than one lives
		defer killer.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(6000+rand.IntN(4000)) * time.Millisecond):
			}
			if ws := c.liveWorkers(); len(ws) > 1 {
				c.kill9(ws[rand.IntN(len(ws))].id)
			}
		}
	}()
	start := time.Now()
	st := c.load(ctx(t), loadgen.Config{Jobs: 2000, Rate: 200})
	c.waitTerminal(st.Valid, 2*time.Minute)
	close(stop)
	killer.Wait()
	stopSup()
	elapsed := time.Since(start)
	h := c.history()
	r := check(h, st)
	kills, fps := 0, countFailpoints(c)
	for _, f := range h.faults {
		if f.Kind == "kill -9" {
			kills++
		}
	}
	r.print(t, "kill -9 while 2,000 jobs flow",
		fmt.Sprintf("  %-34s %d random, %d at failpoints", "workers killed", kills, fps),
		fmt.Sprintf("  %-34s %.1f jobs/s (%s)", "throughput", float64(len(st.Valid))/elapsed.Seconds(), elapsed.Round(time.Second)))
	require.True(t, r.ok())
	require.Positive(t, kills+fps, "faults were injected")
}

// Fault 1b: kill -9 exactly between a vendor accepting an operation and
// its reference reaching the ledger — the window that used to start the
// operation a second time. The next owner finds the start intent, looks
// the operation up at the vendor and re-attaches: no CB Cloud, Sophos or
// Live Response operation is started twice. (Cytomic's API cannot be
// searched: its restarts are reported, not asserted.)
func TestKillAtStartCheckpointStartsNothingTwice(t *testing.T) {
	t.Parallel()
	const armed = "started-before-checkpoint=0.03"
	c := newCluster(t, clusterOpts{failpointsOnce: []string{armed, armed, armed, armed, armed, armed}})
	stopSup := c.supervise(restartAfter)
	st := c.load(ctx(t), loadgen.Config{Jobs: 600, Rate: 100})
	c.waitTerminal(st.Valid, 3*time.Minute)
	stopSup()
	h := c.history()
	r := check(h, st)
	fps := countFailpoints(c)
	r.print(t, "kill -9 between a vendor start and its checkpoint",
		fmt.Sprintf("  %-34s %d", "workers killed at the failpoint", fps))
	require.True(t, r.ok())
	require.GreaterOrEqual(t, fps, 3, "the failpoint was hit")
	for _, v := range []string{"cbc", "sophos", "cblr"} {
		require.Zero(t, r.restarts[v], "%s operations started twice", v)
	}
}

// countFailpoints counts the worker processes that killed themselves at a
// failpoint (each says so on stderr first).
func countFailpoints(c *cluster) int {
	return countInLogs(c.dir, "w*.log", "failpoint ")
}

// Fault 2: a worker is paused (SIGSTOP) for longer than LEASE_TTL and then
// resumed: it makes no vendor call and no SampleDB write for the jobs it
// lost (the checker's zombie check), and its jobs are finished by others.
func TestStoppedWorkerMakesNoZombieWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{simArgs: []string{"--vendor-time", "4s"}})
	st := c.load(ctx(t), loadgen.Config{Jobs: 300, Rate: 150})
	var held []string
	require.Eventually(t, func() bool { held = c.heldBy("w1"); return len(held) > 20 }, time.Minute, 100*time.Millisecond)
	stopped := time.Now()
	c.pause("w1", 2*c.opts.leaseTTL+time.Second)
	c.waitTerminal(st.Valid, 2*time.Minute)
	h := c.history()
	r := check(h, st)
	heldSet := map[string]bool{}
	for _, id := range held {
		heldSet[id] = true
	}
	// held was sampled a moment before the SIGSTOP landed: w1 may have
	// finished a few of them in that moment. Every other one must have been
	// finished by another worker.
	byOthers, byW1Before, byW1After := 0, 0, 0
	for _, tr := range h.transitions {
		if !heldSet[tr.JobID] || tr.TaskID != "" || !sampledb.IsTerminal(tr.To) || tr.Status != 200 {
			continue
		}
		switch {
		case workerOf(tr.UserAgent) != "w1":
			byOthers++
		case tr.Time.Before(stopped):
			byW1Before++
		default:
			byW1After++
		}
	}
	r.print(t, "SIGSTOP longer than LEASE_TTL, then SIGCONT",
		fmt.Sprintf("  %-34s %d held by w1 when stopped: %d finished by other workers, %d by w1 just before the pause",
			"w1's jobs", len(held), byOthers, byW1Before))
	require.True(t, r.ok())
	require.Zero(t, byW1After, "w1 finished no job after it was paused past its leases")
	require.Equal(t, len(held), byOthers+byW1Before)
}

// Fault 3: Redis restarted empty mid-run (no persistence). Workers re-seed
// the jobs they hold and the reconciler re-adopts executing jobs from
// SampleDB: none is lost.
func TestRedisRestartedEmpty(t *testing.T) {
	t.Parallel()
	// Vendor operations long enough that jobs are still held when Redis
	// restarts, however fast the fleet drains the load (with 3 s, a quiet
	// machine finished all 600 before 150 were ever held at once).
	c := newCluster(t, clusterOpts{simArgs: []string{"--vendor-time", "15s"}})
	done := make(chan *loadgen.Stats, 1)
	go func() { done <- c.load(ctx(t), loadgen.Config{Jobs: 600, Rate: 100}) }()
	require.Eventually(t, func() bool { return len(c.heldBy("w1"))+len(c.heldBy("w2"))+len(c.heldBy("w3")) > 150 },
		time.Minute, 100*time.Millisecond)
	c.restartRedisEmpty()
	st := <-done
	c.waitTerminal(st.Valid, 3*time.Minute)
	r := check(c.history(), st)
	adopted := countInLogs(c.dir, "w*.log", "re-adopted jobs the ledger had lost")
	reseeded := countInLogs(c.dir, "w*.log", "re-seeded job after ledger loss")
	r.print(t, "Redis restarted empty mid-run",
		fmt.Sprintf("  %-34s %d jobs re-seeded from worker memory; %d reconciler passes re-adopted jobs", "recovery", reseeded, adopted))
	require.True(t, r.ok())
}

// Fault 4: the broker restarted (SIGKILL, with its data directory) and
// paused (SIGSTOP): intake resumes; nothing lost or run twice.
func TestBrokerRestartedAndPaused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	done := make(chan *loadgen.Stats, 1)
	go func() { done <- c.load(ctx(t), loadgen.Config{Jobs: 700, Rate: 100}) }()
	faultSchedule(2 * time.Second)
	c.restartBroker(syscall.SIGKILL)
	faultSchedule(3 * time.Second)
	c.fault("broker paused", "kafkabroker")
	c.broker.signal(syscall.SIGSTOP)
	faultSchedule(5 * time.Second)
	c.broker.signal(syscall.SIGCONT)
	st := <-done
	c.waitTerminal(st.Valid, 3*time.Minute)
	r := check(c.history(), st)
	r.print(t, "broker restarted (kill -9) and paused 5s")
	require.True(t, r.ok())
	r.requireNoRestarts(t, "no worker died, so no %s operation may be started twice")
}

// Fault 5: consumer-group churn: workers added and removed (SIGTERM) every
// few seconds under load, as operators scale up and down.
func TestConsumerGroupChurn(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	done := make(chan *loadgen.Stats, 1)
	go func() { done <- c.load(ctx(t), loadgen.Config{Jobs: 1000, Rate: 80}) }()
	var drains []time.Duration
	next := 4
	for i := range 6 {
		faultSchedule(2 * time.Second)
		if i%2 == 0 {
			c.startWorker(fmt.Sprintf("w%d", next))
			next++
			continue
		}
		ws := c.liveWorkers()
		d, err := c.drain(ws[rand.IntN(len(ws))].id)
		require.NoError(t, err)
		drains = append(drains, d)
	}
	st := <-done
	c.waitTerminal(st.Valid, 3*time.Minute)
	h := c.history()
	r := check(h, st)
	r.print(t, "consumer-group churn (3 scale-ups, 3 drains)",
		fmt.Sprintf("  %-34s %s", "drain durations", fmtDurations(drains)),
		fmt.Sprintf("  %-34s %s", "longest admission pause", admissionPause(h, st).Round(time.Millisecond)))
	require.True(t, r.ok())
	r.requireNoRestarts(t, "graceful scaling restarts no %s operation")
}

// Fault 6: graceful drain of a worker holding long-running jobs: its leases
// are handed over at once, other workers re-attach to the running vendor
// operations (zero restarts), and the drained worker exits cleanly.
func TestGracefulDrainHandsLeasesOver(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{simArgs: []string{"--vendor-time", "15s"}})
	st := c.load(ctx(t), loadgen.Config{Jobs: 150, Rate: 150})
	var held []string
	require.Eventually(t, func() bool {
		held = c.heldBy("w1")
		return len(held) > 10 && c.vendorStartsFor(held) >= len(held)
	}, time.Minute, 200*time.Millisecond, "w1 holds running vendor operations")
	term := time.Now()
	took, err := c.drain("w1")
	require.NoError(t, err, "the drained worker exits with status 0")
	c.waitTerminal(st.Valid, 2*time.Minute)
	h := c.history()
	r := check(h, st)
	var handover []time.Duration
	claimedBy := map[string]bool{}
	heldSet := map[string]bool{}
	for _, id := range held {
		heldSet[id] = true
	}
	finishedInDrain := 0 // its terminal state was on its way: w1 delivers it rather than hand it over
	for _, e := range h.leases {
		if heldSet[e.JobID] && e.Event == "released" && e.Worker == "w1" && e.At.After(term) {
			handover = append(handover, e.At.Sub(term))
		}
		if heldSet[e.JobID] && e.Event == "completed" && e.Worker == "w1" && e.At.After(term) {
			finishedInDrain++
		}
		if heldSet[e.JobID] && isAcquisition(e.Event) && e.Worker != "w1" && e.At.After(term) {
			claimedBy[e.JobID] = true
		}
	}
	r.print(t, "graceful drain (SIGTERM) of a worker holding long-running jobs",
		fmt.Sprintf("  %-34s %d jobs; hand-over after SIGTERM p50 %s, max %s", "w1's leases released",
			len(handover), pct(handover, .5).Round(time.Millisecond), pct(handover, 1).Round(time.Millisecond)),
		fmt.Sprintf("  %-34s %d", "finished by w1 while it drained", finishedInDrain),
		fmt.Sprintf("  %-34s %d of %d", "re-attached by other workers", len(claimedBy), len(handover)),
		fmt.Sprintf("  %-34s %s", "w1 exited after", took.Round(time.Millisecond)))
	require.True(t, r.ok())
	require.Equal(t, len(held), len(handover)+finishedInDrain,
		"every lease was handed over (or its job finished by w1 as the drain began), none left to expire")
	require.Greater(t, len(handover), len(held)/2, "a drain hands jobs over; it does not wait for them")
	require.Less(t, pct(handover, 1), c.opts.leaseTTL, "handed over before a lease could even expire")
	require.Len(t, claimedBy, len(handover), "every job handed over is re-attached by another worker")
	r.requireNoRestarts(t, "a drain restarts no %s operation")
}

// Fault 7: SampleDB answers 503 for 30 s, applies PUTs and then times out,
// answers 429; vendors throw 429 storms, hang and answer 5xx.
func TestSampleDBAndVendorFaults(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	done := make(chan *loadgen.Stats, 1)
	go func() { done <- c.load(ctx(t), loadgen.Config{Jobs: 500, Rate: 50}) }()
	faultSchedule(2 * time.Second)
	c.addFault("sampledb", map[string]any{"name": "outage-503", "status": 503, "for": int64(30 * time.Second)})
	c.addFault("cbc", map[string]any{"name": "storm-429", "status": 429, "retryAfter": int64(time.Second), "count": 200, "probability": 0.3})
	c.addFault("sophos", map[string]any{"name": "storm-429", "status": 429, "retryAfter": int64(2 * time.Second), "count": 100, "probability": 0.3})
	c.addFault("cytomic", map[string]any{"name": "5xx", "status": 502, "count": 20})
	c.addFault("cblr", map[string]any{"name": "hung", "hang": true, "count": 5})
	faultSchedule(31 * time.Second)
	c.addFault("sampledb", map[string]any{"name": "apply-then-timeout", "afterApply": true, "method": "PUT", "count": 10})
	c.addFault("sampledb", map[string]any{"name": "throttled-429", "status": 429, "retryAfter": int64(time.Second), "count": 50, "probability": 0.2})
	st := <-done
	c.waitTerminal(st.Valid, 4*time.Minute)
	h := c.history()
	r := check(h, st)
	faulted := map[string]int{}
	var share []string
	for _, sim := range []string{"sampledb", "cbc", "cblr", "cytomic", "sophos"} {
		n429 := 0
		for _, q := range h.requests[sim] {
			if q.Faulted != "" {
				faulted[sim+" "+q.Faulted]++
			}
			if q.Status == 429 {
				n429++
			}
		}
		share = append(share, fmt.Sprintf("%s %d/%d", sim, n429, len(h.requests[sim])))
	}
	r.print(t, "SampleDB 503 for 30s, apply-then-timeout, 429s; vendor 429 storms, hangs, 5xx",
		fmt.Sprintf("  %-34s %v", "faulted requests", faulted),
		fmt.Sprintf("  %-34s %s", "429s / all requests", strings.Join(share, ", ")))
	require.True(t, r.ok())
}

// Fault 8: abort races — DELETE before admission, during execution, during
// a takeover, and after the job finished.
func TestAbortRaces(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{simArgs: []string{"--vendor-time", "5s"}})
	st := c.load(ctx(t), loadgen.Config{Jobs: 300, Rate: 150, Aborts: 40, AbortAfter: 2 * time.Second})
	// During a takeover: kill the worker holding jobs and abort some of them.
	victims := c.heldBy("w2")
	require.NotEmpty(t, victims)
	c.kill9("w2")
	duringTakeover := victims[:min(15, len(victims))]
	sdb := &loadgen.HTTPSampleDB{URL: c.simEnv["SAMPLEDB_URL"], UserKey: "dev-user-key"}
	for _, id := range duringTakeover {
		sdb.Abort(id)
	}
	stopSup := c.supervise(restartAfter)
	c.waitTerminal(st.Valid, 3*time.Minute)
	stopSup()
	// After it finished: a DELETE changes nothing.
	jobs := c.simJobs()
	var finished []string
	for _, id := range st.Valid {
		if jobs[id].State == "success" && len(finished) < 15 {
			finished = append(finished, id)
		}
	}
	for _, id := range finished {
		sdb.Abort(id)
	}
	jobs = c.simJobs()
	h := c.history()
	r := check(h, st)
	count := func(ids []string, state string) int {
		n := 0
		for _, id := range ids {
			if jobs[id].State == state {
				n++
			}
		}
		return n
	}
	r.print(t, "abort races",
		fmt.Sprintf("  %-34s %d of %d aborted; vendor operations started for them: %d", "DELETE before admission",
			count(st.AbortedEarly, "aborted"), len(st.AbortedEarly), c.vendorStartsFor(st.AbortedEarly)),
		fmt.Sprintf("  %-34s %d of %d aborted (the rest finished first)", "DELETE during execution",
			count(st.AbortedLate, "aborted"), len(st.AbortedLate)),
		fmt.Sprintf("  %-34s %d of %d aborted", "DELETE during a takeover", count(duringTakeover, "aborted"), len(duringTakeover)),
		fmt.Sprintf("  %-34s %d of %d still success", "DELETE after finishing", count(finished, "success"), len(finished)))
	require.True(t, r.ok())
	require.Equal(t, len(st.AbortedEarly), count(st.AbortedEarly, "aborted"))
	require.Zero(t, c.vendorStartsFor(st.AbortedEarly), "a job aborted before it started never reaches a vendor")
	require.Equal(t, len(finished), count(finished, "success"))
	for _, id := range duringTakeover {
		require.Contains(t, []string{"aborted", "success"}, jobs[id].State)
	}
}

// Fault 9: a stream with 10% malformed records of every kind: all
// dead-lettered, and the fleet keeps its rate.
func TestBadInputAtVolume(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOpts{})
	start := time.Now()
	st := c.load(ctx(t), loadgen.Config{Jobs: 900, Bad: 100, Rate: 400})
	c.waitTerminal(st.Valid, 3*time.Minute)
	elapsed := time.Since(start)
	r := check(c.history(), st)
	dl := c.deadLetters()
	r.print(t, "bad input at volume (10% malformed)",
		fmt.Sprintf("  %-34s %v", "dead letters by reason", dl),
		fmt.Sprintf("  %-34s %.1f jobs/s over %s", "throughput", float64(len(st.Valid))/elapsed.Seconds(), elapsed.Round(time.Second)))
	require.True(t, r.ok())
	require.Equal(t, st.Bad, dl, "every bad record dead-lettered with its reason")
}

func fmtDurations(ds []time.Duration) string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Round(time.Millisecond).String())
	}
	return fmt.Sprint(out)
}

// admissionPause is the longest gap between consecutive admissions while
// records were still arriving: what rebalances cost intake.
func admissionPause(h history, st *loadgen.Stats) time.Duration {
	var at []time.Time
	for _, e := range h.leases {
		if e.Event == "admitted" && e.At.Before(st.Last) {
			at = append(at, e.At)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	var most time.Duration
	for i := 1; i < len(at); i++ {
		most = max(most, at[i].Sub(at[i-1]))
	}
	return most
}

// faultSchedule waits for the next point of a scenario's timeline (when to
// inject or lift a fault), not for a condition.
func faultSchedule(d time.Duration) { <-time.After(d) }

// requireNoRestarts requires that no vendor operation was started again for
// the same job; why says why none may be, with a %s for the vendor.
func (r *report) requireNoRestarts(t *testing.T, why string) {
	t.Helper()
	for v, n := range r.restarts {
		require.Zero(t, n, why, v)
	}
}
