package cytomic

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
)

// fakeAPI stands in for /info and /state in batcher unit tests.
type fakeAPI struct {
	mu      sync.Mutex
	calls   [][]string // IDs per /info call
	states  [][]string
	arrived chan struct{} // one send per /info call, when not nil
	release chan struct{} // /info waits for it, when not nil
	errs    []error       // errors for the next /info calls, in order
}

func (f *fakeAPI) info(_ context.Context, ids []opID) (map[string]infoOp, error) {
	f.mu.Lock()
	f.calls = append(f.calls, texts(ids))
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	arrived, release := f.arrived, f.release
	f.mu.Unlock()
	if arrived != nil {
		arrived <- struct{}{}
	}
	if release != nil {
		<-release
	}
	if err != nil {
		return nil, err
	}
	out := map[string]infoOp{}
	for _, id := range ids {
		out[id.text] = infoOp{OperationID: id}
	}
	return out, nil
}

func (f *fakeAPI) state(_ context.Context, ids []opID) (map[string]stateOp, error) {
	f.mu.Lock()
	f.states = append(f.states, texts(ids))
	f.mu.Unlock()
	out := map[string]stateOp{}
	for _, id := range ids {
		out[id.text] = stateOp{OperationID: id, URL: "https://files.example/" + id.text}
	}
	return out, nil
}

func (f *fakeAPI) infoCalls() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func texts(ids []opID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.text
	}
	slices.Sort(out)
	return out
}

func ids(s ...string) []opID {
	out := make([]opID, len(s))
	for i, x := range s {
		out[i] = opID{text: x}
	}
	return out
}

func newTestBatcher(t *testing.T, api *fakeAPI, period time.Duration) *batcher {
	b := newBatcher(period, 500, zap.NewNop(), api.info, api.state)
	t.Cleanup(b.close)
	return b
}

func (b *batcher) waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiters)
}

func (b *batcher) isRunning() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

func TestRoundMergesAndDeduplicates(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	b := newTestBatcher(t, api, time.Hour) // the test runs the round itself
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]roundResult, 3)
	errs := make([]error, 3)
	wants := [][]opID{ids("a", "b"), ids("b", "c"), ids("d")}
	modes := []want{wantInfo, wantInfo, wantInfo | wantState}
	for i := range wants {
		wg.Go(func() { results[i], errs[i] = b.wait(ctx, "poll", wants[i], modes[i]) })
	}
	require.Eventually(t, func() bool { return b.waiting() == 3 }, 5*time.Second, time.Millisecond)
	require.True(t, b.runOnce(ctx))
	wg.Wait()
	for i := range errs {
		require.NoError(t, errs[i])
		require.Contains(t, results[i].info, wants[i][0].text)
	}
	require.Equal(t, [][]string{{"a", "b", "c", "d"}}, api.infoCalls(), "one request, each ID once")
	require.Equal(t, [][]string{{"d"}}, api.states, "/state only for the Collect")
	require.Contains(t, results[2].state, "d")
	require.False(t, b.runOnce(ctx), "nobody waits: no request")
	require.Len(t, api.infoCalls(), 1)
	st := b.snapshot()
	require.Equal(t, Stats{Rounds: 1, InfoRequests: 1, InfoIDs: 4, StateRequests: 1, StateIDs: 1}, st)
}

func TestLoopStopsWhenNobodyWaits(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	b := newTestBatcher(t, api, 5*time.Millisecond)
	_, err := b.wait(context.Background(), "poll", ids("a"), wantInfo)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return !b.isRunning() }, 5*time.Second, time.Millisecond)
	_, err = b.wait(context.Background(), "poll", ids("b"), wantInfo)
	require.NoError(t, err, "a new loop starts on demand")
	require.Len(t, api.infoCalls(), 2)
}

func TestThrottleHoldsLaterRounds(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{
		arrived: make(chan struct{}, 1),
		release: make(chan struct{}),
		errs:    []error{&edr.Error{Vendor: vendor, Op: "info", Status: http.StatusTooManyRequests, Retryable: true, RetryAfter: time.Hour}},
	}
	b := newTestBatcher(t, api, 10*time.Millisecond)
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { _, err := b.wait(ctx, "poll", ids("a"), wantInfo); first <- err }()
	<-api.arrived // the round's request is in flight

	second := make(chan error, 1)
	go func() { _, err := b.wait(ctx, "collect", ids("b"), wantInfo|wantState); second <- err }()
	require.Eventually(t, func() bool { return b.waiting() == 1 }, 5*time.Second, time.Millisecond)
	close(api.release) // now the 429 arrives

	err := <-first
	require.Equal(t, time.Hour, edr.RetryAfter(err))
	var ee *edr.Error
	require.True(t, errors.As(err, &ee))
	require.Equal(t, "poll", ee.Op)

	err = <-second
	require.True(t, edr.IsRetryable(err))
	require.Greater(t, edr.RetryAfter(err), 59*time.Minute, "registered before the 429 arrived: told to wait too")
	require.True(t, errors.As(err, &ee))
	require.Equal(t, "collect", ee.Op)

	_, err = b.wait(ctx, "poll", ids("c"), wantInfo)
	require.Greater(t, edr.RetryAfter(err), 59*time.Minute, "refused during the hold")
	require.Len(t, api.infoCalls(), 1, "no request during the hold")
	require.Empty(t, api.states)
}

func TestWaiterLeavingStopsTheLoop(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	b := newTestBatcher(t, api, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := b.wait(ctx, "poll", ids("a"), wantInfo); done <- err }()
	require.Eventually(t, func() bool { return b.waiting() == 1 }, 5*time.Second, time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.Eventually(t, func() bool { return !b.isRunning() }, 5*time.Second, time.Millisecond,
		"the hour-long timer does not keep the loop alive")
	require.Empty(t, api.infoCalls())
}

func TestCloseFailsWaitersRetryably(t *testing.T) {
	t.Parallel()
	api := &fakeAPI{}
	b := newTestBatcher(t, api, time.Hour)
	done := make(chan error, 1)
	go func() { _, err := b.wait(context.Background(), "collect", ids("a"), wantState); done <- err }()
	require.Eventually(t, func() bool { return b.waiting() == 1 }, 5*time.Second, time.Millisecond)
	b.close()
	err := <-done
	require.True(t, edr.IsRetryable(err))
	require.Contains(t, err.Error(), "cytomic collect")
	_, err = b.wait(context.Background(), "poll", ids("a"), wantInfo)
	require.True(t, edr.IsRetryable(err))
}

func TestSettledAnswersAreTakenOnceAndWhileFresh(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ref := reference{Ops: []refOp{{OperationID: opID{text: "a"}}, {OperationID: opID{text: "b"}}}}
	res := roundResult{
		info:  map[string]infoOp{"a": {}, "b": {}},
		state: map[string]stateOp{"a": {URL: "u-a"}, "b": {URL: "u-b"}},
	}
	var c settledCache
	c.keep(ref, res, t0)
	got, ok := c.take(ref.ids(), t0.Add(10*time.Second))
	require.True(t, ok)
	require.Equal(t, "u-b", got.state["b"].URL)
	_, ok = c.take(ref.ids(), t0.Add(10*time.Second))
	require.False(t, ok, "taken once")

	c.keep(ref, res, t0)
	_, ok = c.take(ref.ids(), t0.Add(settledFresh))
	require.False(t, ok, "too old: a new round is asked")

	c.forget(ref.ids())
	partial := roundResult{info: res.info, state: map[string]stateOp{"a": {URL: "u-a"}}}
	c.keep(ref, partial, t0)
	_, ok = c.take(ref.ids(), t0)
	require.False(t, ok, "an answer about only some of the operations is not kept")

	c.keep(ref, res, t0)
	c.forget(ref.ids())
	_, ok = c.take(ref.ids(), t0)
	require.False(t, ok, "forgotten at Cancel")
	require.Zero(t, c.weight)

	// An answer listing more machines than the bound is not kept.
	huge := roundResult{info: map[string]infoOp{"a": {Info: make([]machineInfo, settledMax)}, "b": {}}, state: res.state}
	c.keep(ref, huge, t0)
	_, ok = c.take(ref.ids(), t0)
	require.False(t, ok, "over the bound")
	require.Zero(t, c.weight)

	// Full of fresh answers: nothing more is kept; once they are stale, a
	// keep sweeps them out and is kept.
	big := reference{Ops: []refOp{{OperationID: opID{text: "big"}}}}
	c.keep(big, roundResult{info: map[string]infoOp{"big": {Info: make([]machineInfo, settledMax-2)}}, state: map[string]stateOp{"big": {}}}, t0)
	c.keep(ref, res, t0.Add(time.Second))
	_, ok = c.take(ref.ids(), t0.Add(time.Second))
	require.False(t, ok, "full")
	c.keep(ref, res, t0.Add(settledFresh+time.Second))
	_, ok = c.take(ref.ids(), t0.Add(settledFresh+time.Second))
	require.True(t, ok, "the stale answer was swept out")
	require.Zero(t, c.weight)
}
