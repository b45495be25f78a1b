package state

import (
	"context"
	"errors"
	"fmt"
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
	// Deadline is the lease deadline (Redis time). A released lease has
	// the Unix epoch as its deadline. HasLease is false when the job has
	// no entry in the lease set at all (then nobody can claim it).
	Deadline time.Time
	HasLease bool
}

// ListJobs calls fn for every job record of the namespace, in no particular
// order: a SCAN over {ns}:job:* in batches of batch keys (0 means
// DefaultScanBatch), each batch one pipelined round trip of HGETALL and the
// lease's ZSCORE. A key that vanished between the SCAN and the read (the
// job completed) is skipped. An error from fn stops the listing and is
// returned.
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
		recs := make([]*redis.MapStringStringCmd, len(keys))
		dls := make([]*redis.FloatCmd, len(keys))
		for i, k := range keys {
			recs[i] = pipe.HGetAll(ctx, k)
			dls[i] = pipe.ZScore(ctx, s.kLeas, strings.TrimPrefix(k, prefix))
		}
		// Per-command errors are judged below: a missing lease is redis.Nil.
		_, _ = pipe.Exec(ctx)
		for i, k := range keys {
			m, err := recs[i].Result()
			if err != nil {
				if redis.HasErrorPrefix(err, "WRONGTYPE") {
					continue // not a job record; nothing of ours
				}
				return fmt.Errorf("state: list jobs: %w", err)
			}
			if len(m) == 0 {
				continue // completed since the SCAN
			}
			e := JobEntry{Record: recordFromMap(strings.TrimPrefix(k, prefix), m)}
			switch sc, err := dls[i].Result(); {
			case err == nil:
				e.Deadline, e.HasLease = time.UnixMilli(int64(sc)), true
			case !errors.Is(err, redis.Nil):
				return fmt.Errorf("state: list jobs: %w", err)
			}
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

// LeaseDeadline returns the deadline of a job's lease, and false when the
// job has no lease.
func (s *Store) LeaseDeadline(ctx context.Context, id string) (time.Time, bool, error) {
	sc, err := s.rdb.ZScore(ctx, s.kLeas, id).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("state: lease deadline: %w", err)
	}
	return time.UnixMilli(int64(sc)), true, nil
}

// DueLease is a lease that expired or expires soon.
type DueLease struct {
	ID       string
	Owner    string // "" once released
	Token    int64
	Deadline time.Time
	// Expired: the deadline passed (Redis time), so any worker's next claim
	// takes the job.
	Expired bool
	// Decided: the job's terminal outcome is decided (it is in the outbox).
	Decided bool
}

// LeaseSummary counts the lease set against Redis time.
type LeaseSummary struct {
	Now      time.Time // Redis time of the count
	Total    int64     // leases held or claimable
	Expired  int64     // deadline passed: claimable
	Expiring int64     // deadline within the window, not yet passed
	// Due lists up to the requested number of expired and expiring
	// leases, earliest deadline first.
	Due []DueLease
}

// LeaseSummary counts the leases that have expired and those that expire within
// window (by Redis time), and lists up to limit of them, earliest deadline
// first, with their owners. Three round trips.
func (s *Store) LeaseSummary(ctx context.Context, window time.Duration, limit int64) (LeaseSummary, error) {
	now, err := s.Now(ctx)
	if err != nil {
		return LeaseSummary{}, err
	}
	nowMS := strconv.FormatInt(now.UnixMilli(), 10)
	untilMS := strconv.FormatInt(now.Add(window).UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	total := pipe.ZCard(ctx, s.kLeas)
	expired := pipe.ZCount(ctx, s.kLeas, "-inf", nowMS)
	expiring := pipe.ZCount(ctx, s.kLeas, "("+nowMS, untilMS)
	var due *redis.ZSliceCmd
	if limit > 0 {
		due = pipe.ZRangeByScoreWithScores(ctx, s.kLeas, &redis.ZRangeBy{Min: "-inf", Max: untilMS, Count: limit})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return LeaseSummary{}, fmt.Errorf("state: lease summary: %w", err)
	}
	sum := LeaseSummary{Now: now, Total: total.Val(), Expired: expired.Val(), Expiring: expiring.Val()}
	if due == nil || len(due.Val()) == 0 {
		return sum, nil
	}
	zs := due.Val()
	pipe = s.rdb.Pipeline()
	fields := make([]*redis.SliceCmd, len(zs))
	for i, z := range zs {
		fields[i] = pipe.HMGet(ctx, s.jobKey(str(z.Member)), FieldOwner, FieldToken, FieldOutcome)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return LeaseSummary{}, fmt.Errorf("state: lease summary: %w", err)
	}
	for i, z := range zs {
		f := fields[i].Val()
		if len(f) < 3 || f[1] == nil {
			continue // completed meanwhile (or a stale entry the next claim drops)
		}
		tok, _ := strconv.ParseInt(str(f[1]), 10, 64)
		dl := time.UnixMilli(int64(z.Score))
		sum.Due = append(sum.Due, DueLease{ID: str(z.Member), Owner: str(f[0]), Token: tok, Deadline: dl,
			Expired: !dl.After(now), Decided: f[2] != nil})
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
	node, err := s.keyNode(ctx)
	if err != nil {
		return nil, fmt.Errorf("state: cool-downs: %w", err)
	}
	prefix := s.pfx + "cool:"
	var keys []string
	seen := make(map[string]struct{})
	it := node.Scan(ctx, 0, globEscape(prefix)+"*", 500).Iterator()
	for it.Next(ctx) {
		if _, dup := seen[it.Val()]; !dup {
			seen[it.Val()] = struct{}{}
			keys = append(keys, it.Val())
		}
	}
	if err := it.Err(); err != nil {
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

// keyNode is the client to SCAN: on Redis Cluster, the master that holds
// the namespace's slot (every key of a fleet shares one hash tag).
func (s *Store) keyNode(ctx context.Context) (redis.Cmdable, error) {
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, s.kLeas)
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
