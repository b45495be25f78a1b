package state

import (
	"cmp"
	"context"
	"sync"
	"time"

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
	// OnLost is called (from the keeper's goroutine) for every lease found
	// lost, including leases whose local validity ran out while Redis was
	// unreachable (reason LostExpired). It must not block.
	OnLost func(id string, token int64, reason LossReason)
	// OnEpoch is called when a renewal sees a ledger epoch different from the
	// one seen before (Redis lost its data). It must not block.
	OnEpoch func(old, new string)
	// OnRenew is called after each renewal attempt (metrics).
	OnRenew func(held int, err error)
	Logger  *zap.Logger
}

// LostExpired is reported when the local validity of a lease ran out before
// a renewal could reach Redis.
const LostExpired LossReason = "expired"

// Keeper holds this worker's leases: it renews all of them in one Redis
// round trip per tick, and keeps a local, monotonic-clock view of how long
// each is certainly still valid. Valid must be checked before every vendor
// call or SampleDB write: a worker that was paused (SIGSTOP, GC, a stalled
// VM) for longer than the TTL finds its leases invalid on waking, before any
// renewal has told it so, and makes no call.
//
// A Keeper is safe for concurrent use.
type Keeper struct {
	s      *Store
	cfg    KeeperConfig
	margin time.Duration
	log    *zap.Logger

	mu    sync.Mutex
	held  map[string]*held
	epoch string
}

type held struct {
	token int64
	valid time.Time // monotonic: acquisition or last renewal send time + TTL - margin
}

// NewKeeper returns a Keeper for worker's leases in s.
func NewKeeper(s *Store, cfg KeeperConfig) *Keeper {
	ttl := s.LeaseTTL()
	cfg.Interval = cmp.Or(cfg.Interval, ttl/3)
	margin := cmp.Or(cfg.Margin, min(ttl/10, 2*time.Second))
	return &Keeper{
		s: s, cfg: cfg, margin: margin,
		log:  cmp.Or(cfg.Logger, zap.NewNop()).Named("lease"),
		held: map[string]*held{},
	}
}

// Add starts keeping l, acquired by a request sent at sent.
func (k *Keeper) Add(l Lease, sent time.Time) {
	k.mu.Lock()
	k.held[l.ID] = &held{token: l.Token, valid: sent.Add(k.s.LeaseTTL() - k.margin)}
	k.mu.Unlock()
}

// Remove stops keeping the lease for id if it still has token.
func (k *Keeper) Remove(id string, token int64) {
	k.mu.Lock()
	if h, ok := k.held[id]; ok && h.token == token {
		delete(k.held, id)
	}
	k.mu.Unlock()
}

// Valid reports whether the lease (id, token) is held and certainly still
// valid now by the local clock.
func (k *Keeper) Valid(id string, token int64) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	h, ok := k.held[id]
	return ok && h.token == token && time.Now().Before(h.valid)
}

// Held returns the leases being kept.
func (k *Keeper) Held() []Lease {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]Lease, 0, len(k.held))
	for id, h := range k.held {
		out = append(out, Lease{ID: id, Token: h.token})
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
	t := time.NewTicker(k.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = k.RenewOnce(ctx)
		}
	}
}

// RenewOnce renews every kept lease in one round trip and reports losses.
// When Redis cannot be reached, leases whose local validity has run out are
// reported lost (LostExpired).
func (k *Keeper) RenewOnce(ctx context.Context) error {
	leases := k.Held()
	sent := time.Now()
	res, err := k.s.Renew(ctx, k.cfg.Worker, leases)
	if k.cfg.OnRenew != nil {
		k.cfg.OnRenew(len(leases), err)
	}
	if err != nil {
		if ctx.Err() == nil {
			k.log.Warn("lease renewal failed", zap.Error(err), zap.Int("held", len(leases)))
		}
		k.expire()
		return err
	}
	lost := make(map[string]LossReason, len(res.Lost))
	for _, l := range res.Lost {
		lost[l.ID] = l.Reason
	}
	valid := sent.Add(k.s.LeaseTTL() - k.margin)
	var gone []lostLease
	k.mu.Lock()
	for _, l := range leases {
		h, ok := k.held[l.ID]
		if !ok || h.token != l.Token {
			continue // removed or re-acquired meanwhile
		}
		if why, isLost := lost[l.ID]; isLost {
			delete(k.held, l.ID)
			gone = append(gone, lostLease{l.ID, l.Token, why})
			continue
		}
		if valid.After(h.valid) {
			h.valid = valid
		}
	}
	old := k.epoch
	k.epoch = res.Epoch
	k.mu.Unlock()
	for _, g := range gone {
		k.report(g)
	}
	if old != "" && old != res.Epoch && k.cfg.OnEpoch != nil {
		k.cfg.OnEpoch(old, res.Epoch)
	}
	return nil
}

// SetEpoch records the epoch the worker started with.
func (k *Keeper) SetEpoch(e string) {
	k.mu.Lock()
	k.epoch = e
	k.mu.Unlock()
}

type lostLease struct {
	id     string
	token  int64
	reason LossReason
}

func (k *Keeper) expire() {
	now := time.Now()
	var gone []lostLease
	k.mu.Lock()
	for id, h := range k.held {
		if !now.Before(h.valid) {
			delete(k.held, id)
			gone = append(gone, lostLease{id, h.token, LostExpired})
		}
	}
	k.mu.Unlock()
	for _, g := range gone {
		k.report(g)
	}
}

func (k *Keeper) report(g lostLease) {
	k.log.Info("lease lost", zap.String("job_id", g.id), zap.String("reason", string(g.reason)))
	if k.cfg.OnLost != nil {
		k.cfg.OnLost(g.id, g.token, g.reason)
	}
}
