package bench

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// snapshot is everything the bench reads at the edges of a phase.
type snapshot struct {
	at                  time.Time
	worker, redis, self time.Duration // CPU used so far
	rss, peak           int64
	info                redisInfo
	logs                map[string]int // request-log lengths, by simulator
	metrics             workerMetrics
}

func (b *run) snapshot(ctx context.Context) (snapshot, error) {
	var s snapshot
	var err error
	if s.info, err = b.redis.info(ctx); err != nil {
		return s, err
	}
	s.metrics = b.w.metrics()
	s.logs = map[string]int{}
	for name, k := range b.stack.Kits() {
		s.logs[name] = k.Len()
	}
	s.at = time.Now()
	if s.worker, err = procCPU(b.w.pid()); err != nil {
		return s, fmt.Errorf("the worker's CPU: %w", err)
	}
	if s.rss, s.peak, err = procMem(b.w.pid()); err != nil {
		return s, fmt.Errorf("the worker's memory: %w", err)
	}
	b.res.LastRSS = s.rss
	s.redis, _ = procCPU(b.redis.pid())
	s.self, _ = procCPU(os.Getpid())
	return s, nil
}

// phase measures the worker for d. during, if not nil, runs alongside
// (its context ends if the phase stops early); the phase waits for it. It
// reports false, with the Note written, if the phase could not complete.
func (b *run) phase(ctx context.Context, d time.Duration, during func(ctx context.Context, start time.Time)) (Phase, bool) {
	s0, err := b.snapshot(ctx)
	if err != nil {
		b.res.Note = b.stopped(ctx, err)
		return Phase{}, false
	}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if during != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			during(pctx, s0.at)
		}()
	}
	end := time.NewTimer(d)
	defer end.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var rss []int64
	ok := true
loop:
	for {
		select {
		case <-end.C:
			break loop
		case <-tick.C:
			r, _, err := procMem(b.w.pid())
			if err != nil {
				continue // exited: done says why
			}
			rss = append(rss, r)
			b.res.LastRSS = r
			if r > b.cfg.MaxRSS {
				b.res.Note = fmt.Sprintf("stopped: the worker's RSS %s passed the limit %s", mib(r), mib(b.cfg.MaxRSS))
				ok = false
				break loop
			}
		case <-b.w.done:
			b.res.Note = b.w.exited()
			ok = false
			break loop
		case <-ctx.Done():
			b.res.Note = "interrupted"
			ok = false
			break loop
		}
	}
	cancel()
	wg.Wait()
	if !ok {
		return Phase{}, false
	}
	s1, err := b.snapshot(ctx)
	if err != nil {
		b.res.Note = b.stopped(ctx, err)
		return Phase{}, false
	}
	return b.between(s0, s1, rss), true
}

// stopped says why a snapshot failed: most often the worker died.
func (b *run) stopped(ctx context.Context, err error) string {
	select {
	case <-b.w.done:
		return b.w.exited()
	default:
	}
	if ctx.Err() != nil {
		return "interrupted"
	}
	return err.Error()
}

// between computes a Phase from its two snapshots and RSS samples.
func (b *run) between(s0, s1 snapshot, rss []int64) Phase {
	secs := s1.at.Sub(s0.at).Seconds()
	rate := func(n float64) float64 { return n / secs }
	p := Phase{
		Seconds: secs, RSS: s1.rss, RSSPeak: s1.peak,
		CPU:         rate((s1.worker - s0.worker).Seconds()),
		RedisCPU:    rate((s1.redis - s0.redis).Seconds()),
		BenchCPU:    rate((s1.self - s0.self).Seconds()),
		RedisMemory: s1.info.usedMemory, RedisKeys: s1.info.keys,
		RedisByCommand: map[string]float64{},
		Vendors:        map[string]Traffic{}, LoadAvg: loadAvg(),
	}
	if len(rss) > 0 {
		var sum int64
		for _, r := range rss {
			sum += r
		}
		p.RSS = sum / int64(len(rss))
	}
	m := s1.metrics
	p.Goroutines, p.HeapInuse, p.WorkerInFlight, p.LeasesHeld = m.goroutines, m.heapInuse, m.inflight, m.leasesHeld
	if m.ok && s0.metrics.ok {
		p.LeasesLost, p.LeasesClaimed = m.leasesLost-s0.metrics.leasesLost, m.takenOver-s0.metrics.takenOver
		p.LeasesLostBefore, p.LeasesClaimedBefore = s0.metrics.leasesLost, s0.metrics.takenOver
	}
	total, by := commandsBetween(s0.info, s1.info)
	p.RedisCommands = rate(float64(total))
	for k, n := range by {
		p.RedisByCommand[k] = rate(float64(n))
		if slices.Contains(scriptCommands, k) {
			p.RedisScripts += rate(float64(n))
		}
	}
	in, out := netBetween(s0.info, s1.info)
	p.RedisBytesIn, p.RedisBytesOut = rate(float64(in)), rate(float64(out))
	for name, k := range b.stack.Kits() {
		reqs := k.RequestsFrom(s0.logs[name])
		reqs = reqs[:min(len(reqs), s1.logs[name]-s0.logs[name])]
		t := Traffic{Routes: map[string]float64{}}
		for _, r := range reqs {
			t.Requests++
			if r.Status >= 400 {
				t.Errors++
			}
			t.BytesIn += float64(r.BytesIn)
			t.BytesOut += float64(r.BytesOut)
			t.Routes[r.Method+" "+route(r.Path)]++
		}
		t.Requests, t.Errors, t.BytesIn, t.BytesOut = rate(t.Requests), rate(t.Errors), rate(t.BytesIn), rate(t.BytesOut)
		for k, n := range t.Routes {
			t.Routes[k] = rate(n)
		}
		switch {
		case name == "sampledb":
			p.SampleDB = t
		case t.Requests > 0 || slices.Contains(b.cfg.Mix.vendors(), name):
			p.Vendors[name] = t
		}
	}
	return p
}

// route is a request path with its IDs (UUIDs, numbers) replaced by {id}.
func route(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		digits := strings.IndexFunc(s, func(r rune) bool { return r >= '0' && r <= '9' }) >= 0
		allDigits := s != "" && strings.Trim(s, "0123456789") == ""
		if allDigits || (digits && len(s) >= 8) {
			segs[i] = "{id}"
		}
	}
	return strings.Join(segs, "/")
}

// started returns how many jobs' vendor operations the simulators have
// seen started, by vendor.
func (b *run) started() map[string]int {
	out := map[string]int{}
	for _, v := range b.cfg.Mix.vendors() {
		switch v {
		case "cbc":
			out[v] = b.stack.CBC.TotalStarts()
		case "sophos":
			out[v] = len(b.stack.Sophos.Runs())
		case "cytomic":
			// One operation per Cytomic client of the account, each job.
			out[v] = len(b.stack.Cytomic.Operations()) / len(simstack.CytomicClients)
		}
	}
	return out
}

// admit waits until every job is admitted and every vendor operation
// started (steady), or the admission deadline passes (a partial window
// follows, on what the worker holds). proceed is false when nothing can
// be measured: the worker died, grew past MaxRSS, or the run was
// interrupted.
func (b *run) admit(ctx context.Context, first time.Time) (steady, proceed bool) {
	res := b.res
	expected := b.cfg.Mix.expected(b.cfg.Jobs)
	pending := slices.Clone(b.ids)
	deadline := time.NewTimer(b.cfg.AdmitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	lastReport := time.Now()
	finish := func() {
		b.countEnded()
		res.InFlight = res.Admitted - res.EndedEarly
		res.AdmissionSeconds = time.Since(first).Seconds()
		if res.AdmissionSeconds > 0 {
			res.AdmissionRate = float64(res.InFlight) / res.AdmissionSeconds
		}
	}
	for {
		keep := pending[:0]
		for _, id := range pending {
			if j, _ := b.stack.SampleDB.Job(id); j.State == sampledb.StateEnqueued {
				keep = append(keep, id)
			} else {
				res.Admitted++
			}
		}
		pending = keep
		res.Started = b.started()
		if len(pending) == 0 {
			b.countEnded()
			if reached(res.Started, expected, res.EndedEarly) {
				finish()
				res.Steady = true
				b.progressf("steady: %d jobs in flight after %.1fs (%.0f jobs/s)", res.InFlight, res.AdmissionSeconds, res.AdmissionRate)
				return true, true
			}
		}
		rss, _, _ := procMem(b.w.pid())
		if rss > 0 {
			res.LastRSS = rss
		}
		if time.Since(lastReport) >= 5*time.Second {
			lastReport = time.Now()
			b.progressf("admitted %d/%d, vendor operations started %v, worker RSS %s", res.Admitted, b.cfg.Jobs, res.Started, mib(rss))
		}
		if rss > b.cfg.MaxRSS {
			res.Note = fmt.Sprintf("stopped during admission: the worker's RSS %s passed the limit %s", mib(rss), mib(b.cfg.MaxRSS))
			finish()
			return false, false
		}
		select {
		case <-ctx.Done():
			res.Note = "interrupted during admission"
			finish()
			return false, false
		case <-b.w.done:
			res.Note = "during admission, " + b.w.exited()
			finish()
			return false, false
		case <-deadline.C:
			finish()
			res.Note = fmt.Sprintf("not steady after %s: %d of %d jobs admitted, vendor operations started %v; the window measured what the worker held",
				b.cfg.AdmitTimeout, res.Admitted, b.cfg.Jobs, res.Started)
			b.progressf("%s", res.Note)
			return false, res.InFlight > 0
		case <-tick.C:
		}
	}
}

func reached(started, expected map[string]int, ended int) bool {
	for v, n := range expected {
		if started[v] < n-ended {
			return false
		}
	}
	return true
}

// countEnded records the jobs that have already ended (their vendor
// operations failed, say): they are not in flight.
func (b *run) countEnded() {
	for _, id := range b.ids {
		if b.ended[id] {
			continue
		}
		if j, _ := b.stack.SampleDB.Job(id); sampledb.IsTerminal(j.State) {
			b.ended[id] = true
		}
	}
	b.res.EndedEarly = len(b.ended)
}

// wait waits d unless the run ends first.
func (b *run) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.w.done:
		b.res.Note = b.w.exited()
	case <-ctx.Done():
		b.res.Note = "interrupted"
	}
	return false
}

// victims are the jobs to abort: evenly spread over the jobs in flight.
func (b *run) victims() []string {
	live := make([]string, 0, len(b.ids))
	for _, id := range b.ids {
		if !b.ended[id] {
			live = append(live, id)
		}
	}
	k := min(b.cfg.Aborts, len(live))
	out := make([]string, 0, k)
	for i := range k {
		out = append(out, live[i*len(live)/k])
	}
	return out
}

// abortDuring aborts the victims as an analyst would (SampleDB's DELETE),
// spread over the first half of the window, and returns when each was
// aborted.
func (b *run) abortDuring(ctx context.Context, start time.Time, victims []string) map[string]time.Time {
	at := make(map[string]time.Time, len(victims))
	span := b.cfg.Window / 2
	for i, id := range victims {
		due := start.Add(span * time.Duration(i) / time.Duration(len(victims)))
		t := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			t.Stop()
			return at
		case <-t.C:
		}
		at[id] = time.Now()
		b.stack.SampleDB.Abort(id)
	}
	return at
}

// awaitAborts waits (up to AbortTimeout) for the aborted jobs to end and
// measures each one's latency: from the DELETE to the moment SampleDB
// applied the worker's "aborted".
func (b *run) awaitAborts(ctx context.Context, at map[string]time.Time) *Aborts {
	deadline := time.NewTimer(b.cfg.AbortTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		open := 0
		for id := range at {
			if j, _ := b.stack.SampleDB.Job(id); !sampledb.IsTerminal(j.State) {
				open++
			}
		}
		if open == 0 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			break wait
		case <-b.w.done:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	waited := time.Now()
	a := &Aborts{Requested: len(at)}
	aborted := map[string]time.Time{}
	for _, t := range b.stack.SampleDB.AllHistory() {
		if t.TaskID == "" && t.To == sampledb.StateAborted && t.Applied() {
			aborted[t.JobID] = t.Time
		}
	}
	// A job not ended by the deadline counts with the time waited for it,
	// as a lower bound: a percentile that lands on one says "at least".
	var lat []latency
	for id, when := range at {
		j, _ := b.stack.SampleDB.Job(id)
		switch {
		case j.State == sampledb.StateAborted:
			a.Aborted++
			lat = append(lat, latency{s: aborted[id].Sub(when).Seconds()})
		case sampledb.IsTerminal(j.State):
			a.Other++ // the abort lost a race with the job's end
		default:
			a.Pending++
			lat = append(lat, latency{s: waited.Sub(when).Seconds(), atLeast: true})
		}
	}
	slices.SortFunc(lat, func(x, y latency) int { return cmp.Compare(x.s, y.s) })
	p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	a.P50, a.P50AtLeast, a.P99, a.P99AtLeast = p50.s, p50.atLeast, p99.s, p99.atLeast
	if len(lat) > 0 {
		a.Max, a.MaxAtLeast = lat[len(lat)-1].s, lat[len(lat)-1].atLeast
	}
	return a
}

// latency is one abort's, in seconds; atLeast if it had not ended.
type latency struct {
	s       float64
	atLeast bool
}

// percentile is the nearest-rank percentile of sorted values (zero if
// none).
func percentile(sorted []latency, p float64) latency {
	if len(sorted) == 0 {
		return latency{}
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
