package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/startstop"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
)

// reconciler re-adopts jobs SampleDB shows active that the ledger does not
// know: Redis lost them. One worker of the fleet does it per interval (a
// fleet-wide lock); after the keeper reports an epoch change (Redis came
// back empty) it runs a full pass that takes the enqueued jobs too, once
// the workers had a lease lifetime to re-seed what they hold.
//
// A periodic pass (no epoch change) asks the ledger about a share of the
// executing jobs only, so that its Redis cost does not grow with the
// number of jobs per interval: every job that went executing within the
// last two intervals (plus a margin for the clocks of SampleDB and the
// worker), because what a Redis failover loses is its newest writes; and
// of the older ones the shard of this pass, so that each is asked about at
// least once per sweepPeriod, or, when that would be more than
// maxOlderChecks a pass, once per as many sweep periods as keep it under:
// the pass's Redis cost stays bounded however many jobs run (at 100,000
// executing jobs and a 1-minute interval, ~830 key checks a pass, and each
// older job checked every two hours). The listing from SampleDB is whole
// every pass (it is per fleet, ceil(N/1000) requests).
type reconciler struct {
	startstop.Service
	r     *Runner
	every time.Duration
	kick  chan bool        // true: a full pass after a ledger loss
	now   func() time.Time // the clock that picks a pass's shard
	older atomic.Int64     // older executing jobs the last pass listed
}

// sweepPeriod: a periodic pass checks each older executing job against the
// ledger at least once in this period (sweepShards passes).
const sweepPeriod = time.Hour

// maxOlderChecks is about the most older jobs a periodic pass asks the
// ledger about (shards).
const maxOlderChecks = 1000

// recentMargin is how much older than two intervals a job's start may be
// and still count as new: the clocks of SampleDB and the worker differ.
const recentMargin = 30 * time.Second

func newReconciler(r *Runner, every time.Duration) *reconciler {
	return &reconciler{r: r, every: every, kick: make(chan bool, 1), now: time.Now}
}

// sweepShards is how many passes a sweep of the older jobs takes: one at an
// interval of sweepPeriod or longer.
func (rc *reconciler) sweepShards() uint32 {
	return uint32(max(1, sweepPeriod/max(rc.every, time.Second)))
}

// shards is how many passes a sweep of the older jobs takes: sweepShards,
// times as many sweep periods as keep a pass near maxOlderChecks at the
// last pass's count (a multiple, so that the shards stay stable while the
// count moves within a step).
func (rc *reconciler) shards() uint32 {
	base := rc.sweepShards()
	periods := (rc.older.Load() + int64(base)*maxOlderChecks - 1) / (int64(base) * maxOlderChecks)
	return base * uint32(max(periods, 1))
}

// checks says whether a periodic pass at now asks the ledger about sj:
// when it went executing recently (or SampleDB does not say when), or
// when it is in this pass's shard. The shard comes from the time, not a
// counter, so whichever worker holds the pass picks the same one.
func (rc *reconciler) checks(sj sampledb.Job, now time.Time) bool {
	if rc.recent(sj, now) {
		return true
	}
	n := rc.shards()
	h := fnv.New32a()
	_, _ = h.Write([]byte(sj.ID))
	pass := uint32(now.UnixNano() / int64(max(rc.every, time.Second)))
	return h.Sum32()%n == pass%n
}

// recent says whether sj went executing within two intervals (or SampleDB
// does not say when).
func (rc *reconciler) recent(sj sampledb.Job, now time.Time) bool {
	return sj.StartTimestamp <= 0 || now.Sub(time.UnixMilli(sj.StartTimestamp)) < 2*rc.every+recentMargin
}

func (rc *reconciler) start(ctx context.Context) error {
	return rc.Start(ctx, func(ctx context.Context) {
		t := time.NewTicker(rc.every)
		defer t.Stop()
		for {
			full := false
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case full = <-rc.kick:
				rc.refreshEpoch(ctx)
			}
			rc.untilDone(ctx, full)
		}
	})
}

// ledgerLost asks for a full pass (the keeper saw the epoch change).
func (rc *reconciler) ledgerLost() {
	select {
	case rc.kick <- true:
	default:
	}
}

// refreshEpoch re-creates the ledger's epoch after a loss and tells the
// keeper, so its renewals stop reporting the change.
func (rc *reconciler) refreshEpoch(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e, err := rc.r.store.Epoch(ctx); err == nil {
		rc.r.keeper.SetEpoch(e)
	}
}

// untilDone runs passes until one is not deferred by a young epoch (at most
// three), waiting what each deferral asks.
func (rc *reconciler) untilDone(ctx context.Context, full bool) {
	for range 3 {
		n, err := rc.runOnce(ctx, full)
		var early *errEpochYoung
		switch {
		case errors.As(err, &early):
			select {
			case <-ctx.Done():
				return
			case <-time.After(early.wait):
			}
			continue
		case err != nil && ctx.Err() == nil:
			rc.r.log.Warn("reconcile failed", zap.Error(err))
		case n > 0:
			rc.r.log.Warn("reconciler re-adopted jobs the ledger had lost", zap.Int("jobs", n), zap.Bool("full", full))
		}
		return
	}
}

// errEpochYoung: the ledger lost its data less than a lease lifetime ago.
type errEpochYoung struct{ wait time.Duration }

func (e *errEpochYoung) Error() string {
	return fmt.Sprintf("the ledger lost its data less than a lease lifetime ago: adopting in %s", e.wait)
}

// runOnce lists SampleDB's executing jobs (and, when full, the enqueued
// ones too — after Redis data loss their committed records are gone) and
// adopts every one the ledger does not know; a periodic pass (not full)
// asks the ledger only about the jobs checks picks. It returns how many it
// adopted; 0 without error when another worker holds the pass.
//
// It adopts nothing while the ledger's epoch is younger than LeaseTTL: a
// worker that held a job when Redis lost its data still believes in its
// lease, by its local clock, for up to LeaseTTL, and keeps working on the job
// until its next renewal tells it otherwise. Handing the job to another
// worker before then would let both act on it. The error says how long to
// wait.
func (rc *reconciler) runOnce(ctx context.Context, full bool) (int, error) {
	r := rc.r
	ok, err := r.store.TryLock(ctx, "reconcile", r.cfg.WorkerID, rc.every/2)
	if err != nil || !ok {
		return 0, err
	}
	defer func() { _ = r.store.Unlock(context.WithoutCancel(ctx), "reconcile", r.cfg.WorkerID) }()
	_, age, err := r.store.EpochAge(ctx)
	if err != nil {
		return 0, err
	}
	if ttl := r.store.LeaseTTL(); age < ttl {
		return 0, &errEpochYoung{wait: ttl - age + ttl/10}
	}
	states := []string{sampledb.StateExecuting}
	if full {
		states = append(states, sampledb.StateEnqueued)
	}
	adopted, now, older := 0, rc.now(), int64(0)
	err = r.cfg.SampleDB.ListJobs(ctx, sampledb.ListOptions{States: states, PageSize: 1000, Brief: !full}, func(page []sampledb.Job) error {
		var ask []sampledb.Job
		for _, sj := range page {
			if sj.State == sampledb.StateExecuting && !rc.recent(sj, now) {
				older++
			}
			if full || (sj.State == sampledb.StateExecuting && rc.checks(sj, now)) {
				ask = append(ask, sj)
			}
		}
		if len(ask) == 0 {
			return nil
		}
		ids := make([]string, len(ask))
		for i, sj := range ask {
			ids[i] = sj.ID
		}
		known, err := r.store.Known(ctx, ids)
		if err != nil {
			return err
		}
		for _, sj := range ask {
			if known[sj.ID] {
				continue
			}
			if !full {
				// A periodic listing is brief: the job's submission comes
				// from its own GET (rare: a job the ledger lost). A full
				// pass, after Redis lost everything, lists them whole.
				whole, err := r.cfg.SampleDB.GetJob(ctx, sj.ID)
				if errors.Is(err, sampledb.ErrNotFound) {
					continue // gone since the listing
				}
				if err != nil {
					return err
				}
				if whole.ID != sj.ID || sampledb.IsTerminal(whole.State) {
					continue // finished (or not the job asked for) since the listing
				}
				sj = *whole
			}
			msg, err := json.Marshal(sj.Message())
			if err != nil {
				return err
			}
			kv := []string{state.FieldMsg, string(msg), state.FieldSource, "reconciler"}
			if sj.StartTimestamp > 0 {
				kv = append(kv, state.FieldCreated, fmt.Sprint(sj.StartTimestamp))
			}
			did, err := r.store.Adopt(ctx, sj.ID, kv...)
			if err != nil {
				return err
			}
			if did {
				adopted++
			}
		}
		return nil
	})
	if err == nil {
		rc.older.Store(older) // the next periodic pass's shards
	}
	return adopted, err
}
