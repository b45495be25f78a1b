package state

import (
	"cmp"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"go.uber.org/zap"
)

// KeeperConfig configures a Keeper.
type KeeperConfig struct {
	// Worker is this worker's ID.
	Worker string
	// Interval between renewals. Default LeaseTTL/3.
	Interval time.Duration
	// Margin is subtracted from the lease TTL for the local view of validity,
	// to cover clock-rate drift between this host and Redis. Default
	// min(LeaseTTL/10, 2s).
	Margin time.Duration
	// MailWait is how long one mailbox read waits for a message (BLPOP);
	// default 5s. Mail arrives at once whatever the wait: it bounds only
	// how often an idle mailbox is asked.
	MailWait time.Duration
	// OnLost is called (from the keeper's goroutines) for every job taken
	// away from this worker: by an operator's release while the session
	// lives (LostStolen), or with the session itself (see OnSessionLost). It
	// must not block.
	OnLost func(id string, token int64, reason LossReason)
	// OnSessionLost is called when the session itself is lost, and with it
	// every job it held (each also reported to OnLost): its deadline passed
	// before a renewal reached Redis (LostExpired), or the ledger no longer
	// knows it (LostMissing: Redis lost its data). The keeper opens a new
	// session at once. It must not block.
	OnSessionLost func(reason LossReason, jobs int)
	// OnAbort is called for a job whose abort an analyst requested
	// (Store.NotifyAborts). It must not block.
	OnAbort func(id string)
	// OnEpoch is called when a renewal sees a ledger epoch different from the
	// one seen before (Redis lost its data). It must not block.
	OnEpoch func(old, new string)
	// OnRenew is called after each renewal attempt (metrics).
	OnRenew func(held int, err error)
	// Stats, when set, gives what the worker publishes about itself with
	// each renewal (WorkerInfo.Stats; at most MaxWorkerStats bytes).
	Stats  func() []byte
	Logger *zap.Logger
}

// Keeper holds this worker's session and the jobs held under it. It
// renews the session — and so every job it holds, whatever their number —
// in one round trip per tick, on a Redis connection of its own that
// admission and checkpoints never queue in front of, and reads the
// session's mailbox (jobs taken away, aborts requested) on another.
//
// It keeps a local, monotonic-clock view of how long the session is
// certainly still valid. Valid must be checked before every vendor call or
// SampleDB write: a worker that was paused (SIGSTOP, GC, a stalled VM) for
// longer than the TTL finds its session invalid on waking, before any
// renewal has told it so, and makes no call.
//
// A Keeper is safe for concurrent use.
type Keeper struct {
	s      *Store // renewals: a client of their own when Dedicated gave one
	mail   *Store // the mailbox's BLPOP: another connection
	cfg    KeeperConfig
	margin time.Duration
	log    *zap.Logger

	mu      sync.Mutex
	sess    Session
	valid   time.Time        // monotonic: session certainly alive until then
	renewed time.Time        // when the last renewal Redis answered alive was sent
	held    map[string]int64 // job → token
	epoch   string
}

// NewKeeper returns a Keeper over s (renewals) and mail (the mailbox; nil
// reads no mail).
func NewKeeper(s, mail *Store, cfg KeeperConfig) *Keeper {
	ttl := s.LeaseTTL()
	cfg.Interval = cmp.Or(cfg.Interval, ttl/3)
	cfg.MailWait = cmp.Or(cfg.MailWait, 5*time.Second)
	margin := cmp.Or(cfg.Margin, min(ttl/10, 2*time.Second))
	return &Keeper{
		s: s, mail: mail, cfg: cfg, margin: margin,
		log:  cmp.Or(cfg.Logger, zap.NewNop()).Named("lease"),
		held: map[string]int64{},
	}
}

// Open opens the worker's session. Jobs can be admitted and claimed only
// once it is open.
func (k *Keeper) Open(ctx context.Context) error {
	sess, sent, err := k.s.OpenSession(ctx, k.cfg.Worker)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.sess, k.valid, k.renewed = sess, sent.Add(k.s.LeaseTTL()-k.margin), sent
	k.mu.Unlock()
	k.log.Info("session opened", zap.String("session", sess.ID))
	return nil
}

// Session returns the current session.
func (k *Keeper) Session() Session {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sess
}

// Add keeps l, acquired under sess. It reports false, and keeps nothing,
// when sess is no longer the current session (it was lost while l was being
// acquired: the job is already anybody's).
func (k *Keeper) Add(sess Session, l Lease) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if sess.ID == "" || sess.ID != k.sess.ID {
		return false
	}
	k.held[l.ID] = l.Token
	return true
}

// Remove stops keeping the job id if it still has token.
func (k *Keeper) Remove(id string, token int64) {
	k.mu.Lock()
	if t, ok := k.held[id]; ok && t == token {
		delete(k.held, id)
	}
	k.mu.Unlock()
}

// Valid reports whether the lease (id, token) is held and the session is
// certainly still alive now by the local clock.
func (k *Keeper) Valid(id string, token int64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	t, ok := k.held[id]
	return ok && t == token && time.Now().Before(k.valid)
}

// Held returns the leases being kept.
func (k *Keeper) Held() []Lease {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Lease, 0, len(k.held))
	for id, t := range k.held {
		out = append(out, Lease{ID: id, Token: t})
	}
	return out
}

// Len returns how many leases are kept.
func (k *Keeper) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// Run renews every Interval until ctx ends.
func (k *Keeper) Run(ctx context.Context) {
	startstop.Every(ctx, k.cfg.Interval, func(ctx context.Context) { _ = k.RenewOnce(ctx) })
}

// RenewOnce renews the session in one round trip. When the session's
// local validity ran out (Redis could not be reached, or answered too late),
// or Redis says the session is gone, every job is lost (OnSessionLost) and
// a new session is opened.
func (k *Keeper) RenewOnce(ctx context.Context) error {
	k.mu.Lock()
	sess, n := k.sess, len(k.held)
	k.mu.Unlock()
	if sess.ID == "" {
		return k.reopen(ctx)
	}
	sent := time.Now()
	var stats []byte
	if k.cfg.Stats != nil {
		stats = k.cfg.Stats()
	}
	res, err := k.s.renew(ctx, sess, n, stats)
	if k.cfg.OnRenew != nil {
		k.cfg.OnRenew(n, err)
	}
	if took := time.Since(sent); took > k.cfg.Interval && ctx.Err() == nil {
		// On its own connection a renewal takes a round trip: longer
		// means Redis was busy or this process was not running.
		k.log.Warn("session renewal was slow", zap.Duration("took", took), zap.Duration("interval", k.cfg.Interval))
	}
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn("session renewal failed", zap.Error(err), zap.Int("held", n))
		}
		k.mu.Lock()
		expired := !time.Now().Before(k.valid)
		k.mu.Unlock()
		if expired {
			k.lose(sess, LostExpired)
		}
		return err
	}
	k.mu.Lock()
	old := k.epoch
	k.epoch = res.Epoch
	// The local validity ran out before the answer came back: the jobs
	// that looked at it meanwhile (Valid) stopped and dropped themselves,
	// yet their records name this session, alive in Redis. Reviving it
	// would leave them held by nobody who runs them until the worker
	// restarts, so it is lost like a session whose renewal failed: its jobs
	// are anybody's once it expires (LeaseTTL after this renewal).
	lapsed := res.Alive && k.sess.ID == sess.ID && !time.Now().Before(k.valid)
	if res.Alive && !lapsed && k.sess.ID == sess.ID {
		if v := sent.Add(k.s.LeaseTTL() - k.margin); v.After(k.valid) {
			k.valid = v
		}
		k.renewed = sent
	}
	k.mu.Unlock()
	if lapsed {
		k.log.Warn("session renewed after its local validity ran out: abandoned", zap.String("session", sess.ID),
			zap.Duration("late_by", time.Since(sent)))
		k.lose(sess, LostExpired)
		return k.reopen(ctx)
	}
	epochChanged := old != "" && old != res.Epoch
	if !res.Alive {
		why := LostExpired
		if epochChanged || res.Epoch == "" {
			why = LostMissing
		}
		k.lose(sess, why)
	}
	if epochChanged && k.cfg.OnEpoch != nil {
		k.cfg.OnEpoch(old, res.Epoch)
	}
	if !res.Alive {
		return k.reopen(ctx)
	}
	return nil
}

// lose drops every job of sess and reports it, once per session.
func (k *Keeper) lose(sess Session, why LossReason) {
	k.mu.Lock()
	if k.sess.ID != sess.ID {
		k.mu.Unlock()
		return
	}
	held, renewed := k.held, k.renewed
	k.held = map[string]int64{}
	k.sess, k.valid = Session{}, time.Time{}
	k.mu.Unlock()
	// How long ago the last renewal that kept it alive was sent: with
	// renewals every Interval, much more than Interval says they stopped
	// (this process or Redis stalled), not that one failed.
	k.log.Warn("session lost: every job it held is dropped", zap.String("session", sess.ID),
		zap.String("reason", string(why)), zap.Int("jobs", len(held)), zap.Duration("renewed_ago", time.Since(renewed)))
	if k.cfg.OnSessionLost != nil {
		k.cfg.OnSessionLost(why, len(held))
	}
	if k.cfg.OnLost != nil {
		for id, tok := range held {
			k.cfg.OnLost(id, tok, why)
		}
	}
}

func (k *Keeper) reopen(ctx context.Context) error {
	if err := k.Open(ctx); err != nil {
		if ctx.Err() == nil {
			k.log.Warn("could not open a new session; retrying at the next tick", zap.Error(err))
		}
		return err
	}
	return nil
}

// SetEpoch records the epoch the worker started with.
func (k *Keeper) SetEpoch(e string) {
	k.mu.Lock()
	k.epoch = e
	k.mu.Unlock()
}

// RunMail reads the session's mailbox until ctx ends: jobs taken away
// (OnLost) and aborts requested (OnAbort) arrive as soon as they are sent.
func (k *Keeper) RunMail(ctx context.Context) {
	if k.mail == nil {
		return
	}
	for ctx.Err() == nil {
		if k.ReadMailOnce(ctx) != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second): // Redis unreachable: ask again soon
			}
		}
	}
}

// ReadMailOnce waits up to MailWait for the session's mail and handles it.
func (k *Keeper) ReadMailOnce(ctx context.Context) error {
	sess := k.Session()
	if sess.ID == "" {
		return errors.New("state: no session")
	}
	msgs, err := k.mail.ReadMail(ctx, sess, k.cfg.MailWait, 100)
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn("reading the session's mail failed", zap.Error(err))
		}
		return err
	}
	for _, m := range msgs {
		switch {
		case m.Abort:
			if k.cfg.OnAbort != nil {
				k.cfg.OnAbort(m.JobID)
			}
		case m.Lost != "":
			k.mu.Lock()
			t, ok := k.held[m.JobID]
			if ok && t == m.Token {
				delete(k.held, m.JobID)
			}
			k.mu.Unlock()
			if ok && t == m.Token {
				k.log.Info("lease lost", zap.String("job_id", m.JobID), zap.String("reason", string(m.Lost)))
				if k.cfg.OnLost != nil {
					k.cfg.OnLost(m.JobID, m.Token, m.Lost)
				}
			}
		}
	}
	return nil
}
