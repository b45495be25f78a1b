package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Read-only queries for operators (fleetctl). None of them writes to Redis,
// none takes part in the lease protocol, and none of their answers is a
// snapshot: jobs admitted, claimed or completed while a query runs may or may
// not appear in its answer. All are safe for concurrent use.

// DefaultScanBatch is how many keys ListJobs reads per round trip when the
// caller passes 0.
const DefaultScanBatch = 200

// Now returns Redis's clock: the clock leases are judged by. On Redis
// Cluster that is the clock of the master owning the namespace's slot, where
// the scripts run; TIME carries no key, so it is asked of that master.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	node, err := s.keyNode(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("state: time: %w", err)
	}
	t, err := node.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("state: time: %w", err)
	}
	return t, nil
}

// JobEntry is one job found by ListJobs: its record and its lease.
type JobEntry struct {
	Record *Record
	// Deadline is the lease deadline (Redis time): the deadline of the
	// session holding the job, or, for a claimable job, when it became (or
	// becomes) claimable — the Unix epoch for a released one. HasLease is
	// false when neither a session nor the claimable set knows the job
	// (then nobody can claim it until the reconciler adopts it again).
	Deadline time.Time
	HasLease bool
}

// ListJobs calls fn for every job record of the namespace, in no particular
// order: a SCAN over {ns}:job:* in batches of batch keys (0 means
// DefaultScanBatch), each batch two pipelined round trips (the records,
// then their sessions' deadlines and claimable entries). A key that
// vanished between the SCAN and the read (the job completed) is skipped.
// An error from fn stops the listing and is returned.
func (s *Store) ListJobs(ctx context.Context, batch int, fn func(JobEntry) error) error {
	if batch <= 0 {
		batch = DefaultScanBatch
	}
	node, err := s.keyNode(ctx)
	if err != nil {
		return fmt.Errorf("state: list jobs: %w", err)
	}
	prefix := s.pfx + "job:"
	it := node.Scan(ctx, 0, globEscape(prefix)+"*", int64(batch)).Iterator()
	keys := make([]string, 0, batch)
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		defer func() { keys = keys[:0] }()
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.HGetAll(ctx, k)
		}
		// Per-command errors are judged below.
		_, _ = pipe.Exec(ctx)
		recs := make([]*Record, 0, len(keys))
		for i, k := range keys {
			m, err := cmds[i].Result()
			if err != nil {
				if redis.HasErrorPrefix(err, "WRONGTYPE") {
					continue // not a job record; nothing of ours
				}
				return fmt.Errorf("state: list jobs: %w", err)
			}
			if len(m) > 0 { // else completed since the SCAN
				recs = append(recs, recordFromMap(strings.TrimPrefix(k, prefix), m))
			}
		}
		es, err := s.leasesOf(ctx, recs)
		if err != nil {
			return fmt.Errorf("state: list jobs: %w", err)
		}
		for _, e := range es {
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	}
	seen := make(map[string]struct{}) // SCAN may return a key twice
	for it.Next(ctx) {
		k := it.Val()
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		keys = append(keys, k)
		if len(keys) >= batch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("state: list jobs: %w", err)
	}
	return flush()
}

// leasesOf finds each record's lease in one round trip: the deadline of
// the session it names, else its claimable entry; and its progress lines.
func (s *Store) leasesOf(ctx context.Context, recs []*Record) ([]JobEntry, error) {
	pipe := s.rdb.Pipeline()
	claim := make([]*redis.FloatCmd, len(recs))
	sess := map[string]*redis.FloatCmd{}
	lines := make([]func(), len(recs))
	for i, r := range recs {
		claim[i] = pipe.ZScore(ctx, s.kClaim, r.ID)
		lines[i] = s.linesOf(ctx, pipe, r)
		if r.Session != "" && sess[r.Session] == nil {
			sess[r.Session] = pipe.ZScore(ctx, s.kSess, r.Session)
		}
	}
	if len(recs) > 0 {
		// Per-command errors are judged below: a missing entry is redis.Nil.
		_, _ = pipe.Exec(ctx)
	}
	score := func(c *redis.FloatCmd) (time.Time, bool, error) {
		if c == nil {
			return time.Time{}, false, nil
		}
		v, err := c.Result()
		if errors.Is(err, redis.Nil) {
			return time.Time{}, false, nil
		}
		return time.UnixMilli(int64(v)), err == nil, err
	}
	out := make([]JobEntry, len(recs))
	for i, r := range recs {
		if lines[i] != nil {
			lines[i]()
		}
		e := JobEntry{Record: r}
		dl, ok, err := score(sess[r.Session])
		if err == nil && !ok {
			dl, ok, err = score(claim[i])
		}
		if err != nil {
			return nil, err
		}
		e.Deadline, e.HasLease = dl, ok
		out[i] = e
	}
	return out, nil
}

// LeaseDeadline returns the deadline of a job's lease (see JobEntry), and
// false when the job has no lease.
func (s *Store) LeaseDeadline(ctx context.Context, id string) (time.Time, bool, error) {
	sid, err := s.rdb.HGet(ctx, s.jobKey(id), FieldSession).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return time.Time{}, false, fmt.Errorf("state: lease deadline: %w", err)
	}
	es, err := s.leasesOf(ctx, []*Record{{ID: id, Session: sid}})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("state: lease deadline: %w", err)
	}
	return es[0].Deadline, es[0].HasLease, nil
}

// SessionInfo is one worker session in the ledger.
type SessionInfo struct {
	ID       string
	Worker   string
	Deadline time.Time // Redis time
	Jobs     int64     // jobs it holds (for an expired session: not yet reaped)
	// Expired: the deadline passed; the next claim makes its jobs claimable.
	Expired bool
}

// DueLease is a claimable job.
type DueLease struct {
	ID    string
	Owner string // the owner it was released or reaped from, if known
	Token int64
	// Deadline is when it became claimable (the Unix epoch: released).
	Deadline time.Time
	// Expired is true when any worker's next claim may take it (false: an
	// adopted job whose delay has not run out).
	Expired bool
	// Decided: the job's terminal outcome is decided (it is in the outbox).
	Decided bool
}

// LeaseSummary counts the ledger's leases against Redis time.
type LeaseSummary struct {
	Now time.Time // Redis time of the count
	// Sessions lists every session, earliest deadline first (at most 1000).
	Sessions []SessionInfo
	// Held counts the jobs of live sessions.
	Held int64
	// Claimable counts the jobs any worker's next claim takes: released,
	// adopted, or of sessions whose deadline passed.
	Claimable int64
	// Expiring counts the jobs of live sessions whose deadline falls within
	// the window.
	Expiring int64
	// Due lists up to the requested number of claimable jobs, longest
	// claimable first.
	Due []DueLease
}

// LeaseSummary counts held, claimable and expiring jobs (by Redis time,
// expiring = within window), lists the sessions and up to limit claimable
// jobs. Three round trips.
func (s *Store) LeaseSummary(ctx context.Context, window time.Duration, limit int64) (LeaseSummary, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return LeaseSummary{}, err
	}
	fail := func(err error) (LeaseSummary, error) {
		return LeaseSummary{}, fmt.Errorf("state: lease summary: %w", err)
	}
	pipe := s.rdb.Pipeline()
	sessions := pipe.ZRangeWithScores(ctx, s.kSess, 0, 999)
	claimable := pipe.ZCard(ctx, s.kClaim)
	var due *redis.ZSliceCmd
	if limit > 0 {
		due = pipe.ZRangeWithScores(ctx, s.kClaim, 0, limit-1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fail(err)
	}
	sum := LeaseSummary{Now: now, Claimable: claimable.Val()}
	zs := sessions.Val()
	var dz []redis.Z
	if due != nil {
		dz = due.Val()
	}
	pipe = s.rdb.Pipeline()
	jobs := make([]*redis.IntCmd, len(zs))
	workers := make([]*redis.StringCmd, len(zs))
	for i, z := range zs {
		jobs[i] = pipe.SCard(ctx, s.pfx+"owned:"+str(z.Member))
		workers[i] = pipe.HGet(ctx, s.pfx+"sess:"+str(z.Member), "worker")
	}
	fields := make([]*redis.SliceCmd, len(dz))
	for i, z := range dz {
		fields[i] = pipe.HMGet(ctx, s.jobKey(str(z.Member)), FieldToken, FieldOutcome, FieldOwner, "excluded")
	}
	if len(zs)+len(dz) > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fail(err)
		}
	}
	until := now.Add(window)
	for i, z := range zs {
		si := SessionInfo{ID: str(z.Member), Worker: workers[i].Val(), Deadline: time.UnixMilli(int64(z.Score)), Jobs: jobs[i].Val()}
		si.Expired = !si.Deadline.After(now)
		switch {
		case si.Expired:
			sum.Claimable += si.Jobs
		case !si.Deadline.After(until):
			sum.Expiring += si.Jobs
			sum.Held += si.Jobs
		default:
			sum.Held += si.Jobs
		}
		sum.Sessions = append(sum.Sessions, si)
	}
	for i, z := range dz {
		f := fields[i].Val()
		if len(f) < 4 || f[0] == nil {
			continue // completed meanwhile (or a stale entry the next claim drops)
		}
		tok, _ := strconv.ParseInt(str(f[0]), 10, 64)
		dl := time.UnixMilli(int64(z.Score))
		sum.Due = append(sum.Due, DueLease{ID: str(z.Member), Owner: cmp.Or(str(f[2]), str(f[3])), Token: tok, Deadline: dl,
			Expired: !dl.After(now), Decided: f[1] != nil})
	}
	return sum, nil
}

// CoolDownInfo is a fleet-wide 429 cool-down in force.
type CoolDownInfo struct {
	Name string // the limiter's name, e.g. "sophos:<credential digest>"
	Left time.Duration
}

// CoolDowns lists every vendor cool-down in force ({ns}:cool:*), by name.
func (s *Store) CoolDowns(ctx context.Context) ([]CoolDownInfo, error) {
	prefix := s.pfx + "cool:"
	keys, err := s.scanKeys(ctx, prefix, 0)
	if err != nil {
		return nil, fmt.Errorf("state: cool-downs: %w", err)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	ttls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("state: cool-downs: %w", err)
	}
	var out []CoolDownInfo
	for i, k := range keys {
		if d := ttls[i].Val(); d > 0 { // -2: gone meanwhile; -1: no expiry (not ours)
			out = append(out, CoolDownInfo{Name: strings.TrimPrefix(k, prefix), Left: d})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// LimiterInfo is one fleet-wide rate limiter's state.
type LimiterInfo struct {
	// Name is the limiter's name, e.g. "sophos:<credential digest>", with
	// ":t:<tenant>" for a tenant's share of a shared credential.
	Name string
	// TAT is the theoretical arrival time of the next request (Redis
	// time): how far past now it lies is how far the budget is spent ahead.
	TAT time.Time
}

// MaxLimiters bounds what Limiters reads.
const MaxLimiters = 2000

// Limiters lists the fleet-wide rate limiters Redis holds ({ns}:rl:*; a
// limiter idle for a while has expired and is not listed), at most
// MaxLimiters, by name.
func (s *Store) Limiters(ctx context.Context) ([]LimiterInfo, error) {
	prefix := s.pfx + "rl:"
	all, err := s.scanKeys(ctx, prefix, MaxLimiters)
	if err != nil {
		return nil, fmt.Errorf("state: limiters: %w", err)
	}
	var keys []string
	for _, k := range all {
		if !strings.HasSuffix(k, ":tenants") { // a credential's tenant set, not a limiter
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("state: limiters: %w", err)
	}
	var out []LimiterInfo
	for i, k := range keys {
		sv, _ := vals[i].(string)
		tat, err := strconv.ParseInt(sv, 10, 64) // µs, Redis time
		if err != nil {
			continue // gone meanwhile, or not ours
		}
		out = append(out, LimiterInfo{Name: strings.TrimPrefix(k, prefix), TAT: time.UnixMicro(tat)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// scanKeys returns the fleet's keys that start with prefix (each once; at
// most max, 0: all), from the node that holds the namespace's slot.
func (s *Store) scanKeys(ctx context.Context, prefix string, max int) ([]string, error) {
	node, err := s.keyNode(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	seen := make(map[string]struct{})
	it := node.Scan(ctx, 0, globEscape(prefix)+"*", 500).Iterator()
	for it.Next(ctx) && (max == 0 || len(keys) < max) {
		if _, dup := seen[it.Val()]; !dup {
			seen[it.Val()] = struct{}{}
			keys = append(keys, it.Val())
		}
	}
	return keys, it.Err()
}

// JobLeaseHistory returns the lease events of one job, oldest first. It
// reads the whole lease log (at most ~100,000 events) in pages.
func (s *Store) JobLeaseHistory(ctx context.Context, id string) ([]LeaseEvent, error) {
	var out []LeaseEvent
	after := ""
	for {
		evs, next, err := s.LeaseHistory(ctx, after, 2000)
		if err != nil {
			return nil, err
		}
		for _, ev := range evs {
			if ev.JobID == id {
				out = append(out, ev)
			}
		}
		if len(evs) == 0 || next == after {
			return out, nil
		}
		after = next
	}
}

// LeaseLogScanMax bounds the lease-log entries LeaseLog reads for one
// answer: the newest ones, whatever the events asked for.
const LeaseLogScanMax = 2000

// LeaseLog returns the newest n lease events (at most 500), newest first,
// keeping only the named events when any are given ("takeover",
// "claimed", "released", "forced"). It reads the newest LeaseLogScanMax
// entries of the log at most (XREVRANGE, in pages): an older matching
// event is not found.
func (s *Store) LeaseLog(ctx context.Context, n int, events ...string) ([]LeaseEvent, error) {
	n = min(n, 500)
	if n <= 0 {
		return nil, nil
	}
	page := int64(n)
	if len(events) > 0 {
		page = 500
	}
	var out []LeaseEvent
	end, read := "+", 0
	for read < LeaseLogScanMax && len(out) < n {
		msgs, err := s.rdb.XRevRangeN(ctx, s.kLog, end, "-", min(page, int64(LeaseLogScanMax-read))).Result()
		if err != nil {
			return nil, fmt.Errorf("state: lease log: %w", err)
		}
		for _, m := range msgs {
			ev := leaseEventOf(m)
			if (len(events) == 0 || slices.Contains(events, ev.Event)) && len(out) < n {
				out = append(out, ev)
			}
		}
		read += len(msgs)
		if int64(len(msgs)) < page {
			break
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
	return out, nil
}

// keyNode is the client to SCAN: on Redis Cluster, the master that holds
// the namespace's slot (every key of a fleet shares one hash tag).
func (s *Store) keyNode(ctx context.Context) (redis.Cmdable, error) {
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, s.kClaim)
	}
	return s.rdb, nil
}

func recordFromMap(id string, m map[string]string) *Record {
	flat := make([]any, 0, 2*len(m))
	for k, v := range m {
		flat = append(flat, k, v)
	}
	return recordFromFlat(id, flat)
}

// globEscape escapes the characters SCAN's MATCH pattern treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
