package state

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

func queued(g *gate) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.q.Len()
}

func held(g *gate) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holder != nil
}

// TestGateServesByPriorityAndPreemptsTheHolder: waiters are served by
// priority, in arrival order within one; a cancel arriving while a poll
// holds the gate makes the holder step back.
func TestGateServesByPriorityAndPreemptsTheHolder(t *testing.T) {
	t.Parallel()
	g := &gate{}
	ctx := context.Background()
	holder, err := g.enter(ctx, httpc.PriorityPoll)
	require.NoError(t, err)

	var mu sync.Mutex
	var order []string
	enter := func(name string, p httpc.Priority, want int) {
		go func() {
			w, err := g.enter(ctx, p)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			g.leave(w, 0)
		}()
		require.Eventually(t, func() bool { return queued(g) == want }, 5*time.Second, time.Millisecond)
	}
	enter("poll-1", httpc.PriorityPoll, 1)
	enter("collect", httpc.PriorityCollect, 2)
	select {
	case <-g.preempted(holder):
	default:
		t.Fatal("a collect waiting behind a poll must preempt it")
	}
	enter("poll-2", httpc.PriorityPoll, 3)
	enter("cancel", httpc.PriorityCancel, 4)

	// The holder steps back and queues again ahead of later polls.
	done := make(chan error, 1)
	go func() { done <- g.yield(ctx, holder) }()
	require.NoError(t, <-done)
	mu.Lock()
	require.Equal(t, []string{"cancel", "collect"}, order, "the more urgent waiters went first")
	mu.Unlock()
	g.leave(holder, 0)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 4
	}, 5*time.Second, time.Millisecond)
	require.Equal(t, []string{"cancel", "collect", "poll-1", "poll-2"}, order)
	require.Eventually(t, func() bool { return !held(g) }, 5*time.Second, time.Millisecond, "free at the end")
}

func TestGateWaiterLeavesOnContextEnd(t *testing.T) {
	t.Parallel()
	g := &gate{}
	holder, err := g.enter(context.Background(), httpc.PriorityPoll)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := g.enter(ctx, httpc.PriorityCancel)
		errc <- err
	}()
	require.Eventually(t, func() bool { return queued(g) == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
	require.Zero(t, queued(g))
	g.leave(holder, 0)
	require.False(t, held(g))
}

// TestRateLimiterGrantsCancelsBeforeQueuedPolls: with the budget short, a
// cancel asked for after many polls is granted before every poll still
// waiting.
func TestRateLimiterGrantsCancelsBeforeQueuedPolls(t *testing.T) {
	t.Parallel()
	rdb, ns := testenv.RedisClient(t)
	s, err := New(rdb, Config{Namespace: ns})
	require.NoError(t, err)
	l := s.RateLimiter("sophos:client", 20, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, l.Wait(ctx)) // the budget is spent for now

	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	ask := func(name string, p httpc.Priority) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Wait(httpc.WithPriority(ctx, p)); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		}()
	}
	ask("poll-0", httpc.PriorityPoll)
	require.Eventually(t, func() bool { return held(l.gate) }, 5*time.Second, time.Millisecond)
	for i := 1; i <= 5; i++ {
		ask("poll", httpc.PriorityPoll)
		require.Eventually(t, func() bool { return queued(l.gate) == i }, 5*time.Second, time.Millisecond)
	}
	ask("cancel", httpc.PriorityCancel)
	wg.Wait()
	require.Len(t, order, 7)
	require.Equal(t, "cancel", order[0], "the cancel waits behind no poll: %v", order)
}

// TestRateLimiterGrantsTheWaitersInOneCall: the holder asks Redis for
// itself and the waiters behind it (up to the burst) in one call, and they
// all go.
func TestRateLimiterGrantsTheWaitersInOneCall(t *testing.T) {
	t.Parallel()
	rdb, ns := testenv.RedisClient(t)
	s, err := New(rdb, Config{Namespace: ns})
	require.NoError(t, err)
	require.NoError(t, s.Load(context.Background()))
	l := s.RateLimiter("cbc:org", 10, 50, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hold, err := l.gate.enter(ctx, httpc.PriorityPoll) // as if a request were asking now
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := 1; i <= 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, l.Wait(ctx))
		}()
		require.Eventually(t, func() bool { return queued(l.gate) == i }, 5*time.Second, time.Millisecond)
	}
	calls := &testutil.RedisCounter{}
	rdb.AddHook(calls)
	l.gate.leave(hold, 0)
	wg.Wait()
	require.EqualValues(t, 1, calls.Scripts.Load(), "twenty grants, one script call")
	require.False(t, held(l.gate))

	// The grants counted against the fleet's budget: of the burst of 50,
	// 30 are left now.
	got := 0
	for {
		wait, n, err := l.ask(ctx, 100, 1)
		require.NoError(t, err)
		if wait > 0 {
			break
		}
		got += n
	}
	require.InDelta(t, 30, got, 1, "the burst left after the twenty (one more may have accrued)")
}

// TestRateLimiterHolderSpendsCreditLeftWhileItQueued: a request that found
// no credit and queued behind the holder, who then left credit, spends that
// credit when its turn comes instead of asking Redis again (which would
// overwrite the credit and lose those grants).
func TestRateLimiterHolderSpendsCreditLeftWhileItQueued(t *testing.T) {
	t.Parallel()
	rdb, ns := testenv.RedisClient(t)
	s, err := New(rdb, Config{Namespace: ns})
	require.NoError(t, err)
	require.NoError(t, s.Load(context.Background()))
	l := s.RateLimiter("cbc:org", 1000, 10, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hold, err := l.gate.enter(ctx, httpc.PriorityPoll) // as if a request were asking now
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	require.Eventually(t, func() bool { return queued(l.gate) == 1 }, 5*time.Second, time.Millisecond)

	calls := &testutil.RedisCounter{}
	rdb.AddHook(calls)
	l.addCredit(3) // the holder's call got grants nobody was waiting for yet
	l.gate.leave(hold, 0)
	require.NoError(t, <-done)
	require.Zero(t, calls.Scripts.Load(), "the queued request spent the credit, no Redis call")
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Equal(t, 2, l.credit, "one grant of the credit spent, the rest kept")
}
