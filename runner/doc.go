// Package runner is the job runner: it turns an admitted job into tasks on
// the configured EDR vendors, drives each task to its end, and reports every
// transition to SampleDB, so that every job ends in exactly one terminal
// state whatever crashes, pauses, throttling or aborts happen.
//
// # The job state machine
//
//	                     admitted / taken over (lease + fencing token)
//	                                    │
//	              outcome already decided in the ledger? ──yes──────────────┐
//	                                    │ no                                │
//	                      PUT executing (SampleDB)                          │
//	        412 (already terminal) ─────┤──── 404 (gone) ─▶ failed locally  │
//	                                    │                                   │
//	       abortRequested in the answer ├──────────────▶ decide aborted ───▶│
//	                                    │  (no vendor is ever contacted)    │
//	                  plan (stored with the job; a takeover reuses it)      │
//	                                    │                                   │
//	              ┌─────────── tasks run concurrently ──────────┐           │
//	              │ create SampleDB task ─▶ vendor Start         │           │
//	              │ ─▶ checkpoint the reference (before anything │           │
//	              │    else) ─▶ Poll … (adaptive, Retry-After)   │           │
//	              │ ─▶ Collect ─▶ checkpoint result ─▶ PUT task  │           │
//	              └──────────────────────────────────────────────┘           │
//	  all tasks ended: failed if any failed, timeout if any timed out,      │
//	  else success ─────────────────────────────────────▶ decide ───────────▶│
//	  abort noticed (poll of SampleDB, or a PUT answer) ─▶ decide aborted ──▶│
//	  JOB_TIMEOUT from first admission ──────────────────▶ decide timeout ──▶│
//	                                                                        ▼
//	deliver: cancel unfinished vendor operations (Sophos run cancel, Live
//	Response command cancel + session close; CB Cloud export and Cytomic
//	operation abandoned: no cancel exists) ─▶ PUT unfinished tasks
//	cancelled/timeout ─▶ PUT the job's terminal state ─▶ publish the summary
//	─▶ tombstone (state.Complete)
//
// "decide" is state.Store.Decide: the terminal state is fixed in Redis first
// (the outbox), so if this worker dies anywhere after it, the next owner
// re-runs deliver and reports the same state. SampleDB refuses a second,
// different terminal state (412); a repeated PUT of the same one is harmless.
//
// # Leaving a job
//
// A job stops without another write the moment its lease is lost (its
// session expired or Redis forgot it — the keeper's renewal says so —, an
// operator released it — the session's mailbox says so —, a fenced write
// fails, or the local view of the session ran out — see state.Keeper). On
// SIGTERM (Drain) every job leaves at its next safe point — between vendor
// calls; an in-flight call finishes and is checkpointed first — and its
// lease is handed over at once, so other workers resume the vendor
// operations from their checkpoints without restarting them.
//
// # Steps
//
// A job owns no goroutine. Its work is a sequence of steps on the runner's
// scheduler (sched.go): the job's own step (begin: PUT executing and the
// plan; then its deadline; then its conclusion: decide and deliver) and one
// step per task (create the SampleDB task and start the vendor operation;
// each poll; collect). Between steps a job is data: its next step waits in
// a heap by due time. A fixed pool (CallConcurrency) runs the due steps by
// priority — cancel (and a job's conclusion), start, collect, poll — then
// oldest due first, so when the vendor budget is short every job's poll
// interval stretches alike (towards N/R), and shrinks back when it is not.
// Lanes bound the steps of one resource that run at once: each vendor
// account (VendorConcurrency), each kind's starts (StartConcurrency: the
// window a crash turns into a restarted operation), SampleDB. A retryable
// vendor failure waits as a due step (backoff, or the vendor's Retry-After),
// never as a sleeping goroutine. The calls carry their priority to the
// fleet-wide rate limiter (state.RateLimiter), whose waiters queue by it: a
// cancel never waits behind polls.
//
// A vendor whose API answers many polls with one request (Cytomic,
// edr.BatchPoller) has a batch lane: its due polls gather into one step and
// one call (PollBatch), at most every PollMin.
//
// # Cost
//
// Renewal is one command per tick for the worker's session, whatever the
// number of jobs; takeover one round trip per claim tick; abort detection
// one paged SampleDB listing per interval for the whole fleet (one worker
// takes the lock "aborts"), whose findings reach the holders through their
// sessions' mailboxes. A waiting job costs its memory and a heap entry;
// its polls write the ledger only when something an owner resumes from
// changed. A new progress line alone goes to the session's lines hash
// (lines.go), at most once a minute per task and progressLines times a
// second per worker, the lines of a second in one write: what waiting
// costs the ledger does not grow with the number of jobs.
package runner
