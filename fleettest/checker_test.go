package fleettest

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/state"
)

type simJob struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	AbortRequested bool   `json:"abortRequested"`
	EndTimestamp   int64  `json:"endTimestamp"`
}

type transition struct {
	Time      time.Time `json:"time"`
	JobID     string    `json:"jobId"`
	TaskID    string    `json:"taskId"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	UserAgent string    `json:"userAgent"`
	Status    int       `json:"status"`
}

func (c *cluster) simJobs() map[string]simJob {
	var jobs []simJob
	c.getJSON(c.simEnv["SAMPLEDB_URL"], "/_sim/jobs", &jobs)
	out := make(map[string]simJob, len(jobs))
	for _, j := range jobs {
		out[j.ID] = j
	}
	return out
}

// history is everything the checker reads after a run.
type history struct {
	jobs        map[string]simJob
	transitions []transition
	requests    map[string][]simhttp.Request // by simulator
	leases      []state.LeaseEvent
	faults      []faultEvent
}

func (c *cluster) history() history {
	c.t.Helper()
	c.readLeases()
	h := history{jobs: c.simJobs(), requests: map[string][]simhttp.Request{}}
	c.getJSON(c.simEnv["SAMPLEDB_URL"], "/_sim/history", &h.transitions)
	for _, sim := range []string{"sampledb", "cbc", "cblr", "cytomic", "sophos"} {
		var reqs []simhttp.Request
		c.getJSON(c.simURL(sim), "/_sim/requests", &reqs)
		h.requests[sim] = reqs
	}
	c.mu.Lock()
	h.leases = append([]state.LeaseEvent(nil), c.leases...)
	h.faults = append([]faultEvent(nil), c.faults...)
	c.mu.Unlock()
	return h
}

// report is what the checker found.
type report struct {
	produced, terminal int
	byState            map[string]int
	lost               []string // not terminal
	doubleTerminal     []string
	backwards          []string
	refused            int // 412s SampleDB answered (a refused transition changes nothing)
	zombies            []string
	restarts           map[string]int // vendor → operations started again for the same job
	starts             map[string]int
	abortLatency       []time.Duration
	takeover           []time.Duration
}

func (r *report) ok() bool {
	return len(r.lost) == 0 && len(r.doubleTerminal) == 0 && len(r.backwards) == 0 && len(r.zombies) == 0
}

var startPaths = map[string]func(method, path string) bool{
	"cbc":    func(m, p string) bool { return m == "POST" && strings.HasSuffix(p, "/jobs/start/event_export") },
	"sophos": func(m, p string) bool { return m == "POST" && p == "/xdr-query/v1/queries/runs" },
	"cytomic": func(m, p string) bool {
		return m == "POST" && (p == "/osQuery/client" || p == "/api/v1/osQuery/client")
	},
	"cblr": func(m, p string) bool { return m == "POST" && p == "/api/v1/cblr/session" },
}

// check verifies the history against what was produced.
func check(h history, st *loadgen.Stats) *report {
	r := &report{produced: len(st.Valid), byState: map[string]int{}, restarts: map[string]int{}, starts: map[string]int{}}
	// Exactly one terminal state, forward only.
	applied := map[string][]transition{}
	for _, tr := range h.transitions {
		if tr.TaskID != "" {
			continue
		}
		if tr.Status != 200 {
			r.refused++
			continue
		}
		applied[tr.JobID] = append(applied[tr.JobID], tr)
	}
	for _, id := range st.Valid {
		j, ok := h.jobs[id]
		if !ok || !sampledb.IsTerminal(j.State) {
			r.lost = append(r.lost, id)
			continue
		}
		r.terminal++
		r.byState[j.State]++
		terms := 0
		prev := "enqueued"
		for _, tr := range applied[id] {
			if sampledb.IsTerminal(tr.To) {
				terms++
			}
			if tr.From != prev || !forward(tr.From, tr.To) {
				r.backwards = append(r.backwards, fmt.Sprintf("%s: %s→%s after %s", id, tr.From, tr.To, prev))
			}
			prev = tr.To
		}
		if terms != 1 {
			r.doubleTerminal = append(r.doubleTerminal, fmt.Sprintf("%s: %d terminal transitions", id, terms))
		}
	}

	// Lease tenures by job, in Redis time order.
	byJob := map[string][]state.LeaseEvent{}
	for _, e := range h.leases {
		byJob[e.JobID] = append(byJob[e.JobID], e)
	}
	for _, evs := range byJob {
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].At.Before(evs[j].At) })
	}

	// Zombie writes: a request about job J by worker W after the last lease
	// event before it was not W's own acquisition.
	const tol = 20 * time.Millisecond
	for sim, reqs := range h.requests {
		for _, q := range reqs {
			job := q.Job
			if job == "" && sim == "sampledb" {
				job = jobFromPath(q.Path)
			}
			if job == "" || (sim == "sampledb" && q.Method == "GET") {
				continue // not about one job, or a read
			}
			w := workerOf(q.UserAgent)
			if w == "" {
				continue // the load generator (an analyst's DELETE)
			}
			// The last lease event before the request (Redis and the
			// simulator share the host clock; tol absorbs its granularity, in
			// the worker's favour: its own acquisition may be logged a hair
			// after its first request arrives).
			var last *state.LeaseEvent
			for i := range byJob[job] {
				e := &byJob[job][i]
				if e.At.After(q.Time.Add(tol)) {
					break
				}
				last = e
			}
			if last == nil {
				continue // history lost (Redis restarted empty): no claim either way
			}
			if isAcquisition(last.Event) && last.Worker == w {
				continue
			}
			if last.At.After(q.Time.Add(-tol)) {
				continue // too close to call
			}
			{
				r.zombies = append(r.zombies, fmt.Sprintf("%s %s %s %s by %s at %s: lease was %s by %s at %s (+%s)",
					sim, q.Method, q.Path, job, w, q.Time.Format("15:04:05.000"), last.Event, last.Worker,
					last.At.Format("15:04:05.000"), q.Time.Sub(last.At).Round(time.Millisecond)))
			}
		}
	}

	// Vendor operations started per (job, vendor).
	for sim, isStart := range startPaths {
		per := map[string]int{}
		for _, q := range h.requests[sim] {
			if q.Job != "" && isStart(q.Method, q.Path) && q.Status < 300 && q.Status > 0 {
				per[q.Job]++
			}
		}
		for job, n := range per {
			r.starts[sim] += n
			want := 1
			if sim == "cblr" {
				want = max(st.Sensors[job], 1)
			}
			if n > want {
				r.restarts[sim] += n - want
			}
		}
	}

	// Abort latency: the analyst's DELETE → aborted.
	deleted := map[string]time.Time{}
	for _, q := range h.requests["sampledb"] {
		if q.Method == "DELETE" {
			if id := jobFromPath(q.Path); id != "" {
				if _, seen := deleted[id]; !seen {
					deleted[id] = q.Time
				}
			}
		}
	}
	for _, id := range st.AbortedLate {
		for _, tr := range applied[id] {
			if tr.To == "aborted" && !deleted[id].IsZero() {
				r.abortLatency = append(r.abortLatency, tr.Time.Sub(deleted[id]))
			}
		}
	}

	// Takeover time: a worker killed or stopped at T → another worker's
	// first acquisition of each job the victim held at T.
	for _, f := range h.faults {
		if f.Kind != "kill -9" && f.Kind != "SIGSTOP" && f.Kind != "SIGTERM" {
			continue
		}
		for _, evs := range byJob {
			var holder string
			for _, e := range evs {
				if e.At.After(f.At) {
					break
				}
				if isAcquisition(e.Event) {
					holder = e.Worker
				} else {
					holder = ""
				}
			}
			if holder != f.Target {
				continue
			}
			for _, e := range evs {
				if e.At.After(f.At) && isAcquisition(e.Event) && e.Worker != f.Target {
					r.takeover = append(r.takeover, e.At.Sub(f.At))
					break
				}
			}
		}
	}
	return r
}

func forward(from, to string) bool {
	return (from == "enqueued" && to == "executing") || (from == "executing" && sampledb.IsTerminal(to))
}

func isAcquisition(ev string) bool { return ev == "admitted" || ev == "takeover" || ev == "claimed" }

func jobFromPath(p string) string {
	const pfx = "/sampledb/v2/job/"
	if !strings.HasPrefix(p, pfx) {
		return ""
	}
	rest := strings.TrimPrefix(p, pfx)
	id, _, _ := strings.Cut(rest, "/")
	if id == "search" {
		return ""
	}
	return id
}

func workerOf(ua string) string {
	i, j := strings.LastIndex(ua, "("), strings.LastIndex(ua, ")")
	if i < 0 || j < i || !strings.HasPrefix(ua, "analysisfleet/") {
		return ""
	}
	return ua[i+1 : j]
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

// print writes the report as a table and fails the test on violations.
func (r *report) print(t *testing.T, title string, extra ...string) {
	t.Helper()
	row := func(k, v string) string { return fmt.Sprintf("  %-34s %s", k, v) }
	lines := []string{"", "── " + title + " " + strings.Repeat("─", max(0, 60-len(title)))}
	lines = append(lines,
		row("jobs produced", fmt.Sprint(r.produced)),
		row("terminal", fmt.Sprintf("%d  (success %d, failed %d, aborted %d, timeout %d)", r.terminal,
			r.byState["success"], r.byState["failed"], r.byState["aborted"], r.byState["timeout"])),
		row("lost (not terminal)", fmt.Sprint(len(r.lost))),
		row("two terminal states", fmt.Sprint(len(r.doubleTerminal))),
		row("backward transitions", fmt.Sprint(len(r.backwards))),
		row("zombie requests", fmt.Sprint(len(r.zombies))),
		row("refused transitions (412)", fmt.Sprint(r.refused)),
	)
	var vendors []string
	for v := range r.starts {
		vendors = append(vendors, v)
	}
	sort.Strings(vendors)
	for _, v := range vendors {
		lines = append(lines, row("vendor starts "+v, fmt.Sprintf("%d (restarted %d)", r.starts[v], r.restarts[v])))
	}
	if len(r.abortLatency) > 0 {
		lines = append(lines, row("abort latency p50/p99/max", fmt.Sprintf("%s / %s / %s (%d aborts)",
			pct(r.abortLatency, .5).Round(time.Millisecond), pct(r.abortLatency, .99).Round(time.Millisecond),
			pct(r.abortLatency, 1).Round(time.Millisecond), len(r.abortLatency))))
	}
	if len(r.takeover) > 0 {
		lines = append(lines, row("takeover time p50/max", fmt.Sprintf("%s / %s (%d jobs)",
			pct(r.takeover, .5).Round(time.Millisecond), pct(r.takeover, 1).Round(time.Millisecond), len(r.takeover))))
	}
	lines = append(lines, extra...)
	t.Log(strings.Join(lines, "\n"))
	for _, list := range [][]string{r.lost, r.doubleTerminal, r.backwards, r.zombies} {
		for i, v := range list {
			if i == 10 {
				t.Errorf("… and %d more", len(list)-10)
				break
			}
			t.Error(v)
		}
	}
}
