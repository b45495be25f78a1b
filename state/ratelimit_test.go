package state_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/state"
)

// The limiter must never let the fleet go faster than the rate: N requests
// from several "workers" (limiters sharing a name) take at least (N-1)/rate.
// This is a lower bound, so a slow machine cannot make it fail.
func TestRateLimiterPacesTheWholeFleet(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	const rate, n = 50.0, 40
	fleet := []*state.RateLimiter{
		b.store.RateLimiter("sophos:client", rate, 1, nil),
		b.store.RateLimiter("sophos:client", rate, 1, nil),
		b.store.RateLimiter("sophos:client", rate, 1, nil),
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, fleet[i%len(fleet)].Wait(ctx(t)))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	minimum := time.Duration(float64(n-1) / rate * float64(time.Second))
	require.GreaterOrEqual(t, elapsed, minimum-20*time.Millisecond,
		"%d requests at %.0f/s across three limiters must take at least %s", n, rate, minimum)
}

func TestThrottledPausesEveryLimiterSharingTheCredential(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	a := b.store.RateLimiter("cbc:org", 0, 1, nil)
	other := b.store.RateLimiter("cbc:org", 0, 1, nil)
	require.NoError(t, a.Wait(ctx(t)), "no rate configured: no pacing")
	const d = 300 * time.Millisecond
	a.Throttled(ctx(t), d)
	left, err := b.store.CoolDown(ctx(t), "cbc:org")
	require.NoError(t, err)
	require.Greater(t, left, time.Duration(0))
	start := time.Now()
	require.NoError(t, other.Wait(ctx(t)))
	require.GreaterOrEqual(t, time.Since(start), d-50*time.Millisecond,
		"a 429 seen by one worker pauses the credential for the whole fleet")
}

// TestCoolDownOfAnEarlierVersionIsHonoured: a worker of an earlier version
// marks a cool-down with the value '1' (its TTL says how long); a limiter
// of this version, which reads the end time from the value, waits it out
// too, and a cool-down it sets is one the earlier version's PTTL reads.
func TestCoolDownOfAnEarlierVersionIsHonoured(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	const d = 300 * time.Millisecond
	pfx := "{" + b.ns + "}:"
	for _, l := range []*state.RateLimiter{b.store.RateLimiter("cbc:old", 0, 1, nil), b.store.RateLimiter("cbc:old", 100, 1, nil).ForTenant("acme")} {
		require.NoError(t, b.rdb.Set(ctx(t), pfx+"cool:cbc:old", "1", d).Err())
		start := time.Now()
		require.NoError(t, l.Wait(ctx(t)))
		require.GreaterOrEqual(t, time.Since(start), d-50*time.Millisecond, "the earlier version's cool-down is waited out")
	}

	b.store.RateLimiter("cbc:new", 0, 1, nil).Throttled(ctx(t), time.Minute)
	left, err := b.rdb.PTTL(ctx(t), pfx+"cool:cbc:new").Result()
	require.NoError(t, err)
	require.Greater(t, left, 50*time.Second, "the key's TTL is the cool-down, as the earlier version reads it")
}

// TestSharedCredentialIsSharedFairly: two tenants on one credential (a
// Sophos partner credential). One floods it from eight goroutines, the other
// asks one request at a time. Without the fair share the quiet tenant would
// get about one grant in nine; with it, about half.
func TestSharedCredentialIsSharedFairly(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	base := b.store.RateLimiter("sophos:partner", 200, 1, nil)
	loud, quiet := base.ForTenant("acme"), base.ForTenant("globex")
	const total = 200
	var mu sync.Mutex
	grants := map[string]int{}
	done := make(chan struct{})
	grant := func(who string) bool {
		mu.Lock()
		defer mu.Unlock()
		if grants["acme"]+grants["globex"] >= total {
			return false
		}
		grants[who]++
		if grants["acme"]+grants["globex"] == total {
			close(done)
		}
		return true
	}
	var wg sync.WaitGroup
	run := func(l *state.RateLimiter, who string) {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			require.NoError(t, l.Wait(ctx(t)))
			if !grant(who) {
				return
			}
		}
	}
	for range 8 {
		wg.Add(1)
		go run(loud, "acme")
	}
	wg.Add(1)
	go run(quiet, "globex")
	wg.Wait()
	require.GreaterOrEqual(t, grants["globex"], total*3/10,
		"the quiet tenant got %d of %d grants", grants["globex"], total)
}

// TestAmpleBudgetIsAskedAheadNotPerRequest: with a budget to spare, a
// process's requests spend grants asked ahead (up to the burst) instead of
// one Redis call each, and never go faster than the fleet's rate allows.
func TestAmpleBudgetIsAskedAheadNotPerRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	evals := &testutil.RedisCounter{}
	b.rdb.AddHook(evals)
	const rate, burst, n = 1e6, 100, 1000
	l := b.store.RateLimiter("cbc:org", rate, burst, nil)
	start := time.Now()
	for range n {
		require.NoError(t, l.Wait(ctx(t)))
	}
	elapsed := time.Since(start)
	t.Logf("%d requests, %d Redis calls", n, evals.Scripts.Load())
	require.Less(t, int(evals.Scripts.Load()), n/5, "%d requests asked Redis %d times", n, evals.Scripts.Load())
	minimum := time.Duration(float64(n-burst) / rate * float64(time.Second))
	require.GreaterOrEqual(t, elapsed, minimum-20*time.Millisecond, "never faster than the rate")

	// A budget slower than a grant per window is not asked ahead.
	evals.Scripts.Store(0)
	slow := b.store.RateLimiter("sophos:client", 5, 5, nil)
	for range 5 {
		require.NoError(t, slow.Wait(ctx(t)))
	}
	require.EqualValues(t, 5, evals.Scripts.Load(), "one Redis call per request")
}

// TestThrottledDropsGrantsAskedAhead: grants asked ahead before a 429 are
// not spent during its cool-down.
func TestThrottledDropsGrantsAskedAhead(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	l := b.store.RateLimiter("cbc:org", 5000, 100, nil)
	for range 200 { // demand enough to ask ahead
		require.NoError(t, l.Wait(ctx(t)))
	}
	const d = 300 * time.Millisecond
	l.Throttled(ctx(t), d)
	start := time.Now()
	require.NoError(t, l.Wait(ctx(t)))
	require.GreaterOrEqual(t, time.Since(start), d-50*time.Millisecond, "the cool-down holds even with grants left")
}

// TestSpentBudgetIsTakenABatchOfPollsAtATime: with more polls waiting than
// the budget allows, a worker takes them a batch (up to the burst) per
// grant call instead of a grant per call, each after a call that said how
// long to wait; and the fleet still goes no faster than the rate.
func TestSpentBudgetIsTakenABatchOfPollsAtATime(t *testing.T) {
	t.Parallel()
	b := setup(t, 30*time.Second)
	evals := &testutil.RedisCounter{}
	b.rdb.AddHook(evals)
	const rate, burst, n, pollers = 200.0, 5, 150, 20
	l := b.store.RateLimiter("cbc:spent", rate, burst, nil)
	ctx := httpc.WithPriority(ctx(t), httpc.PriorityPoll)
	var granted atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for range pollers {
		wg.Go(func() {
			for granted.Load() < n {
				require.NoError(t, l.Wait(ctx))
				granted.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	got, calls := int(granted.Load()), int(evals.Scripts.Load())
	t.Logf("%d grants in %s, %d Redis calls", got, elapsed.Round(time.Millisecond), calls)
	minimum := time.Duration(float64(got-burst) / rate * float64(time.Second))
	require.GreaterOrEqual(t, elapsed, minimum-20*time.Millisecond, "never faster than the rate")
	require.Less(t, calls, got*3/4, "a spent budget costs fewer calls than grants (a call per grant and one per wait before)")
}
