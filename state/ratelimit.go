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
// It implements internal/httpc.Limiter.
//
// Within one process the waiters of a limiter queue locally by priority
// (httpc.PriorityOf: cancel, start, collect, poll), and only the first asks
// Redis: the budget goes to cancels before polls whatever the order the
// calls were made in.
//
// One Redis call reserves several grants: those the burst allows now, and
// the fleet's next slots for up to reserveHorizon ahead (GCRA slot times,
// so the fleet's rate holds exactly), as many as wait here plus as many as
// this process asked for in the last creditWindow. Grants are not tied to
// the request that asked: each goes, at its time, to the most urgent
// waiter then. So a process sending R requests a second costs Redis about
// max(R/(burst + R·reserveHorizon), 1/reserveHorizon) calls a second, at
// most about ten a second whether the budget is ample or short, instead of
// one or two a request. A grant not used within creditWindow of its time
// is dropped (it must not add to a burst later), which asking for no more
// than recent demand keeps rare. A budget slower than one grant a
// creditWindow (Sophos's 1.5/s) is not asked ahead of demand: an unused
// grant would be a large share of it.
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
	// got is the grants Redis reserved for this process's requests;
	// demand counts this process's requests in the current and the
	// previous creditWindow.
	got    grants
	demand demandWindow
}

// creditWindow is how long after its time a reserved grant stays usable,
// and the window over which demand is counted to decide how many to ask
// ahead. A grant is spent in the fleet's budget when Redis reserves it, so
// one used up to this much late is at most a burst this much late; one not
// used is budget lost, which asking for no more than the last window's
// demand keeps small.
const creditWindow = 100 * time.Millisecond

// reserveHorizon is how far ahead one Redis call reserves the fleet's next
// slots; maxReserveAhead, how far the next slot may be and still be
// reserved alone (further: the asker sleeps and asks again, so a cool-down
// another worker sets meanwhile is seen). maxWant caps one call's grants.
const (
	reserveHorizon  = 100 * time.Millisecond
	maxReserveAhead = time.Second
	maxWant         = 1000
)

// grants are what the fleet's budget reserved for this process: some
// usable at once (until nowUntil), then n more, the first at at and each
// iv after the one before.
type grants struct {
	now      int
	nowUntil time.Time
	at       time.Time
	n        int
	iv       time.Duration
}

// take takes up to most grants usable at t, after dropping those more than
// creditWindow past their time. It returns how many it took and when the
// next one left is usable (zero: none is left).
func (g *grants) take(t time.Time, most int) (took int, next time.Time) {
	if !t.Before(g.nowUntil) {
		g.now = 0
	}
	took = min(g.now, most)
	g.now -= took
	if late := t.Sub(g.at) - creditWindow; g.n > 0 && late > 0 {
		g.skip(g.count(late))
	}
	if g.n > 0 && !t.Before(g.at) && took < most {
		k := min(g.count(t.Sub(g.at)), most-took)
		g.skip(k)
		took += k
	}
	switch {
	case g.now > 0:
		next = t
	case g.n > 0:
		next = g.at
	}
	return took, next
}

// count is how many of the n slots lie within d after at (at itself
// included), at most n.
func (g *grants) count(d time.Duration) int {
	if g.iv <= 0 {
		return g.n
	}
	return min(g.n, int(d/g.iv)+1)
}

// skip drops the first k of the n slots.
func (g *grants) skip(k int) {
	g.at = g.at.Add(time.Duration(k) * g.iv)
	g.n -= k
}

// add keeps a reservation r that Redis answered at t (local time).
func (g *grants) add(t time.Time, r reservation) {
	due := 0
	if r.first <= 0 {
		due = r.n
		if r.iv > 0 {
			due = min(r.n, int(-r.first/r.iv)+1)
		}
	}
	g.giveBack(t, due)
	if rest := r.n - due; rest > 0 {
		g.at, g.n, g.iv = t.Add(r.first+time.Duration(due)*r.iv), rest, r.iv
	}
}

// giveBack keeps k grants usable at once, for creditWindow from t.
func (g *grants) giveBack(t time.Time, k int) {
	if k <= 0 {
		return
	}
	if !t.Before(g.nowUntil) {
		g.now = 0
	}
	g.now += k
	g.nowUntil = t.Add(creditWindow)
}

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
	spent, ahead := l.fromReserved()
	if spent {
		return ctx.Err() // a grant reserved earlier, and nobody waits before us
	}
	w, err := l.gate.enter(ctx, httpc.PriorityOf(ctx))
	if err != nil || w.granted {
		return err // granted: the holder before us passed a grant on
	}
	extra := 0
	defer func() {
		if left := l.gate.leave(w, extra); left > 0 {
			l.mu.Lock()
			l.got.giveBack(time.Now(), left)
			l.mu.Unlock()
		}
	}()
	for {
		// Take what is reserved and due, for this request and the ones
		// waiting behind it; else sleep until the next reserved grant;
		// else ask Redis for this one, those waiting, and those the last
		// window's demand says will come.
		queued := l.gate.queued()
		now := time.Now()
		l.mu.Lock()
		took, next := l.got.take(now, 1+queued)
		l.mu.Unlock()
		if took > 0 {
			extra = took - 1
			return nil
		}
		var wait time.Duration
		if !next.IsZero() {
			wait = next.Sub(now)
		} else {
			r, err := l.ask(ctx, min(1+queued+ahead, maxWant))
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				l.log.Warn("fleet rate limiter unreachable; pacing locally", zap.Error(err))
				return l.local(ctx)
			}
			if r.n > 0 {
				l.mu.Lock()
				l.got.add(time.Now(), r)
				l.mu.Unlock()
				continue
			}
			wait = r.first
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-l.gate.preempted(w):
			// A more urgent request arrived: it goes first (the grants
			// reserved are the limiter's, not this request's).
			t.Stop()
			if err := l.gate.yield(ctx, w); err != nil {
				return err
			}
		}
	}
}

// fromReserved counts a request and, when nobody is waiting at the gate,
// spends a grant reserved earlier that is usable now; otherwise it says
// how many grants to ask ahead for.
func (l *RateLimiter) fromReserved() (spent bool, ahead int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.demand.add(now)
	if now.Before(l.coolUntil) {
		l.got = grants{}
	} else if l.gate.idle() {
		if took, _ := l.got.take(now, 1); took > 0 {
			return true, 0
		}
	}
	if l.interval > creditWindow {
		// A budget slower than one grant a window (Sophos's 1.5/s): a
		// grant asked ahead and not used would be a large share of it.
		return false, 0
	}
	return false, l.demand.ahead()
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

// reservation is a rate script's answer: n grants, the first usable at
// first from the call (<= 0: now) and each next one iv after it; with n 0,
// nothing was reserved and first is how long to wait before asking again.
type reservation struct {
	first time.Duration
	n     int
	iv    time.Duration
}

// ask asks the fleet's budget for want requests.
func (l *RateLimiter) ask(ctx context.Context, want int) (reservation, error) {
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
			iv.Microseconds(), tol.Microseconds(), l.tenant, FairWindow.Milliseconds(), want,
			reserveHorizon.Microseconds(), maxReserveAhead.Microseconds())
	} else {
		v, err = l.s.run(ctx, rateScript, []string{l.tat, l.cool}, iv.Microseconds(), tol.Microseconds(), want,
			reserveHorizon.Microseconds(), maxReserveAhead.Microseconds())
	}
	if err != nil {
		return reservation{}, fmt.Errorf("state: rate limit %s: %w", l.name, err)
	}
	r, _ := v.([]any)
	if len(r) != 3 {
		return reservation{}, fmt.Errorf("state: rate limit %s: unexpected reply %v", l.name, v)
	}
	first, _ := r[0].(int64)
	n, _ := r[1].(int64)
	step, _ := r[2].(int64)
	if n < 0 || n > int64(want) || step < 0 {
		return reservation{}, fmt.Errorf("state: rate limit %s: unexpected reply %v", l.name, v)
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	if n == 0 && first <= 0 {
		first = 1 // nothing reserved: never a busy loop
	}
	return reservation{first: us(first), n: int(n), iv: us(step)}, nil
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
	l.got = grants{} // reserved before the 429: not to be spent after it
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
