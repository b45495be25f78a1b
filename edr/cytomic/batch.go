package cytomic

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// Stats counts the requests the driver's batched rounds sent. The simulator's
// request log is the source of truth for tests; Stats is for metrics and
// logs.
type Stats struct {
	// Rounds is the number of rounds that sent at least one request.
	Rounds int64
	// InfoRequests and InfoIDs count /osQuery/info requests and the
	// operation IDs they carried.
	InfoRequests, InfoIDs int64
	// StateRequests and StateIDs count /osQuery/state requests and the
	// operation IDs they carried.
	StateRequests, StateIDs int64
}

// want says which answers a waiter needs from a round.
type want uint8

const (
	wantInfo want = 1 << iota
	wantState
)

// waiter is one blocked Poll or Collect call.
type waiter struct {
	ids  []opID
	want want
	ch   chan roundResult // buffered: the loop never blocks on delivery
	ctx  context.Context  // the caller's: its httpc guard is checked before each round
}

// roundResult is what one round learnt. The maps are shared between the
// waiters of a round and must not be modified.
type roundResult struct {
	info  map[string]infoOp
	state map[string]stateOp
	err   error
}

// errClosed is delivered to calls pending when the driver closes.
var errClosed = &edr.Error{Vendor: vendor, Op: "poll", Retryable: true, Msg: "driver closed (worker shutting down)"}

// errAbandoned is delivered to calls pending for a cancelled operation.
var errAbandoned = &edr.Error{Vendor: vendor, Op: "poll", Msg: "operation abandoned by Cancel (Cytomic has no cancel for OSQuery operations)"}

// batcher runs the rounds: every period, while any call waits, it sends one
// /osQuery/info request carrying every operation ID any waiter needs (and one
// /osQuery/state request for the waiters that need it), split in chunks of
// maxBatch only when larger, and hands each waiter the shared answer.
//
// The round loop goroutine starts with the first waiter and exits at the
// first tick (or sooner, when the last waiter leaves) with nobody waiting;
// close stops it and waits for it. Safe for concurrent use.
type batcher struct {
	period     time.Duration
	maxBatch   int
	fetchInfo  func(context.Context, []opID) (map[string]infoOp, error)
	fetchState func(context.Context, []opID) (map[string]stateOp, error)
	log        *zap.Logger

	ctx    context.Context // ends at close: in-flight round requests stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the round loop
	wake   chan struct{}  // the last waiter left

	mu        sync.Mutex
	waiters   map[*waiter]struct{}
	running   bool
	closed    bool
	holdUntil time.Time // a 429 asked to wait until then
	stats     Stats
}

func newBatcher(period time.Duration, maxBatch int, log *zap.Logger,
	info func(context.Context, []opID) (map[string]infoOp, error),
	state func(context.Context, []opID) (map[string]stateOp, error),
) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &batcher{
		period: period, maxBatch: maxBatch, log: log,
		fetchInfo: info, fetchState: state,
		ctx: ctx, cancel: cancel,
		wake:    make(chan struct{}, 1),
		waiters: map[*waiter]struct{}{},
	}
}

// wait registers ids for the next round and blocks until that round's
// answer or until ctx ends. op names the caller in errors.
func (b *batcher) wait(ctx context.Context, op string, ids []opID, w want) (roundResult, error) {
	wt := &waiter{ids: ids, want: w, ch: make(chan roundResult, 1), ctx: ctx}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return roundResult{}, withOp(errClosed, op)
	}
	if hold := time.Until(b.holdUntil); hold > 0 {
		b.mu.Unlock()
		return roundResult{}, throttled(op, hold)
	}
	b.waiters[wt] = struct{}{}
	if !b.running {
		b.running = true
		b.wg.Add(1)
		go b.loop()
	}
	b.mu.Unlock()

	select {
	case r := <-wt.ch:
		if r.err != nil {
			return r, withOp(r.err, op)
		}
		return r, nil
	case <-ctx.Done():
		b.remove(wt)
		return roundResult{}, ctx.Err()
	}
}

func (b *batcher) remove(wt *waiter) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.waiters, wt)
	if len(b.waiters) == 0 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// drop fails the pending calls that wait for any of ids with errAbandoned.
func (b *batcher) drop(ids []opID) int {
	set := map[string]bool{}
	for _, id := range ids {
		set[id.text] = true
	}
	b.mu.Lock()
	var dropped []*waiter
	for wt := range b.waiters {
		for _, id := range wt.ids {
			if set[id.text] {
				dropped = append(dropped, wt)
				break
			}
		}
	}
	for _, wt := range dropped {
		delete(b.waiters, wt)
		wt.ch <- roundResult{err: errAbandoned}
	}
	if len(dropped) > 0 && len(b.waiters) == 0 {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	b.mu.Unlock()
	return len(dropped)
}

// close fails pending calls, stops the loop and waits for it. Safe twice.
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	b.mu.Lock()
	for wt := range b.waiters {
		delete(b.waiters, wt)
		wt.ch <- roundResult{err: errClosed}
	}
	b.mu.Unlock()
}

func (b *batcher) snapshot() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

func (b *batcher) loop() {
	defer b.wg.Done()
	timer := time.NewTimer(b.period)
	defer timer.Stop()
	for {
		select {
		case <-b.ctx.Done():
			b.mu.Lock()
			b.running = false
			b.mu.Unlock()
			return
		case <-b.wake:
			b.mu.Lock()
			idle := len(b.waiters) == 0
			if idle {
				b.running = false
			}
			b.mu.Unlock()
			if idle {
				return
			}
			continue
		case <-timer.C:
		}
		if !b.runOnce(b.ctx) {
			return
		}
		timer.Reset(b.period)
	}
}

// runOnce runs one round: it takes every waiter, sends the requests and
// delivers the answers. It returns false (and marks the loop stopped) when
// nobody was waiting.
func (b *batcher) runOnce(ctx context.Context) bool {
	b.mu.Lock()
	if len(b.waiters) == 0 {
		b.running = false
		b.mu.Unlock()
		return false
	}
	batch := b.waiters
	b.waiters = map[*waiter]struct{}{}
	hold := time.Until(b.holdUntil)
	b.mu.Unlock()

	if hold > 0 {
		// Registered before the 429 arrived: tell them to wait too.
		deliver(batch, roundResult{err: throttled("poll", hold)})
		return true
	}

	// A caller whose guard now refuses (its job's lease is gone) is
	// answered with that refusal and its operations stay out of the round.
	for wt := range batch {
		if err := httpc.CheckGuard(wt.ctx); err != nil {
			wt.ch <- roundResult{err: err}
			delete(batch, wt)
		}
	}
	var infoIDs, stateIDs []opID
	seenInfo, seenState := map[string]bool{}, map[string]bool{}
	for wt := range batch {
		for _, id := range wt.ids {
			if wt.want&wantInfo != 0 && !seenInfo[id.text] {
				seenInfo[id.text] = true
				infoIDs = append(infoIDs, id)
			}
			if wt.want&wantState != 0 && !seenState[id.text] {
				seenState[id.text] = true
				stateIDs = append(stateIDs, id)
			}
		}
	}

	res, infoErr, stateErr := b.fetch(ctx, infoIDs, stateIDs, len(batch))
	if ctx.Err() != nil {
		infoErr, stateErr = errClosed, errClosed
	}
	for wt := range batch {
		r := res
		if wt.want&wantInfo != 0 && infoErr != nil {
			r.err = infoErr
		} else if wt.want&wantState != 0 && stateErr != nil {
			r.err = stateErr
		}
		wt.ch <- r
	}
	return true
}

// fetch sends one round's requests — /osQuery/info for infoIDs, then
// /osQuery/state for stateIDs — and counts them. No request follows a 429
// before its Retry-After: the hold applies to every later round.
func (b *batcher) fetch(ctx context.Context, infoIDs, stateIDs []opID, callers int) (res roundResult, infoErr, stateErr error) {
	start := time.Now()
	var infoReqs, stateReqs int
	if len(infoIDs) > 0 {
		res.info, infoReqs, infoErr = chunked(ctx, infoIDs, b.maxBatch, b.fetchInfo)
	}
	switch {
	case isThrottle(infoErr):
		stateErr = infoErr
	case len(stateIDs) > 0:
		res.state, stateReqs, stateErr = chunked(ctx, stateIDs, b.maxBatch, b.fetchState)
	}

	b.mu.Lock()
	b.stats.Rounds++
	b.stats.InfoRequests += int64(infoReqs)
	b.stats.StateRequests += int64(stateReqs)
	if infoReqs > 0 {
		b.stats.InfoIDs += int64(len(infoIDs))
	}
	if stateReqs > 0 {
		b.stats.StateIDs += int64(len(stateIDs))
	}
	for _, err := range []error{infoErr, stateErr} {
		if d, ok := throttleDelay(err); ok {
			b.holdUntil = time.Now().Add(d)
		}
	}
	b.mu.Unlock()

	b.log.Debug("round",
		zap.Int("callers", callers),
		zap.Int("info_ids", len(infoIDs)),
		zap.Int("state_ids", len(stateIDs)),
		zap.Duration("took", time.Since(start)),
		zap.NamedError("info_error", infoErr),
		zap.NamedError("state_error", stateErr))
	return res, infoErr, stateErr
}

// now runs a round at once for ids (both answers), on the caller's
// goroutine: the runner's scheduler gathers the due polls itself
// (Driver.PollBatch) and needs no round loop.
func (b *batcher) now(ctx context.Context, op string, ids []opID) (roundResult, error) {
	b.mu.Lock()
	closed, hold := b.closed, time.Until(b.holdUntil)
	b.mu.Unlock()
	switch {
	case closed:
		return roundResult{}, withOp(errClosed, op)
	case hold > 0:
		return roundResult{}, throttled(op, hold)
	}
	res, infoErr, stateErr := b.fetch(ctx, ids, ids, 1)
	if err := cmp.Or(infoErr, stateErr); err != nil {
		return res, withOp(err, op)
	}
	return res, nil
}

func deliver(batch map[*waiter]struct{}, r roundResult) {
	for wt := range batch {
		wt.ch <- r
	}
}

// chunked fetches ids in requests of at most max IDs and merges the answers.
// A request carrying several IDs that is refused as a bad request (400, 404,
// 413, 422: one unknown or expired ID, or a batch larger than the server
// takes) is split in halves, so one bad ID cannot blind the round for every
// other operation; a lone ID refused that way is left out of the answer (its
// operation counts as missing and fails its own task after unknownGrace).
// Any other failure fails the whole fetch.
func chunked[T any](ctx context.Context, ids []opID, max int, fetch func(context.Context, []opID) (map[string]T, error)) (map[string]T, int, error) {
	out := map[string]T{}
	reqs := 0
	var get func([]opID) error
	get = func(ids []opID) error {
		part, err := fetch(ctx, ids)
		reqs++
		switch {
		case err == nil:
			for k, v := range part {
				out[k] = v
			}
			return nil
		case !refusesIDs(err) || ctx.Err() != nil:
			return err
		case len(ids) == 1:
			return nil
		}
		half := len(ids) / 2
		if err := get(ids[:half]); err != nil {
			return err
		}
		return get(ids[half:])
	}
	for len(ids) > 0 {
		n := min(len(ids), max)
		if err := get(ids[:n]); err != nil {
			return nil, reqs, err
		}
		ids = ids[n:]
	}
	return out, reqs, nil
}

// refusesIDs reports whether err is an answer that may be about the IDs a
// request carried rather than about the request itself.
func refusesIDs(err error) bool {
	var e *edr.Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Status {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

func isThrottle(err error) bool {
	_, ok := throttleDelay(err)
	return ok
}

// throttleDelay returns how long a 429 asked everyone to wait.
func throttleDelay(err error) (time.Duration, bool) {
	var e *edr.Error
	if errors.As(err, &e) && e.Status == http.StatusTooManyRequests {
		return cmp.Or(e.RetryAfter, httpc.DefaultThrottle), true
	}
	return 0, false
}

func throttled(op string, hold time.Duration) error {
	return &edr.Error{Vendor: vendor, Op: op, Status: http.StatusTooManyRequests, Retryable: true,
		RetryAfter: hold, Msg: "throttled: Cytomic answered 429 to an earlier request"}
}

// withOp returns err with its Op set to op when it is a shared round error.
func withOp(err error, op string) error {
	var e *edr.Error
	if errors.As(err, &e) && e.Op != op {
		cp := *e
		cp.Op = op
		return &cp
	}
	return err
}

// throttledFor returns how long an earlier 429 still asks to wait.
func (b *batcher) throttledFor() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(time.Until(b.holdUntil), 0)
}
