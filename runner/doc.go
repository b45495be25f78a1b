// Package worker is the job runner: it turns an admitted job into tasks on
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
// A job stops without another write the moment its lease is lost (a renewal
// says so, a fenced write fails, or the local view of the lease ran out —
// see state.Keeper). On SIGTERM (Drain) every job leaves at its next safe
// point — between vendor calls; an in-flight call finishes and is
// checkpointed first — and its lease is handed over at once, so other
// workers resume the vendor operations from their checkpoints without
// restarting them.
//
// # Cost
//
// Lease renewal is one Redis round trip per tick for all jobs; takeover one
// per claim tick; abort polling one paged SampleDB list per interval per
// worker. Each task is one goroutine that sleeps between polls; batched
// vendors (Cytomic) block in Poll until their next shared round.
package runner
