package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/state"
)

// Job states as fleetctl shows them (the ledger's view, not SampleDB's).
const (
	// stateRunning: leased to a live worker, no outcome decided yet.
	stateRunning = "running"
	// stateFinishing: the terminal outcome is decided (the job is in the
	// outbox) and waits for SampleDB's acknowledgement.
	stateFinishing = "finishing"
	// stateClaimable: the lease expired (or was released): the next worker
	// with a free slot claims the job and resumes it.
	stateClaimable = "claimable"
)

// jobLine is one job of `fleetctl jobs -o json`.
type jobLine struct {
	ID            string   `json:"id"`
	State         string   `json:"state"`
	Owner         string   `json:"owner"`
	Token         int64    `json:"token"`
	LeaseDeadline jsonTime `json:"leaseDeadline"` // null: no lease entry
	LeaseExpired  bool     `json:"leaseExpired"`
	Planned       bool     `json:"planned"`
	TasksDone     int      `json:"tasksDone"`
	TasksTotal    int      `json:"tasksTotal"`
	Outcome       string   `json:"outcome,omitempty"`
	OutcomeReason string   `json:"outcomeReason,omitempty"`
	Source        string   `json:"source"`
	Created       jsonTime `json:"created"`
	SHA256        string   `json:"sha256,omitempty"`
	Platform      string   `json:"platform,omitempty"`
	Vendors       []string `json:"vendors"`

	created time.Time
}

type jobsReport struct {
	Now     jsonTime  `json:"now"`     // Redis time the states are judged by
	Total   int       `json:"total"`   // jobs in the ledger
	Matched int       `json:"matched"` // jobs the filters matched
	Jobs    []jobLine `json:"jobs"`    // at most --limit of them, oldest first
}

func (c *cli) jobs(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("jobs", "jobs [--state running|finishing|claimable] [--worker W] [--vendor V] [--limit N] [-o json]",
		&o, time.Minute)
	want := fs.String("state", "", "only jobs in this state: running, finishing (outcome decided) or claimable (lease expired)")
	owner := fs.String("worker", "", "only jobs this worker holds")
	vendor := fs.String("vendor", "", "only jobs with a task for this vendor (cbc, cblr, cytomic, sophos) or task kind")
	limit := fs.Int("limit", 100, "show at most N jobs (0: all)")
	if _, err := parse(fs, &o, args, 0); err != nil {
		return err
	}
	switch *want {
	case "", stateRunning, stateFinishing, stateClaimable:
	default:
		return usageErr("--state %q: want running, finishing or claimable", *want)
	}
	if *limit < 0 {
		return usageErr("--limit must not be negative")
	}
	st, ctx, done, err := c.ledger(ctx, o.timeout)
	if err != nil {
		return err
	}
	defer done()

	now, err := st.Now(ctx)
	if err != nil {
		return err
	}
	rep := jobsReport{Now: jsonTime(now), Jobs: []jobLine{}}
	err = st.ListJobs(ctx, 0, func(e state.JobEntry) error {
		rep.Total++
		l := lineOf(e, now)
		if !matches(l, *want, *owner, *vendor) {
			return nil
		}
		rep.Matched++
		rep.Jobs = append(rep.Jobs, l)
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(rep.Jobs, func(i, j int) bool {
		a, b := rep.Jobs[i], rep.Jobs[j]
		if !a.created.Equal(b.created) {
			return a.created.Before(b.created)
		}
		return a.ID < b.ID
	})
	if *limit > 0 && len(rep.Jobs) > *limit {
		rep.Jobs = rep.Jobs[:*limit]
	}
	if o.json() {
		return writeJSON(c.stdout, rep)
	}
	t := newTable(c.stdout, "JOB", "STATE", "OWNER", "TOKEN", "LEASE", "TASKS", "OUTCOME", "SOURCE")
	for _, l := range rep.Jobs {
		tasks := ""
		if l.Planned {
			tasks = fmt.Sprintf("%d/%d", l.TasksDone, l.TasksTotal)
		}
		t.row(l.ID, l.State, l.Owner, strconv.FormatInt(l.Token, 10), textfmt.Lease(time.Time(l.LeaseDeadline), now),
			tasks, l.Outcome, l.Source)
	}
	t.flush()
	fmt.Fprintf(c.stdout, "%d of %d matched", rep.Matched, rep.Total)
	if len(rep.Jobs) < rep.Matched {
		fmt.Fprintf(c.stdout, "; showing the %d oldest (--limit 0 for all)", len(rep.Jobs))
	}
	fmt.Fprintln(c.stdout)
	return nil
}

// lineOf reads a ledger entry into a job line, judging the lease by now
// (Redis time).
func lineOf(e state.JobEntry, now time.Time) jobLine {
	v := runner.View(e.Record)
	l := jobLine{ID: v.ID, Owner: v.Owner, Token: v.Token, Source: v.Source, Created: jsonTime(v.Created),
		created: v.Created, SHA256: v.SHA256, Platform: v.Platform, Vendors: vendorsOf(v)}
	if e.HasLease {
		l.LeaseDeadline = jsonTime(e.Deadline)
		if e.Deadline.UnixMilli() == 0 {
			l.LeaseDeadline = jsonTime(time.UnixMilli(0).UTC()) // released: not "no lease"
		}
		l.LeaseExpired = !e.Deadline.After(now)
	}
	_, l.Planned = e.Record.Fields["plan"]
	l.TasksTotal, l.TasksDone = progress(v)
	if v.Outcome != nil {
		l.Outcome, l.OutcomeReason = v.Outcome.State, v.Outcome.Reason
	} else if e.Record.Outcome() != nil {
		l.Outcome = "unreadable"
	}
	switch {
	case l.Outcome != "":
		l.State = stateFinishing
	case l.LeaseExpired:
		l.State = stateClaimable
	default:
		l.State = stateRunning
	}
	return l
}

// progress counts the plan's tasks and those that ended.
func progress(v runner.JobView) (total, done int) {
	ended := map[string]bool{}
	for _, t := range v.Tasks {
		ended[t.Kind] = t.State != ""
	}
	for _, p := range v.Plan {
		if ended[p.Kind] {
			done++
		}
	}
	return len(v.Plan), done
}

// vendorsOf lists the vendors of the job's planned and checkpointed tasks.
func vendorsOf(v runner.JobView) []string {
	seen := map[string]bool{}
	out := []string{}
	add := func(kind string) {
		vendor := edr.Vendor(kind)
		if !seen[vendor] {
			seen[vendor] = true
			out = append(out, vendor)
		}
	}
	for _, p := range v.Plan {
		add(p.Kind)
	}
	for _, t := range v.Tasks {
		add(t.Kind)
	}
	sort.Strings(out)
	return out
}

func matches(l jobLine, want, owner, vendor string) bool {
	switch want {
	case stateRunning:
		if l.State != stateRunning {
			return false
		}
	case stateFinishing:
		if l.Outcome == "" {
			return false
		}
	case stateClaimable:
		if !l.LeaseExpired {
			return false
		}
	}
	if owner != "" && l.Owner != owner {
		return false
	}
	if vendor != "" {
		v, _, _ := strings.Cut(vendor, ".")
		found := false
		for _, x := range l.Vendors {
			found = found || x == v
		}
		if !found {
			return false
		}
	}
	return true
}

// jobReport is `fleetctl job <id> -o json`.
type jobReport struct {
	ID string `json:"id"`
	// Finished is the terminal state of a job whose record is gone and
	// whose tombstone remains (for 7 days after the end).
	Finished string          `json:"finished,omitempty"`
	State    string          `json:"state,omitempty"`
	Lease    *leaseView      `json:"lease,omitempty"`
	Job      *runner.JobView `json:"job,omitempty"`
	History  []historyEvent  `json:"history"`
	// Timeline is the job's own record of what happened to it (the last
	// state.MaxTimeline events; kept state.DefaultHistoryTTL after the end).
	Timeline []timelineEvent `json:"timeline"`
	// Result is the summary published for a finished job (results.Summary).
	Result json.RawMessage `json:"result,omitempty"`
}

type timelineEvent struct {
	At     jsonTime `json:"at"`
	Event  string   `json:"event"`
	Worker string   `json:"worker,omitempty"`
	Token  int64    `json:"token,omitempty"`
	Detail string   `json:"detail,omitempty"`
}

type leaseView struct {
	Deadline jsonTime `json:"deadline"`
	Expired  bool     `json:"expired"`
	Released bool     `json:"released"`
}

type historyEvent struct {
	At     jsonTime `json:"at"`
	Event  string   `json:"event"`
	Worker string   `json:"worker"`
	Token  int64    `json:"token"`
}

func (c *cli) job(ctx context.Context, args []string) error {
	var o common
	fs := c.newFlags("job", "job <id> [-o json]", &o, time.Minute)
	id, err := parseJobID(fs, &o, args)
	if err != nil {
		return err
	}
	st, ctx, done, err := c.ledger(ctx, o.timeout)
	if err != nil {
		return err
	}
	defer done()

	now, err := st.Now(ctx)
	if err != nil {
		return err
	}
	rec, err := st.Get(ctx, id)
	if err != nil {
		return err
	}
	rep := jobReport{ID: id, History: []historyEvent{}, Timeline: []timelineEvent{}}
	if rec == nil {
		term, ok, err := st.Tombstone(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("job %s: not in the ledger (no record and no tombstone; tombstones expire %s after a job ends)",
				id, textfmt.Duration(state.DefaultTombstoneTTL))
		}
		rep.Finished = term
	} else {
		v := runner.View(rec)
		rep.Job = &v
		dl, has, err := st.LeaseDeadline(ctx, id)
		if err != nil {
			return err
		}
		l := lineOf(state.JobEntry{Record: rec, Deadline: dl, HasLease: has}, now)
		rep.State = l.State
		if has {
			rep.Lease = &leaseView{Deadline: jsonTime(dl), Expired: l.LeaseExpired, Released: dl.UnixMilli() == 0}
		}
	}
	evs, err := st.JobLeaseHistory(ctx, id)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		rep.History = append(rep.History, historyEvent{At: jsonTime(ev.At), Event: ev.Event, Worker: ev.Worker, Token: ev.Token})
	}
	tl, err := st.Timeline(ctx, id)
	if err != nil {
		return err
	}
	for _, ev := range tl {
		rep.Timeline = append(rep.Timeline, timelineEvent{At: jsonTime(ev.At), Event: ev.Ev, Worker: ev.Worker, Token: ev.Token, Detail: ev.Detail})
	}
	if rep.Job == nil {
		if rep.Result, err = st.Result(ctx, id); err != nil {
			return err
		}
		if rep.Result != nil && !json.Valid(rep.Result) {
			rep.Result = nil // not ours to print raw
		}
	}
	if o.json() {
		return writeJSON(c.stdout, rep)
	}
	printJob(c.stdout, rep, now)
	return nil
}

func printJob(w io.Writer, rep jobReport, now time.Time) {
	kv(w, "job", rep.ID)
	if rep.Job == nil {
		kv(w, "state", "finished: "+rep.Finished)
		kv(w, "", fmt.Sprintf("the record is gone; its tombstone keeps redeliveries out for %s after the end,",
			textfmt.Duration(state.DefaultTombstoneTTL)))
		kv(w, "", fmt.Sprintf("its timeline and result summary are kept for %s", textfmt.Duration(state.DefaultHistoryTTL)))
	} else {
		v := rep.Job
		kv(w, "state", rep.State)
		owner := v.Owner
		if owner == "" {
			owner = "none (released)"
		}
		kv(w, "owner", owner)
		kv(w, "token", strconv.FormatInt(v.Token, 10))
		lease := "none"
		if rep.Lease != nil {
			lease = textfmt.Lease(time.Time(rep.Lease.Deadline), now)
			if !rep.Lease.Released {
				lease += " (" + stamp(time.Time(rep.Lease.Deadline)) + ")"
			}
			if rep.Lease.Expired {
				lease += ": claimable"
			}
		}
		kv(w, "lease", lease)
		kv(w, "created", stamp(v.Created)+" ("+textfmt.Relative(v.Created, now)+")")
		kv(w, "source", v.Source)
		sample := v.SHA256
		if v.Platform != "" {
			sample += " (platform " + v.Platform + ")"
		}
		kv(w, "sample", sample)
		if o := v.Outcome; o != nil {
			out := o.State
			if o.Reason != "" {
				out += ": " + o.Reason
			}
			out += fmt.Sprintf(" (decided by %s at %s; waiting for SampleDB)", o.By, stamp(o.At))
			kv(w, "outcome", out)
		} else {
			kv(w, "outcome", "not decided")
		}
		if r := v.Refused; r != nil {
			kv(w, "REFUSED", fmt.Sprintf("SampleDB has refused this terminal state %s (it holds the job as %s); last at %s (%s): %s",
				plural(int64(r.Attempts), "time", "times"), r.SampleDBState, stamp(r.Last), textfmt.Relative(r.Last, now), r.Answer))
			kv(w, "", "the owner keeps asking with backoff; fix SampleDB's side, or release the job once it is terminal there")
		}

		fmt.Fprintln(w)
		if len(v.Plan) == 0 && len(v.Tasks) == 0 {
			kv(w, "tasks", "not planned yet")
		} else {
			t := newTable(w, "TASK", "TIMEOUT", "STATE", "SAMPLEDB TASK", "VENDOR OPERATION", "PROGRESS", "ERROR", "CANCEL")
			byKind := map[string]runner.TaskView{}
			for _, tv := range v.Tasks {
				byKind[tv.Kind] = tv
			}
			planned := map[string]bool{}
			for _, p := range v.Plan {
				planned[p.Kind] = true
				timeout := ""
				if p.Timeout > 0 {
					timeout = time.Duration(p.Timeout).String()
				}
				taskRow(t, p.Kind, timeout, byKind[p.Kind])
			}
			for _, tv := range v.Tasks {
				if !planned[tv.Kind] {
					taskRow(t, tv.Kind+" (not in plan)", "", tv)
				}
			}
			t.flush()
		}
	}
	printResult(w, rep.Result)
	fmt.Fprintln(w)
	if len(rep.Timeline) > 0 {
		fmt.Fprintln(w, "timeline")
		t := newTable(w, "  TIME", "EVENT", "WORKER", "TOKEN", "DETAIL")
		for _, ev := range rep.Timeline {
			tok := ""
			if ev.Token != 0 {
				tok = strconv.FormatInt(ev.Token, 10)
			}
			t.row("  "+stampMS(time.Time(ev.At)), ev.Event, dash(ev.Worker), dash(tok), dash(ev.Detail))
		}
		t.flush()
		fmt.Fprintln(w)
	}
	if len(rep.History) == 0 {
		kv(w, "lease history", "none kept (the log keeps the last ~100,000 events)")
		return
	}
	fmt.Fprintln(w, "lease history")
	t := newTable(w, "  TIME", "EVENT", "WORKER", "TOKEN")
	for _, ev := range rep.History {
		t.row("  "+stampMS(time.Time(ev.At)), ev.Event, ev.Worker, strconv.FormatInt(ev.Token, 10))
	}
	t.flush()
}

// printResult prints a finished job's result summary: per task its state,
// rows, the hosts where the sample was seen and the files retrieved.
func printResult(w io.Writer, raw json.RawMessage) {
	if raw == nil {
		return
	}
	var s results.Summary
	if err := json.Unmarshal(raw, &s); err != nil {
		kv(w, "result", "unreadable: "+err.Error())
		return
	}
	fmt.Fprintln(w)
	head := s.State
	if s.Reason != "" {
		head += ": " + s.Reason
	}
	if s.Truncated {
		head += " (lists cut to fit; counts kept)"
	}
	kv(w, "result", head)
	t := newTable(w, "  TASK", "STATE", "ROWS", "HOSTS", "SEEN ON", "FILES")
	var files []edr.File
	for _, ts := range s.Tasks {
		rows, hosts, seen, nfiles := "-", "-", "-", "-"
		if r := ts.Result; r != nil {
			rows = strconv.FormatInt(r.Rows, 10)
			hosts = strconv.Itoa(max(r.HostsTotal, len(r.Hosts)))
			if len(r.Hosts) > 0 {
				seen = clipList(r.Hosts, 5)
			}
			nfiles = strconv.Itoa(len(r.Files))
			files = append(files, r.Files...)
		}
		st := ts.State
		if ts.Error != "" {
			st += ": " + ts.Error
		}
		t.row("  "+ts.Kind, st, rows, hosts, seen, nfiles)
	}
	t.flush()
	if len(files) > 0 {
		ft := newTable(w, "  HOST", "PATH", "SIZE", "SHA256", "MATCHES")
		for _, f := range files {
			ft.row("  "+f.Host, f.Path, strconv.FormatInt(f.Size, 10), f.SHA256, strconv.FormatBool(f.Matches))
		}
		ft.flush()
	}
}

// clipList joins up to n items and says how many more there are.
func clipList(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

func taskRow(t *table, kind, timeout string, tv runner.TaskView) {
	st := tv.State
	switch {
	case tv.Kind == "":
		st = "not started"
	case st == "" && len(tv.Ref) > 0:
		st = "running"
	case st == "":
		st = "starting"
	}
	ref := ""
	if len(tv.Ref) > 0 {
		var compact bytes.Buffer
		if err := json.Compact(&compact, tv.Ref); err == nil {
			ref = compact.String()
		} else {
			ref = string(tv.Ref)
		}
	}
	t.row(kind, timeout, st, string(tv.TaskID), clip(ref, 60), clip(tv.Progress, 40), clip(tv.Error, 60), clip(tv.Cancel, 40))
}
