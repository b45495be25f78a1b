package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/internal/textfmt"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/state"
)

// Job states as the console shows them (the ledger's view).
const (
	stateRunning   = "running"   // leased to a live worker, no outcome yet
	stateAborting  = "aborting"  // running, abort requested
	stateFinishing = "finishing" // outcome decided, waiting for SampleDB
	stateClaimable = "claimable" // lease expired or released: the next claim takes it
	stateOrphaned  = "orphaned"  // no lease at all (the reconciler adopts it)
)

var jobStates = []string{stateRunning, stateAborting, stateFinishing, stateClaimable, stateOrphaned}

// jobRow is one job of the ledger, as listed.
type jobRow struct {
	ID       string
	State    string
	Owner    string
	Token    int64
	Deadline time.Time // lease deadline; zero: none; epoch: released
	Created  time.Time
	SHA256   string
	Platform string
	Customer string
	Vendors  []string
	Done     int
	Total    int
	Outcome  string
	Source   string
}

// snapshot is the fleet-wide figures, read at most once per interval.
type snapshot struct {
	At       time.Time // Redis time of the read
	Jobs     []jobRow  // oldest first
	ByState  map[string]int
	JobsAt   time.Time     // Redis time of the job listing (it may be older than At)
	JobsTook time.Duration // how long the listing took
	Workers  []workerRow
	Vendors  []vendorStat // the live workers' calls per vendor, summed
	Leases   state.LeaseSummary
	// Moves are the newest lease hand-overs of the lease log, newest first:
	// takeover, claimed, released, forced (state.Store.LeaseLog).
	Moves    []state.LeaseEvent
	Outbox   int64
	Finished int64
	Cool     []state.CoolDownInfo
	Limiters []limiterRow
	Audit    []auditRow
	Kafka    kafkaRow
	Errors   []string
}

type workerRow struct {
	ID       string
	Seen     time.Time
	InFlight int
	Held     int64 // jobs its live sessions hold
	Sessions int
	Expired  bool // a session of it expired (its jobs are claimable)
	// VendorStats are the worker's calls per vendor since StatsSince, as
	// it published them with its last renewal (runner.WorkerStats).
	VendorStats []vendorStat
	StatsSince  time.Time
	StatsErr    string
	// Draining: the worker said it is draining (SIGTERM), since
	// DrainingSince (runner.WorkerStats).
	Draining      bool
	DrainingSince time.Time
}

// vendorStat is calls to one vendor: one worker's, or the fleet's.
// Retryable is Throttled + ServerError + Network (a worker of the older
// format published Retryable alone).
type vendorStat struct {
	Vendor                          string
	OK, Retryable, Permanent        int64
	Throttled, ServerError, Network int64
	Waiting, Running                int
}

func (v vendorStat) total() int64 { return v.OK + v.Retryable + v.Permanent }

// RetryPct is the share of calls answered 429, 5xx or timed out.
func (v vendorStat) RetryPct() int64 {
	return v.Retryable * 100 / max(v.total(), 1)
}

// ThrottledRate is the share of calls answered 429 ("5.9%").
func (v vendorStat) ThrottledRate() string { return rate(v.Throttled, v.total()) }

// ServerErrorRate is the share of calls answered 5xx.
func (v vendorStat) ServerErrorRate() string { return rate(v.ServerError, v.total()) }

func rate(n, of int64) string {
	if of == 0 {
		return "–"
	}
	return strconv.FormatFloat(float64(n)*100/float64(of), 'f', 1, 64) + "%"
}

// limiterRow is one fleet-wide rate limiter's state in Redis.
type limiterRow struct {
	Name   string
	Vendor string
	Ahead  time.Duration // how far the budget is spent ahead of now (0: idle)
	Cool   time.Duration // cool-down left after a 429 (0: none)
	Tenant string        // "" = the credential's own budget
}

type kafkaRow struct {
	Configured bool
	Lag        *kafkaview.Lag
	LagErr     string
	DLQ        *DeadLetters
	DLQErr     string
	DLQOff     bool
}

func (s *Server) snapshot(ctx context.Context) (*snapshot, error) {
	v, err := s.remember(ctx, "snapshot", func(ctx context.Context) (any, error) { return s.read(ctx) })
	if err != nil {
		return nil, err
	}
	return v.(*snapshot), nil
}

// read computes a snapshot. A part that cannot be read is reported in
// Errors; only an unreachable Redis fails the whole.
func (s *Server) read(ctx context.Context) (*snapshot, error) {
	s.reads.Add(1)
	now, err := s.st.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	sn := &snapshot{At: now}
	fail := func(err error) { sn.Errors = append(sn.Errors, s.scrub(err.Error())) }
	if err := s.scanJobs(ctx, now, sn); err != nil {
		fail(err)
	}
	if sum, err := s.st.LeaseSummary(ctx, s.st.LeaseTTL()/3, 50); err != nil {
		fail(err)
	} else {
		sn.Leases = sum
	}
	if ws, err := s.st.Workers(ctx); err != nil {
		fail(err)
	} else {
		for _, w := range ws {
			wr := workerRow{ID: w.ID, Seen: w.Seen, InFlight: w.InFlight}
			if ws, err := runner.DecodeWorkerStats(w.Stats); err != nil {
				wr.StatsErr = "unreadable stats"
			} else {
				wr.StatsSince, wr.Draining, wr.DrainingSince = ws.Since, ws.Draining, ws.DrainingSince
				for v, vs := range ws.Vendors {
					wr.VendorStats = append(wr.VendorStats, vendorStat{Vendor: v, OK: vs.OK, Retryable: vs.Retryable,
						Permanent: vs.Permanent, Throttled: vs.Throttled, ServerError: vs.ServerError, Network: vs.Network,
						Waiting: vs.Waiting, Running: vs.Running})
				}
				sort.Slice(wr.VendorStats, func(i, j int) bool { return wr.VendorStats[i].Vendor < wr.VendorStats[j].Vendor })
				sn.Vendors = addStats(sn.Vendors, wr.VendorStats)
			}
			for _, se := range sn.Leases.Sessions {
				if se.Worker == w.ID {
					wr.Sessions++
					wr.Held += se.Jobs
					wr.Expired = wr.Expired || se.Expired
				}
			}
			sn.Workers = append(sn.Workers, wr)
		}
	}
	if evs, err := s.st.LeaseLog(ctx, 50, leaseMoves...); err != nil {
		fail(err)
	} else {
		sn.Moves = evs
	}
	if n, err := s.st.OutboxDepth(ctx); err != nil {
		fail(fmt.Errorf("outbox: %w", err))
	} else {
		sn.Outbox = n
	}
	if n, err := s.st.FinishedCount(ctx); err != nil {
		fail(fmt.Errorf("finished: %w", err))
	} else {
		sn.Finished = n
	}
	if cds, err := s.st.CoolDowns(ctx); err != nil {
		fail(err)
	} else {
		sn.Cool = cds
	}
	if ls, err := s.limiters(ctx, now); err != nil {
		fail(err)
	} else {
		sn.Limiters = ls
	}
	if a, err := s.audit(ctx, 20); err != nil {
		fail(err)
	} else {
		sn.Audit = a
	}
	if k := s.cfg.Kafka; k != nil {
		sn.Kafka.Configured = true
		if lag, err := k.Lag(ctx); err != nil {
			sn.Kafka.LagErr = s.scrub(err.Error())
		} else {
			sn.Kafka.Lag = lag
		}
		if d, err := k.DeadLetters(ctx); err != nil {
			sn.Kafka.DLQErr = s.scrub(err.Error())
			sn.Kafka.DLQ = d
		} else {
			sn.Kafka.DLQ, sn.Kafka.DLQOff = d, d == nil
		}
	}
	return sn, nil
}

// scanJobs fills the snapshot's job list. The list is a SCAN of every job
// record, so it is read again only when it is older than the interval and
// than five times the last scan took: a ledger of 100,000 jobs is not
// scanned back to back, however many browsers watch.
func (s *Server) scanJobs(ctx context.Context, now time.Time, sn *snapshot) error {
	s.jobsMu.Lock()
	defer s.jobsMu.Unlock()
	if s.jobs != nil && s.now().Sub(s.jobs.at) < max(s.cfg.Interval, 5*s.jobs.took) {
		sn.Jobs, sn.ByState, sn.JobsAt, sn.JobsTook = s.jobs.rows, s.jobs.byState, s.jobs.redisAt, s.jobs.took
		return nil
	}
	start := s.now()
	scan := &jobScan{at: start, redisAt: now, byState: map[string]int{}}
	err := s.st.ListJobs(ctx, 0, func(e state.JobEntry) error {
		r := rowOf(e, now)
		scan.byState[r.State]++
		scan.rows = append(scan.rows, r)
		return nil
	})
	sort.Slice(scan.rows, func(i, j int) bool { return less(scan.rows[i], scan.rows[j]) })
	scan.took = s.now().Sub(start)
	if err == nil {
		s.jobs = scan
	}
	sn.Jobs, sn.ByState, sn.JobsAt, sn.JobsTook = scan.rows, scan.byState, now, scan.took
	return err
}

// leaseMoves are the lease-log events the leases page lists: a job
// changing hands, not its admission or completion.
var leaseMoves = []string{"takeover", "claimed", "released", "forced"}

// jobScan is one listing of the ledger's jobs.
type jobScan struct {
	at, redisAt time.Time
	took        time.Duration
	rows        []jobRow
	byState     map[string]int
}

// addStats adds a worker's per-vendor calls to the fleet's totals.
func addStats(total, add []vendorStat) []vendorStat {
	for _, a := range add {
		i := sort.Search(len(total), func(i int) bool { return total[i].Vendor >= a.Vendor })
		if i == len(total) || total[i].Vendor != a.Vendor {
			total = append(total[:i], append([]vendorStat{{Vendor: a.Vendor}}, total[i:]...)...)
		}
		t := &total[i]
		t.OK, t.Retryable, t.Permanent = t.OK+a.OK, t.Retryable+a.Retryable, t.Permanent+a.Permanent
		t.Throttled, t.ServerError, t.Network = t.Throttled+a.Throttled, t.ServerError+a.ServerError, t.Network+a.Network
		t.Waiting, t.Running = t.Waiting+a.Waiting, t.Running+a.Running
	}
	return total
}

func less(a, b jobRow) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.ID < b.ID
}

// rowOf reads a ledger entry, judging its lease by now (Redis time).
func rowOf(e state.JobEntry, now time.Time) jobRow {
	rec := e.Record
	r := jobRow{ID: rec.ID, Owner: rec.Owner, Token: rec.Token, Created: rec.Created, Source: rec.Source}
	if msg, err := job.Parse(rec.Msg); err == nil {
		r.SHA256 = strings.ToLower(msg.Submission.Sample.ID)
		r.Platform = msg.Classification.Platform
		r.Customer = msg.Submission.Customer
	}
	plan, _, _ := rec.Plan()
	kinds := map[string]bool{}
	for _, p := range plan {
		kinds[p.Kind] = true
	}
	for _, k := range rec.TaskKinds() {
		kinds[k] = true
		if cp, err := rec.Task(k); err == nil && cp.Done() {
			r.Done++
		}
	}
	r.Total = len(kinds)
	for k := range kinds {
		if v := edr.Vendor(k); !slices.Contains(r.Vendors, v) {
			r.Vendors = append(r.Vendors, v)
		}
	}
	sort.Strings(r.Vendors)
	if o, err := rec.Decision(); err == nil && o != nil {
		r.Outcome = o.State
	} else if rec.Outcome() != nil {
		r.Outcome = "unreadable"
	}
	if e.HasLease {
		r.Deadline = e.Deadline
	}
	_, aborting := rec.Fields[state.FieldAbort]
	switch {
	case r.Outcome != "":
		r.State = stateFinishing
	case !e.HasLease:
		r.State = stateOrphaned
	case !e.Deadline.After(now):
		r.State = stateClaimable
	case aborting:
		r.State = stateAborting
	default:
		r.State = stateRunning
	}
	return r
}

// jobFilter is the jobs page's query: every field is a URL parameter.
type jobFilter struct {
	State    string
	Vendor   string
	Customer string
	SHA256   string
	Age      string // "" or one of ageChoices
	After    string // cursor: "<created ms>:<id>" of the last row shown
	Limit    int
}

// ageChoices are the age filter's values: "<" newer than, ">" older than.
var ageChoices = []struct{ Value, Label string }{
	{"", "any age"}, {"<5m", "newer than 5 minutes"}, {"<1h", "newer than 1 hour"},
	{">15m", "older than 15 minutes"}, {">1h", "older than 1 hour"}, {">4h", "older than 4 hours"},
	{">24h", "older than 24 hours"},
}

var hexRE = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

func filterOf(q map[string][]string) (jobFilter, []string) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	f := jobFilter{State: get("state"), Vendor: get("vendor"), Customer: textfmt.Clip(get("customer"), 200),
		SHA256: strings.ToLower(get("sha256")), Age: get("age"), After: get("after"), Limit: 50}
	var bad []string
	if f.State != "" && !slices.Contains(jobStates, f.State) {
		bad = append(bad, fmt.Sprintf("state %q: want one of %s", textfmt.Clip(f.State, 40), strings.Join(jobStates, ", ")))
		f.State = ""
	}
	if f.SHA256 != "" && !hexRE.MatchString(f.SHA256) {
		bad = append(bad, "sample hash: want hexadecimal digits (a prefix is enough)")
		f.SHA256 = ""
	}
	okAge := false
	for _, a := range ageChoices {
		okAge = okAge || a.Value == f.Age
	}
	if !okAge {
		bad = append(bad, fmt.Sprintf("age %q: not one of the choices", textfmt.Clip(f.Age, 40)))
		f.Age = ""
	}
	if n, err := strconv.Atoi(get("limit")); err == nil && n > 0 {
		f.Limit = min(n, 500)
	}
	return f, bad
}

func (f jobFilter) match(r jobRow, now time.Time) bool {
	if f.State != "" && r.State != f.State {
		return false
	}
	if f.Vendor != "" {
		v, _, _ := strings.Cut(f.Vendor, ".")
		if !slices.Contains(r.Vendors, v) {
			return false
		}
	}
	if f.Customer != "" && r.Customer != f.Customer {
		return false
	}
	if f.SHA256 != "" && !strings.HasPrefix(r.SHA256, f.SHA256) {
		return false
	}
	if f.Age != "" {
		d, _ := time.ParseDuration(f.Age[1:])
		age := now.Sub(r.Created)
		if (f.Age[0] == '<' && age >= d) || (f.Age[0] == '>' && age <= d) {
			return false
		}
	}
	return true
}

// query renders the filter as URL parameters (the cursor replaced by after).
func (f jobFilter) query(after string) string {
	q := make([]string, 0, 6)
	add := func(k, v string) {
		if v != "" {
			q = append(q, k+"="+urlQueryEscape(v))
		}
	}
	add("state", f.State)
	add("vendor", f.Vendor)
	add("customer", f.Customer)
	add("sha256", f.SHA256)
	add("age", f.Age)
	add("after", after)
	if len(q) == 0 {
		return ""
	}
	return "?" + strings.Join(q, "&")
}

func cursorOf(r jobRow) string { return strconv.FormatInt(r.Created.UnixMilli(), 10) + ":" + r.ID }

// afterCursor reports whether r comes after the cursor in the list order.
func afterCursor(r jobRow, cursor string) bool {
	ms, id, ok := strings.Cut(cursor, ":")
	n, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		return true
	}
	c := r.Created.UnixMilli()
	return c > n || (c == n && r.ID > id)
}

// jobDetail is one job's page.
type jobDetail struct {
	ID        string
	Now       time.Time
	Found     bool   // the ledger knows the job (record, tombstone or history)
	Record    bool   // the record is there (the job is not finished)
	Row       jobRow // when Record
	Tombstone string // the terminal state, when finished
	Aborting  bool
	Message   *job.Message
	Timeline  []state.Event
	Tasks     []taskRow
	Result    *results.Summary
	ResultRaw string // a summary that does not parse, shown as text
	Refused   *state.DeliveryRefusal
	Decision  *state.Outcome
}

type taskRow struct {
	Kind      string
	Timeout   time.Duration
	OpState   string
	TaskID    string
	Ref       string
	Attempts  int
	Polls     int
	Progress  string
	LastError string
	NextPoll  time.Time
	Error     string
	Cancel    string
	Result    *edr.Result
}

func (s *Server) jobDetail(ctx context.Context, id string) (*jobDetail, error) {
	v, err := s.remember(ctx, "job:"+id, func(ctx context.Context) (any, error) { return s.readJob(ctx, id) })
	if err != nil {
		return nil, err
	}
	return v.(*jobDetail), nil
}

func (s *Server) readJob(ctx context.Context, id string) (*jobDetail, error) {
	now, err := s.st.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	d := &jobDetail{ID: id, Now: now}
	rec, err := s.st.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		d.Found, d.Record = true, true
		dl, has, err := s.st.LeaseDeadline(ctx, id)
		if err != nil {
			return nil, err
		}
		d.Row = rowOf(state.JobEntry{Record: rec, Deadline: dl, HasLease: has}, now)
		_, d.Aborting = rec.Fields[state.FieldAbort]
		if msg, err := job.Parse(rec.Msg); err == nil {
			d.Message = msg
		}
		d.Tasks = s.tasksOf(rec)
		d.Refused = rec.Refusal()
		if o, err := rec.Decision(); err == nil {
			d.Decision = o
		}
	} else if term, ok, err := s.st.Tombstone(ctx, id); err != nil {
		return nil, err
	} else if ok {
		d.Found, d.Tombstone = true, term
	}
	if d.Timeline, err = s.st.Timeline(ctx, id); err != nil {
		return nil, err
	}
	raw, err := s.st.Result(ctx, id)
	if err != nil {
		return nil, err
	}
	if raw != nil {
		var sum results.Summary
		if err := json.Unmarshal(raw, &sum); err == nil {
			d.Result = &sum
		} else {
			d.ResultRaw = textfmt.Clip(string(raw), 2000)
		}
	}
	d.Found = d.Found || len(d.Timeline) > 0 || raw != nil
	return d, nil
}

func (s *Server) tasksOf(rec *state.Record) []taskRow {
	plan, _, _ := rec.Plan()
	var out []taskRow
	seen := map[string]bool{}
	add := func(kind string, timeout time.Duration) {
		seen[kind] = true
		t := taskRow{Kind: kind, Timeout: timeout, OpState: "not started"}
		cp, err := rec.Task(kind)
		switch {
		case err != nil:
			t.OpState, t.Error = "unreadable", "the checkpoint does not parse"
		case cp == nil:
		default:
			t.TaskID = string(cp.TaskID)
			t.Attempts, t.Polls, t.Progress = cp.Attempts, cp.Polls, cp.Progress
			t.LastError, t.Error, t.Cancel, t.Result = cp.LastError, cp.Error, cp.Cancel, cp.Result
			if cp.NextPoll > 0 {
				t.NextPoll = time.UnixMilli(cp.NextPoll)
			}
			if len(cp.Ref) > 0 {
				t.Ref = textfmt.Clip(string(cp.Ref), 300)
			}
			switch {
			case cp.State != "":
				t.OpState = cp.State
			case len(cp.Ref) > 0:
				t.OpState = "running at the vendor"
			case cp.Intent != nil:
				t.OpState = "starting"
			case cp.TaskID != "":
				t.OpState = "task created"
			}
		}
		out = append(out, t)
	}
	for _, p := range plan {
		add(p.Kind, time.Duration(p.Timeout))
	}
	for _, k := range rec.TaskKinds() {
		if !seen[k] {
			add(k, 0)
		}
	}
	return out
}

// limiters lists the fleet-wide rate limiters (state.Store.Limiters): how
// far each budget is spent ahead of now, and its cool-down.
func (s *Server) limiters(ctx context.Context, now time.Time) ([]limiterRow, error) {
	ls, err := s.st.Limiters(ctx)
	if err != nil || len(ls) == 0 {
		return nil, err
	}
	cool := map[string]time.Duration{}
	if cds, err := s.st.CoolDowns(ctx); err == nil {
		for _, c := range cds {
			cool[c.Name] = c.Left
		}
	}
	out := make([]limiterRow, 0, len(ls))
	for _, li := range ls {
		l := limiterRow{Name: li.Name}
		if base, tenant, ok := strings.Cut(li.Name, ":t:"); ok {
			l.Name, l.Tenant = base, tenant
		}
		l.Vendor, _, _ = strings.Cut(l.Name, ":")
		l.Ahead = max(li.TAT.Sub(now), 0)
		if l.Tenant == "" {
			l.Cool = cool[l.Name]
		}
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Tenant < out[j].Tenant
	})
	return out, nil
}

// auditRow is one entry of the audit stream. Job is the job acted on, or
// for a dead-letter replay what it chose ("reason …", "letter P@O").
type auditRow struct {
	At                       time.Time
	Who, Action, Job, Result string
}

// OnJob reports whether the entry names a job (a link to its page).
func (a auditRow) OnJob() bool { return a.Action != actionReplay }

func (s *Server) auditKey() string { return "{" + s.st.Namespace() + "}:audit" }

// audit returns the newest n audit entries, newest first.
func (s *Server) audit(ctx context.Context, n int64) ([]auditRow, error) {
	msgs, err := s.st.Redis().XRevRangeN(ctx, s.auditKey(), "+", "-", n).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []auditRow
	for _, m := range msgs {
		str := func(k string) string { v, _ := m.Values[k].(string); return v }
		ms, _ := strconv.ParseInt(str("at"), 10, 64)
		out = append(out, auditRow{At: time.UnixMilli(ms), Who: str("who"), Action: str("action"), Job: str("job"),
			Result: str("result")})
	}
	return out, nil
}

// record appends an action to the audit stream.
func (s *Server) record(ctx context.Context, who, action, id, result string) error {
	return s.st.Redis().XAdd(ctx, &redis.XAddArgs{Stream: s.auditKey(), MaxLen: AuditMaxLen, Approx: true,
		Values: []any{"who", who, "action", action, "job", id, "result", result,
			"at", strconv.FormatInt(s.now().UnixMilli(), 10)}}).Err()
}
