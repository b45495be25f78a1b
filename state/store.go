package state

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults for Config fields left zero.
const (
	DefaultNamespace    = "analysisfleet"
	DefaultLeaseTTL     = 30 * time.Second
	DefaultTombstoneTTL = 7 * 24 * time.Hour
	// DefaultHistoryTTL is how long a finished job's timeline and result
	// summary are kept.
	DefaultHistoryTTL = 24 * time.Hour
)

// ErrStale is returned by every fenced write when the caller no longer owns
// the job: its token is not the current one. The caller must stop working on
// the job at once and make no further vendor call or SampleDB write for it.
var ErrStale = errors.New("lease lost: fencing token is stale")

// ErrGone is returned by fenced writes when the job's record is not in the
// ledger at all and no tombstone explains it: Redis lost its data. The
// caller, which still knows the job's checkpoints, should re-seed it
// (Adopt) rather than drop it. errors.Is(ErrGone, ErrStale) holds: the
// caller no longer owns the job either way.
var ErrGone = fmt.Errorf("%w: the job's record is gone from the ledger (Redis lost data)", ErrStale)

// Record fields with a meaning to the protocol. Other fields (the plan, task
// checkpoints, the outcome) are the runner's, stored verbatim.
const (
	FieldMsg     = "msg"
	FieldOwner   = "owner"
	FieldToken   = "token"
	FieldCreated = "created"
	FieldSource  = "source"
	FieldOutcome = "outcome"
	FieldSession = "session"
	// FieldAbort is "1" once an analyst's abort request reached the ledger
	// (NotifyAborts): whoever holds or takes the job aborts it.
	FieldAbort = "abort"
)

// Config configures a Store.
type Config struct {
	// Namespace separates fleets sharing one Redis; it is the hash tag of
	// every key. Default DefaultNamespace.
	Namespace string
	// LeaseTTL is how long a lease lives without renewal. Default 30s.
	LeaseTTL time.Duration
	// TombstoneTTL is how long a finished job keeps redeliveries out.
	// Default 7 days.
	TombstoneTTL time.Duration
	// HistoryTTL is how long a finished job's timeline and result summary
	// stay readable (fleetctl job, the console). Default 24h; never longer
	// than TombstoneTTL.
	HistoryTTL time.Duration
}

// Store is the job ledger in Redis. It is safe for concurrent use.
type Store struct {
	hooks *hooks // shared with Dedicated copies

	rdb    redis.UniversalClient
	ns     string
	pfx    string
	ttl    time.Duration
	tomb   time.Duration
	hist   time.Duration
	kSess  string
	kClaim string
	kOut   string
	kFen   string
	kWork  string
	kEpo   string
	kLog   string
}

// New returns a Store over rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("state: nil redis client")
	}
	ns := cmp.Or(cfg.Namespace, DefaultNamespace)
	if strings.ContainsAny(ns, "{}: ") {
		return nil, fmt.Errorf("state: namespace %q may not contain braces, colons or spaces", ns)
	}
	ttl := cmp.Or(cfg.LeaseTTL, DefaultLeaseTTL)
	if ttl < 100*time.Millisecond {
		return nil, fmt.Errorf("state: LeaseTTL %s is too short", ttl)
	}
	pfx := "{" + ns + "}:"
	tomb := cmp.Or(cfg.TombstoneTTL, DefaultTombstoneTTL)
	return &Store{
		hooks: &hooks{},
		rdb:   rdb, ns: ns, pfx: pfx, ttl: ttl,
		tomb: tomb, hist: min(cmp.Or(cfg.HistoryTTL, DefaultHistoryTTL), tomb),
		kSess: pfx + "sessions", kClaim: pfx + "claimable", kOut: pfx + "outbox", kFen: pfx + "fence",
		kWork: pfx + "workers", kEpo: pfx + "epoch", kLog: pfx + "leaselog",
	}, nil
}

// LeaseTTL returns the configured lease lifetime.
func (s *Store) LeaseTTL() time.Duration { return s.ttl }

// Namespace returns the fleet namespace.
func (s *Store) Namespace() string { return s.ns }

// Redis returns the underlying client.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Dedicated returns a Store like s over a client of its own with a pool of
// n connections, for work that must never queue behind admission and
// checkpoints on the shared pool (session renewals), or that holds a
// connection while it waits (the mailbox's BLPOP). close closes that
// client. A client type Dedicated cannot copy is shared as it is.
func (s *Store) Dedicated(n int) (d *Store, close func() error, err error) {
	var rdb redis.UniversalClient
	switch c := s.rdb.(type) {
	case *redis.Client:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns = n, 0, n
		o.PushNotificationProcessor = nil // the original's; each client makes its own
		rdb = redis.NewClient(&o)
	case *redis.ClusterClient:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns = n, 0, n
		o.PushNotificationProcessor = nil
		rdb = redis.NewClusterClient(&o)
	default:
		return s, func() error { return nil }, nil
	}
	c := *s // hooks is shared by pointer: a quarantine seen by either is reported
	c.rdb = rdb
	return &c, rdb.Close, nil
}

// Load loads every script into Redis's script cache, so pipelined calls
// (which cannot fall back from NOSCRIPT) work. Calls retry on NOSCRIPT
// anyway, so a Redis restart between Load and use is harmless.
func (s *Store) Load(ctx context.Context) error {
	for _, sc := range allScripts {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return fmt.Errorf("state: load scripts: %w", err)
		}
	}
	return nil
}

// Ping checks Redis is reachable.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

func (s *Store) jobKey(id string) string  { return s.pfx + "job:" + id }
func (s *Store) tombKey(id string) string { return s.pfx + "tomb:" + id }

// Lease is a worker's claim on a job: the job ID and the fencing token it was
// acquired with.
type Lease struct {
	ID    string
	Token int64
}

// Record is a job's ledger entry.
type Record struct {
	ID      string
	Owner   string
	Session string // the session holding the job; "" while claimable
	Token   int64
	Msg     []byte
	Source  string
	Created time.Time // first admission, Redis time
	// Fields holds everything else (plan, task checkpoints, outcome).
	Fields map[string]string
	// Lines holds the tasks' progress lines (task kind → ProgressLine's
	// stored form) from the holding session's lines hash, as Get and
	// ListJobs read them; Task takes the newer of a line and its checkpoint.
	Lines map[string]string
}

// Outcome returns the decided terminal outcome, or nil.
func (r *Record) Outcome() []byte {
	if v, ok := r.Fields[FieldOutcome]; ok {
		return []byte(v)
	}
	return nil
}

func recordFromFlat(id string, flat []any) *Record {
	r := &Record{ID: id, Fields: map[string]string{}}
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		switch k {
		case FieldMsg:
			r.Msg = []byte(v)
		case FieldOwner:
			r.Owner = v
		case FieldSession:
			r.Session = v
		case FieldToken:
			r.Token, _ = strconv.ParseInt(v, 10, 64)
		case FieldSource:
			r.Source = v
		case FieldCreated:
			ms, _ := strconv.ParseInt(v, 10, 64)
			r.Created = time.UnixMilli(ms)
		default:
			r.Fields[k] = v
		}
	}
	return r
}

// AdmitRequest is one job to admit.
type AdmitRequest struct {
	ID     string
	Msg    []byte
	Source string // where it came from, e.g. "Sample.Analysis.Job.OSL/3@1234"
}

// AdmitOutcome says what admission did.
type AdmitOutcome int

// Admission outcomes.
const (
	// Admitted: a new record, leased to this worker.
	Admitted AdmitOutcome = iota + 1
	// TakenOver: the record existed with an expired lease; now this worker's,
	// to resume from its checkpoints.
	TakenOver
	// Running: another live lease holds the job; drop the duplicate.
	Running
	// Finished: a tombstone says the job ended; drop the duplicate.
	Finished
	// Held: this very session already holds the job: an earlier admission
	// went through but its answer was lost (a timeout), or the record was
	// redelivered. Lease and Record are set; run it unless it runs already.
	Held
)

func (o AdmitOutcome) String() string {
	switch o {
	case Admitted:
		return "admitted"
	case TakenOver:
		return "taken over"
	case Running:
		return "running"
	case Finished:
		return "finished"
	case Held:
		return "held"
	}
	return "unknown"
}

// AdmitResult is the answer for one AdmitRequest.
type AdmitResult struct {
	ID      string
	Outcome AdmitOutcome
	// Lease and Record are set for Admitted, TakenOver and Held.
	Lease  Lease
	Record *Record
	// Detail is the owner (Running) or the terminal state (Finished).
	Detail string
}

// ErrSessionGone is returned by Admit and Claim, and reported by Renew,
// when the worker's session is not alive: its deadline passed (the worker
// could not renew in time, and its jobs are being handed to others) or the
// ledger does not know it (Redis lost its data). The worker drops every job
// of the session and opens a new one.
var ErrSessionGone = errors.New("state: the worker's session is gone")

// Session is a worker's lease on all the jobs it holds. Each job's record
// names the session (and a fencing token); renewing the session, one
// command per tick, keeps every one of its jobs held. When the session's
// deadline passes its jobs become claimable.
type Session struct {
	ID     string
	Worker string
}

// OpenSession registers a new session for worker, alive for LeaseTTL. sent
// is the local time just before the request: the session is certainly
// alive until sent + LeaseTTL by the local clock.
func (s *Store) OpenSession(ctx context.Context, worker string) (Session, time.Time, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	sess := Session{ID: worker + "." + hex.EncodeToString(b[:]), Worker: worker}
	sent := time.Now()
	_, err := s.run(ctx, openSessionScript, []string{s.kSess, s.kWork}, s.pfx, sess.ID, worker, s.ttl.Milliseconds())
	if err != nil {
		return Session{}, sent, fmt.Errorf("state: open session: %w", err)
	}
	return sess, sent, nil
}

// Admit admits jobs under the worker's session in one round trip,
// idempotent by job ID. sent is the local time just before the request.
func (s *Store) Admit(ctx context.Context, sess Session, reqs []AdmitRequest) (res []AdmitResult, sent time.Time, err error) {
	if len(reqs) == 0 {
		return nil, time.Now(), nil
	}
	args := make([]any, 0, 3+3*len(reqs))
	args = append(args, s.pfx, sess.ID, sess.Worker)
	byID := make(map[string]AdmitRequest, len(reqs))
	for _, r := range reqs {
		args = append(args, r.ID, r.Msg, r.Source)
		byID[r.ID] = r
	}
	sent = time.Now()
	raw, err := s.run(ctx, admitScript, []string{s.kSess, s.kClaim, s.kFen, s.kLog}, args...)
	if err != nil {
		return nil, sent, s.sessionErr("admit", err)
	}
	rows := s.quarantinedIn(raw)
	for _, row := range rows {
		f, _ := row.([]any)
		if len(f) < 4 {
			return nil, sent, errors.New("state: admit: malformed reply")
		}
		id, _ := f[0].(string)
		kind, _ := f[1].(string)
		tok, _ := strconv.ParseInt(str(f[2]), 10, 64)
		r := AdmitResult{ID: id, Detail: str(f[3])}
		switch kind {
		case "finished":
			r.Outcome = Finished
		case "running":
			r.Outcome = Running
		case "takeover", "held":
			r.Outcome = TakenOver
			if kind == "held" {
				r.Outcome = Held
			}
			r.Lease = Lease{ID: id, Token: tok}
			flat, _ := f[4].([]any)
			r.Record = recordFromFlat(id, flat)
		case "admitted":
			r.Outcome = Admitted
			r.Lease = Lease{ID: id, Token: tok}
			ms, _ := strconv.ParseInt(r.Detail, 10, 64)
			req := byID[id]
			r.Record = &Record{ID: id, Owner: sess.Worker, Session: sess.ID, Token: tok, Msg: req.Msg, Source: req.Source,
				Created: time.UnixMilli(ms), Fields: map[string]string{}}
			r.Detail = ""
		default:
			return nil, sent, fmt.Errorf("state: admit: unknown outcome %q", kind)
		}
		res = append(res, r)
	}
	return res, sent, nil
}

// Claimed is a job taken over by Claim.
type Claimed struct {
	Lease  Lease
	Record *Record
}

// DefaultReap bounds the jobs of dead sessions one Claim makes claimable.
const DefaultReap = 1000

// Claim first makes the jobs of sessions whose deadline passed claimable
// (at most DefaultReap of them per call), then takes over up to max
// claimable jobs, longest claimable first, under sess, and returns their
// records so the caller resumes each from its checkpoints.
func (s *Store) Claim(ctx context.Context, sess Session, max int) (out []Claimed, sent time.Time, err error) {
	sent = time.Now()
	raw, err := s.run(ctx, claimScript, []string{s.kSess, s.kClaim, s.kFen, s.kLog}, s.pfx, sess.ID, sess.Worker, max, DefaultReap)
	if err != nil {
		return nil, sent, s.sessionErr("claim", err)
	}
	rows := s.quarantinedIn(raw)
	for _, row := range rows {
		f, _ := row.([]any)
		if len(f) < 3 {
			return nil, sent, errors.New("state: claim: malformed reply")
		}
		id := str(f[0])
		tok, _ := strconv.ParseInt(str(f[1]), 10, 64)
		flat, _ := f[2].([]any)
		out = append(out, Claimed{Lease: Lease{ID: id, Token: tok}, Record: recordFromFlat(id, flat)})
	}
	return out, sent, nil
}

// LossReason says why a worker lost a job.
type LossReason string

// Loss reasons.
const (
	// LostMissing: the ledger no longer knows the session (or the record
	// vanished without a tombstone): Redis lost its data.
	LostMissing LossReason = "missing"
	// LostStolen: an operator released it away (fleetctl release), or
	// another worker holds it.
	LostStolen LossReason = "stolen"
	// LostExpired: the session's deadline passed before a renewal reached
	// Redis (by the local clock, or Redis says so): its jobs are others'.
	LostExpired LossReason = "expired"
)

// RenewResult is the answer to Renew.
type RenewResult struct {
	// Alive is false when the session is gone (ErrSessionGone's cases).
	Alive bool
	Epoch string    // the ledger epoch; a change means Redis lost data
	Now   time.Time // Redis time
}

// Renew extends the session by LeaseTTL, whatever the number of jobs it
// holds: one round trip. It also records the worker as alive with its
// in-flight count.
func (s *Store) Renew(ctx context.Context, sess Session, inflight int) (RenewResult, error) {
	return s.renew(ctx, sess, inflight, nil)
}

// MaxWorkerStats bounds what a worker publishes about itself.
const MaxWorkerStats = 4 << 10

// renew is Renew publishing the worker's stats too (when not empty and
// not over MaxWorkerStats).
func (s *Store) renew(ctx context.Context, sess Session, inflight int, stats []byte) (RenewResult, error) {
	if len(stats) > MaxWorkerStats {
		stats = nil
	}
	raw, err := s.run(ctx, renewScript, []string{s.kSess, s.kWork, s.kEpo}, s.pfx, sess.ID, sess.Worker, s.ttl.Milliseconds(), inflight, stats)
	if err != nil {
		return RenewResult{}, fmt.Errorf("state: renew: %w", err)
	}
	f, _ := raw.([]any)
	if len(f) < 3 {
		return RenewResult{}, errors.New("state: renew: malformed reply")
	}
	ms, _ := strconv.ParseInt(str(f[0]), 10, 64)
	return RenewResult{Now: time.UnixMilli(ms), Epoch: str(f[1]), Alive: str(f[2]) == "ok"}, nil
}

// Mail is a message to a session: a job was taken away from it (Lost), or
// its abort was requested (Abort).
type Mail struct {
	JobID  string
	Token  int64      // for Lost: the token the job was held with
	Lost   LossReason // set for a lost job
	Abort  bool
	Header string // the raw message, for logs
}

// ReadMail waits up to wait for messages to sess and returns up to max of
// them (a BLPOP, then the rest at once: O(1) round trips per call whatever
// the number of jobs). Call it from one goroutine on a client of its own:
// BLPOP holds a connection while it waits.
func (s *Store) ReadMail(ctx context.Context, sess Session, wait time.Duration, max int) ([]Mail, error) {
	key := s.pfx + "mail:" + sess.ID
	first, err := s.rdb.BLPop(ctx, wait, key).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: mail: %w", err)
	}
	msgs := first[1:]
	if max > 1 {
		rest, err := s.rdb.LPopCount(ctx, key, max-1).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("state: mail: %w", err)
		}
		msgs = append(msgs, rest...)
	}
	out := make([]Mail, 0, len(msgs))
	for _, m := range msgs {
		f := strings.Fields(m)
		switch {
		case len(f) == 4 && f[0] == "lost":
			tok, _ := strconv.ParseInt(f[2], 10, 64)
			out = append(out, Mail{JobID: f[1], Token: tok, Lost: LossReason(f[3]), Header: m})
		case len(f) == 2 && f[0] == "abort":
			out = append(out, Mail{JobID: f[1], Abort: true, Header: m})
		}
	}
	return out, nil
}

// NotifyAborts marks the jobs whose abort was requested, and tells each
// holder's session, once per job: a job nobody holds carries the mark
// (FieldAbort) to whoever takes it. One round trip for up to 1000 IDs. It
// returns how many were newly marked.
//
// by says who asked, for the jobs' timelines ("" = SampleDB, through the
// fleet's abort listing).
func (s *Store) NotifyAborts(ctx context.Context, ids []string, by string) (int, error) {
	by = cmp.Or(by, "seen in SampleDB; the holder is told")
	n := 0
	for len(ids) > 0 {
		batch := ids[:min(len(ids), 1000)]
		ids = ids[len(batch):]
		keys := make([]string, len(batch))
		args := make([]any, 0, 3+len(batch))
		args = append(args, s.pfx, s.ttl.Milliseconds(), by)
		for i, id := range batch {
			keys[i] = s.jobKey(id)
			args = append(args, id)
		}
		v, err := s.run(ctx, notifyAbortsScript, keys, args...)
		if err != nil {
			return n, fmt.Errorf("state: notify aborts: %w", err)
		}
		c, _ := v.(int64)
		n += int(c)
	}
	return n, nil
}

// MaxReleaseBatch bounds the leases one release script hands over: a
// drain of 100,000 jobs in one script held Redis for seconds (every other
// worker's renewal answered BUSY), so Release goes in script calls of at
// most this many.
const MaxReleaseBatch = 500

// Release hands leases over at once (graceful drain): any worker's next
// claim takes them and resumes from their checkpoints. It makes one script
// call per MaxReleaseBatch leases and returns how many the ledger released,
// those of the batches before an error included.
func (s *Store) Release(ctx context.Context, sess Session, leases []Lease) (int, error) {
	total := 0
	for b := range slices.Chunk(leases, MaxReleaseBatch) {
		args := make([]any, 0, 3+2*len(b))
		args = append(args, s.pfx, sess.ID, sess.Worker)
		for _, l := range b {
			args = append(args, l.ID, strconv.FormatInt(l.Token, 10))
		}
		n, err := s.run(ctx, releaseScript, []string{s.kClaim, s.kLog}, args...)
		if err != nil {
			return total, fmt.Errorf("state: release: %w", err)
		}
		c, _ := n.(int64)
		total += int(c)
	}
	return total, nil
}

// ForceRelease takes a job away from whoever holds it (operator action for
// a stuck worker). The holder is told at once (its session's mailbox) and
// its next fenced write fails with ErrStale; for two lease lifetimes it may
// not claim the job back: another worker takes it. It returns the previous
// owner and whether the job exists.
//
// by says who released it, for the job's timeline ("" = fleetctl release).
func (s *Store) ForceRelease(ctx context.Context, id, by string) (owner string, ok bool, err error) {
	v, err := s.run(ctx, forceReleaseScript, []string{s.jobKey(id), s.kClaim, s.kLog}, s.pfx, id, (2 * s.ttl).Milliseconds(), s.ttl.Milliseconds(),
		cmp.Or(by, "fleetctl release"))
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil && strings.HasPrefix(err.Error(), "GONE") {
		s.onQ([]string{s.jobKey(id)})
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("state: force release: %w", err)
	}
	return str(v), true, nil
}

// Checkpoint writes fields (name, value pairs) to the job's record if sess
// still holds l. Otherwise it returns ErrStale and writes nothing.
func (s *Store) Checkpoint(ctx context.Context, sess Session, l Lease, kv ...string) error {
	return s.CheckpointNotes(ctx, sess, l, nil, kv...)
}

// CheckpointNotes is Checkpoint that also appends events to the job's
// timeline, in the same fenced write.
func (s *Store) CheckpointNotes(ctx context.Context, sess Session, l Lease, events []Event, kv ...string) error {
	if len(kv)%2 != 0 {
		return errors.New("state: checkpoint: odd field list")
	}
	args := make([]any, 0, 5+len(events)+len(kv))
	args = append(args, sess.ID, strconv.FormatInt(l.Token, 10), s.pfx, l.ID, len(events))
	for _, e := range events {
		args = append(args, e.encode())
	}
	for _, x := range kv {
		args = append(args, x)
	}
	_, err := s.run(ctx, checkpointScript, []string{s.jobKey(l.ID), s.kSess}, args...)
	return s.fenced("checkpoint", l.ID, err)
}

// Decide records the job's terminal outcome and puts it in the outbox, if
// sess holds l; the decision goes on the timeline as ev. The first decision
// wins: Decide returns the outcome that stands, which may be an earlier one.
func (s *Store) Decide(ctx context.Context, sess Session, l Lease, outcome []byte, ev Event) ([]byte, error) {
	v, err := s.run(ctx, decideScript, []string{s.jobKey(l.ID), s.kSess, s.kOut},
		sess.ID, strconv.FormatInt(l.Token, 10), l.ID, outcome, s.pfx, ev.encode())
	if err := s.fenced("decide", l.ID, err); err != nil {
		return nil, err
	}
	return []byte(str(v)), nil
}

// Complete ends the job after SampleDB acknowledged its terminal state:
// record, claimable and outbox entries are removed and a tombstone with the
// state keeps redelivered records out for TombstoneTTL. ev closes the
// job's timeline; summary (the job's result summary, or nil) is kept, with
// the timeline, as long as the tombstone (Result, Timeline, Finished).
func (s *Store) Complete(ctx context.Context, sess Session, l Lease, terminal string, ev Event, summary []byte) error {
	_, err := s.run(ctx, completeScript,
		[]string{s.jobKey(l.ID), s.kSess, s.kClaim, s.kOut, s.tombKey(l.ID), s.kLog, s.pfx + "finished"},
		sess.ID, strconv.FormatInt(l.Token, 10), l.ID, terminal, s.tomb.Milliseconds(), s.pfx, sess.Worker,
		ev.encode(), summary, s.hist.Milliseconds())
	return s.fenced("complete", l.ID, err)
}

// sessionErr maps SESSION gone to ErrSessionGone.
func (s *Store) sessionErr(op string, err error) error {
	if strings.HasPrefix(err.Error(), "SESSION") {
		return ErrSessionGone
	}
	return fmt.Errorf("state: %s: %w", op, err)
}

// Adopt creates a record for a job the ledger does not know (no record, no
// tombstone), owned by nobody and claimable at once. fields are name, value
// pairs (at least FieldMsg). It reports whether the job was adopted.
func (s *Store) Adopt(ctx context.Context, id string, kv ...string) (bool, error) {
	return s.AdoptAfter(ctx, id, 0, kv...)
}

// AdoptAfter is Adopt with the job claimable only after delay: a worker
// re-seeding a job it just dropped gives the requests it had already sent
// for the job time to land before another worker takes the job over.
func (s *Store) AdoptAfter(ctx context.Context, id string, delay time.Duration, kv ...string) (bool, error) {
	if len(kv)%2 != 0 {
		return false, errors.New("state: adopt: odd field list")
	}
	args := make([]any, 0, 2+len(kv))
	args = append(args, id, max(delay, 0).Milliseconds())
	for _, x := range kv {
		args = append(args, x)
	}
	n, err := s.run(ctx, adoptScript, []string{s.jobKey(id), s.tombKey(id), s.kClaim}, args...)
	if err != nil {
		return false, fmt.Errorf("state: adopt: %w", err)
	}
	c, _ := n.(int64)
	return c == 1, nil
}

// Known reports which of ids the ledger knows (a record or a tombstone), in
// one round trip.
func (s *Store) Known(ctx context.Context, ids []string) (map[string]bool, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.Exists(ctx, s.jobKey(id), s.tombKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("state: known: %w", err)
	}
	out := make(map[string]bool, len(ids))
	for i, id := range ids {
		out[id] = cmds[i].Val() > 0
	}
	return out, nil
}

// Epoch returns the ledger's epoch, creating one if Redis has none. Workers
// remember it; a different answer later means Redis lost its data.
func (s *Store) Epoch(ctx context.Context) (string, error) {
	e, _, err := s.EpochAge(ctx)
	return e, err
}

// EpochAge returns the ledger's epoch, creating one if Redis has none, and
// how long ago it was created (by Redis's clock). An epoch younger than
// LeaseTTL follows a data loss recent enough that a worker may still hold,
// by its local clock, a lease granted before the loss: nothing the lost
// ledger knew may be handed to another worker until then (see
// worker.Runner.Reconcile). An epoch written before its creation time was
// recorded counts as old.
func (s *Store) EpochAge(ctx context.Context) (string, time.Duration, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	v, err := s.run(ctx, epochScript, []string{s.kEpo, s.kEpo + ":at"}, hex.EncodeToString(b[:]))
	if err != nil {
		return "", 0, fmt.Errorf("state: epoch: %w", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return "", 0, fmt.Errorf("state: epoch: unexpected reply %T", v)
	}
	ms, _ := arr[1].(int64)
	return str(arr[0]), time.Duration(max(ms, 0)) * time.Millisecond, nil
}

// Get returns a job's record, or nil if there is none.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	m, err := s.rdb.HGetAll(ctx, s.jobKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("state: get: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	r := recordFromMap(id, m)
	pipe := s.rdb.Pipeline()
	if done := s.linesOf(ctx, pipe, r); done != nil {
		// A failed read leaves the lines out: they are for people.
		_, _ = pipe.Exec(ctx)
		done()
	}
	return r, nil
}

// Tombstone returns the terminal state a finished job's tombstone holds.
func (s *Store) Tombstone(ctx context.Context, id string) (string, bool, error) {
	v, err := s.rdb.Get(ctx, s.tombKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("state: tombstone: %w", err)
	}
	return v, true, nil
}

// LeaseEvent is one entry of the lease history: every acquisition
// (admitted, takeover, claimed), hand-over (released, forced) and end
// (completed), in Redis time order. The last 100,000 events are kept.
type LeaseEvent struct {
	Event  string
	JobID  string
	Worker string
	Token  int64
	At     time.Time
}

// LeaseHistory returns up to count lease events after the stream ID after
// ("" or "-" = from the beginning), and the ID to continue from.
func (s *Store) LeaseHistory(ctx context.Context, after string, count int64) ([]LeaseEvent, string, error) {
	start := "-"
	if after != "" && after != "-" {
		start = "(" + after
	}
	msgs, err := s.rdb.XRangeN(ctx, s.kLog, start, "+", count).Result()
	if err != nil {
		return nil, after, fmt.Errorf("state: lease history: %w", err)
	}
	out := make([]LeaseEvent, 0, len(msgs))
	last := after
	for _, m := range msgs {
		out = append(out, leaseEventOf(m))
		last = m.ID
	}
	return out, last, nil
}

func leaseEventOf(m redis.XMessage) LeaseEvent {
	tok, _ := strconv.ParseInt(str(m.Values["token"]), 10, 64)
	ms, _ := strconv.ParseInt(str(m.Values["at"]), 10, 64)
	return LeaseEvent{Event: str(m.Values["ev"]), JobID: str(m.Values["job"]),
		Worker: str(m.Values["worker"]), Token: tok, At: time.UnixMilli(ms)}
}

// OutboxDepth returns how many decided jobs wait for SampleDB's acknowledgement.
func (s *Store) OutboxDepth(ctx context.Context) (int64, error) {
	return s.rdb.ZCard(ctx, s.kOut).Result()
}

// WorkerInfo is what the ledger knows about a live worker.
type WorkerInfo struct {
	ID       string
	Seen     time.Time // last renewal, Redis time
	InFlight int
	// Stats is what the worker published with its last renewal (JSON of
	// runner.WorkerStats; nil when it published none).
	Stats []byte
}

// Workers lists workers that renewed within the last ten lease TTLs.
func (s *Store) Workers(ctx context.Context) ([]WorkerInfo, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.kWork, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("state: workers: %w", err)
	}
	var out []WorkerInfo
	for _, z := range zs {
		id := str(z.Member)
		seen := time.UnixMilli(int64(z.Score))
		if time.Since(seen) > 10*s.ttl {
			continue
		}
		f, err := s.rdb.HMGet(ctx, s.pfx+"worker:"+id, "inflight", "stats").Result()
		if err != nil {
			return nil, fmt.Errorf("state: workers: %w", err)
		}
		n, _ := strconv.Atoi(str(f[0]))
		var stats []byte
		if v := str(f[1]); v != "" {
			stats = []byte(v)
		}
		out = append(out, WorkerInfo{ID: id, Seen: seen, InFlight: n, Stats: stats})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// TryLock takes the fleet-wide lock name for ttl if nobody holds it.
func (s *Store) TryLock(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	ok, err := s.rdb.SetNX(ctx, s.pfx+"lock:"+name, holder, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("state: lock %s: %w", name, err)
	}
	return ok, nil
}

// Unlock releases name if holder holds it.
func (s *Store) Unlock(ctx context.Context, name, holder string) error {
	_, err := s.run(ctx, unlockScript, []string{s.pfx + "lock:" + name}, holder)
	return err
}

// HoldLock sets the remaining lifetime of the lock name to ttl if holder
// holds it (ttl ≤ 0: releases it). It reports whether holder held it.
func (s *Store) HoldLock(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	v, err := s.run(ctx, holdLockScript, []string{s.pfx + "lock:" + name}, holder, ttl.Milliseconds())
	if err != nil {
		return false, fmt.Errorf("state: lock %s: %w", name, err)
	}
	n, _ := v.(int64)
	return n == 1, nil
}

// OnQuarantine sets fn to be told the keys a script moved out of the
// ledger's way because they held the wrong type (see Quarantined). fn must
// not block.
func (s *Store) OnQuarantine(fn func(keys []string)) { s.hooks.onQuarantine.Store(&fn) }

type hooks struct {
	onQuarantine atomic.Pointer[func([]string)]
}

func (s *Store) onQ(keys []string) {
	if fn := s.hooks.onQuarantine.Load(); fn != nil && *fn != nil {
		(*fn)(keys)
	}
}

// quarantinedIn splits a batch script's reply {rows, quarantined keys},
// reports the quarantined keys and returns the rows.
func (s *Store) quarantinedIn(raw any) []any {
	parts, _ := raw.([]any)
	if len(parts) != 2 {
		return nil
	}
	rows, _ := parts[0].([]any)
	if q, _ := parts[1].([]any); len(q) > 0 {
		keys := make([]string, len(q))
		for i, k := range q {
			keys[i] = str(k)
		}
		s.onQ(keys)
	}
	return rows
}

// Quarantined is a key moved out of the ledger's way because it held the
// wrong type.
type Quarantined struct {
	Key string
	At  time.Time
}

// Quarantined lists the quarantined keys, oldest first (at most limit; 0 =
// all). They are kept for inspection; delete them by hand once understood.
func (s *Store) Quarantined(ctx context.Context, limit int64) ([]Quarantined, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.pfx+"quarantine", 0, limit-1).Result()
	if err != nil {
		return nil, fmt.Errorf("state: quarantined: %w", err)
	}
	out := make([]Quarantined, len(zs))
	for i, z := range zs {
		out[i] = Quarantined{Key: str(z.Member), At: time.UnixMilli(int64(z.Score))}
	}
	return out, nil
}

// QuarantineDepth returns how many keys are quarantined.
func (s *Store) QuarantineDepth(ctx context.Context) (int64, error) {
	return s.rdb.ZCard(ctx, s.pfx+"quarantine").Result()
}

// run runs a script, loading it again if Redis forgot it (a restart).
func (s *Store) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) (any, error) {
	v, err := sc.EvalSha(ctx, s.rdb, keys, args...).Result()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		v, err = sc.Eval(ctx, s.rdb, keys, args...).Result()
	}
	return v, err
}

func (s *Store) fenced(op, id string, err error) error {
	if err == nil {
		return nil
	}
	if strings.HasPrefix(err.Error(), "STALE") {
		return ErrStale
	}
	if strings.HasPrefix(err.Error(), "GONE") {
		if strings.Contains(err.Error(), "quarantined") {
			s.onQ([]string{s.jobKey(id)})
		}
		return ErrGone
	}
	return fmt.Errorf("state: %s: %w", op, err)
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case []byte:
		return string(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}
