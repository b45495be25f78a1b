package state

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// RateLimiter paces requests to one vendor credential across the whole
// fleet: a GCRA limiter in Redis (Rate requests per second, Burst at once),
// plus a fleet-wide cool-down that a 429 anywhere sets for its Retry-After.
// It implements internal/httpc.Limiter. Each Wait is one Redis round trip
// (plus one per wait it has to sleep through).
//
// Within one process the waiters of a limiter queue locally by priority
// (httpc.PriorityOf: cancel, start, collect, poll), and only the first asks
// Redis: the budget goes to cancels before polls whatever the order the
// calls were made in. A poll that finds the budget spent waits until the
// polls queued behind it may go too (up to the burst) and takes them in
// one call: a spent budget costs Redis about two calls per burst of polls,
// not two per grant, nor one per waiter. When the budget is ample the
// first also asks ahead, up to the burst, for as many grants as the
// process asked for in the last creditWindow; what the waiters do not take
// is credit the next requests spend without a Redis call. A process
// sending R requests a second costs Redis about max(R/burst, 10) calls a
// second instead of R. (Not for a budget under one grant per
// creditWindow: there an unused grant would be a large share of it.)
//
// If Redis cannot be reached the limiter fails open with local pacing at the
// same rate, so a Redis blip slows vendor work down instead of stopping it.
// It is safe for concurrent use.
type RateLimiter struct {
	s        *Store
	name     string
	tenant   string // "" = the credential alone (see ForTenant)
	tenTat   string
	active   string
	interval time.Duration
	tol      time.Duration
	tat      string
	cool     string
	log      *zap.Logger
	gate     *gate
	// OnWait, if set, is told how long each Wait blocked (metrics).
	OnWait func(d time.Duration)

	mu        sync.Mutex
	localNext time.Time
	coolUntil time.Time
	// credit is grants a Redis call got ahead for this process's next
	// requests, usable until creditUntil; demand counts this process's
	// requests in the current and the previous creditWindow.
	credit      int
	creditUntil time.Time
	demand      demandWindow
}

// creditWindow is how long grants asked ahead stay usable, and the window
// over which demand is counted to decide how many to ask ahead. A grant is
// spent in the fleet's budget when Redis gives it, so one used up to this
// much later is at most a burst this much late; one not used is budget
// lost, which asking for no more than the last window's demand keeps small.
const creditWindow = 100 * time.Millisecond

// demandWindow counts requests per creditWindow.
type demandWindow struct {
	start     time.Time
	cur, prev int
}

// add counts one request at now.
func (d *demandWindow) add(now time.Time) {
	switch since := now.Sub(d.start); {
	case since >= 2*creditWindow:
		d.start, d.prev, d.cur = now, 0, 0
	case since >= creditWindow:
		d.start, d.prev, d.cur = d.start.Add(creditWindow), d.cur, 0
	}
	d.cur++
}

// ahead is how many grants to ask for beyond those waiting: the demand of
// the busier of the current and the previous window.
func (d *demandWindow) ahead() int { return max(d.cur, d.prev) }

// RateLimiter returns the fleet-wide limiter for name (a vendor credential,
// e.g. "sophos:<client id>"). rate is requests per second (<= 0 disables the
// GCRA part, keeping the 429 cool-down); burst is at least 1.
func (s *Store) RateLimiter(name string, rate float64, burst int, log *zap.Logger) *RateLimiter {
	if log == nil {
		log = zap.NewNop()
	}
	burst = max(burst, 1)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
	}
	return &RateLimiter{
		s: s, name: name, interval: interval, tol: time.Duration(burst-1) * interval,
		tat: s.pfx + "rl:" + name, cool: s.pfx + "cool:" + name,
		log:  log.Named("ratelimit").With(zap.String("limiter", name)),
		gate: &gate{},
	}
}

// Wait blocks until the fleet may send one more request, or ctx ends.
// Waiters of a higher priority (httpc.WithPriority) go first.
func (l *RateLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	defer func() {
		if l.OnWait != nil {
			l.OnWait(time.Since(start))
		}
	}()
	spent, ahead := l.fromCredit(true)
	if spent {
		return ctx.Err() // a grant asked ahead earlier
	}
	w, err := l.gate.enter(ctx, httpc.PriorityOf(ctx))
	if err != nil || w.granted {
		return err // granted: a holder asked for it along with its own
	}
	// The holder before it may have left credit while it queued: spent
	// first, rather than asked for again (and overwritten).
	if spent, _ := l.fromCredit(false); spent {
		l.gate.leave(w, 0)
		return ctx.Err()
	}
	extra := 0
	defer func() {
		if left := l.gate.leave(w, extra); left > 0 {
			l.addCredit(left)
		}
	}()
	// A poll that finds the budget spent waits until the polls queued
	// behind it may go too, and takes them in one call: at saturation a
	// grant a call, each after a call that said how long to wait, was two
	// Redis calls per request. Once: after one wait it takes what there
	// is, so other workers' batches cannot keep it waiting.
	least := 1
	if httpc.PriorityOf(ctx) == httpc.PriorityPoll {
		least = min(1+l.gate.queued(), l.maxBatch())
	}
	for {
		// Ask for this request and, as far as the burst allows, for the
		// ones waiting behind it and those the last window's demand says
		// will come: one Redis call for several grants.
		want := min(1+l.gate.queued()+ahead, l.maxBatch())
		wait, got, err := l.ask(ctx, want, min(least, want))
		least = 1
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.log.Warn("fleet rate limiter unreachable; pacing locally", zap.Error(err))
			return l.local(ctx)
		}
		if wait <= 0 {
			extra = got - 1
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-l.gate.preempted(w):
			// A more urgent request arrived: it asks first.
			t.Stop()
			if err := l.gate.yield(ctx, w); err != nil {
				return err
			}
		}
	}
}

// fromCredit spends a grant asked ahead if one is left; otherwise it says
// how many grants to ask ahead for. count: the request is new (counted in
// the demand).
func (l *RateLimiter) fromCredit(count bool) (spent bool, ahead int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if count {
		l.demand.add(now)
	}
	if l.credit > 0 && now.Before(l.creditUntil) && !now.Before(l.coolUntil) {
		l.credit--
		return true, 0
	}
	l.credit = 0
	if l.interval > creditWindow {
		// A budget slower than one grant a window (Sophos's 1.5/s): a
		// grant asked ahead and not used would be a large share of it.
		return false, 0
	}
	return false, l.demand.ahead()
}

// addCredit keeps n grants for the next requests, for creditWindow.
func (l *RateLimiter) addCredit(n int) {
	l.mu.Lock()
	l.credit, l.creditUntil = n, time.Now().Add(creditWindow)
	l.mu.Unlock()
}

// FairWindow is how recently a tenant must have asked to count as active in
// the fair share of a credential (ForTenant).
const FairWindow = 2 * time.Second

// ForTenant returns a limiter for tenant's requests on the same credential:
// it spends the same fleet-wide budget and cool-down, and when several
// tenants share the credential (a Sophos partner credential, say), each
// tenant that asked within FairWindow is held to an equal share of the
// budget, so one customer's thousand jobs cannot starve another's ten. A
// tenant alone on the credential gets all of it.
func (l *RateLimiter) ForTenant(tenant string) *RateLimiter {
	c := &RateLimiter{s: l.s, name: l.name, interval: l.interval, tol: l.tol, tat: l.tat, cool: l.cool,
		log: l.log.With(zap.String("tenant", tenant)), OnWait: l.OnWait, tenant: tenant, gate: &gate{},
		tenTat: l.tat + ":t:" + tenant, active: l.tat + ":tenants"}
	return c
}

// maxBatch is the most grants one Redis call asks for: the burst.
func (l *RateLimiter) maxBatch() int {
	if l.interval <= 0 {
		return 64
	}
	return int(l.tol/l.interval) + 1
}

// ask asks the fleet's budget for want requests: it returns how long to
// wait, or how many may go now (at least one; at least least, without
// tenants: rateScript).
func (l *RateLimiter) ask(ctx context.Context, want, least int) (time.Duration, int, error) {
	iv := l.interval
	if iv <= 0 {
		iv = time.Microsecond // cool-down only: GCRA effectively off
	}
	tol := l.tol
	if l.interval <= 0 {
		tol = time.Hour
	}
	var v any
	var err error
	if l.tenant != "" && l.interval > 0 {
		v, err = l.s.run(ctx, fairRateScript, []string{l.tat, l.cool, l.tenTat, l.active},
			iv.Microseconds(), tol.Microseconds(), l.tenant, FairWindow.Milliseconds(), want)
	} else {
		v, err = l.s.run(ctx, rateScript, []string{l.tat, l.cool}, iv.Microseconds(), tol.Microseconds(), want, least)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("state: rate limit %s: %w", l.name, err)
	}
	r, _ := v.([]any)
	if len(r) != 2 {
		return 0, 0, fmt.Errorf("state: rate limit %s: unexpected reply %v", l.name, v)
	}
	us, _ := r[0].(int64)
	got, _ := r[1].(int64)
	if us <= 0 {
		return 0, max(int(got), 1), nil
	}
	return time.Duration(us) * time.Microsecond, 0, nil
}

// local paces this process alone, used only while Redis is unreachable.
func (l *RateLimiter) local(ctx context.Context) error {
	l.mu.Lock()
	now := time.Now()
	next := now
	for _, t := range []time.Time{l.localNext, l.coolUntil} {
		if t.After(next) {
			next = t
		}
	}
	l.localNext = next.Add(l.interval)
	l.mu.Unlock()
	return sleep(ctx, next.Sub(now))
}

// Throttled records a 429: nobody in the fleet sends to this credential for d.
func (l *RateLimiter) Throttled(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	l.mu.Lock()
	if u := time.Now().Add(d); u.After(l.coolUntil) {
		l.coolUntil = u
	}
	l.credit = 0 // asked ahead before the 429: not to be spent after it
	l.mu.Unlock()
	if err := throttleScript.Run(ctx, l.s.rdb, []string{l.cool}, d.Milliseconds()).Err(); err != nil && ctx.Err() == nil {
		l.log.Warn("could not record fleet-wide cool-down", zap.Error(err))
	}
}

// CoolDown returns the fleet-wide cool-down left for name, or 0.
func (s *Store) CoolDown(ctx context.Context, name string) (time.Duration, error) {
	d, err := s.rdb.PTTL(ctx, s.pfx+"cool:"+name).Result()
	if err != nil || d < 0 {
		return 0, err
	}
	return d, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
