// Package state is the fleet's job ledger in Redis: one record per job, a
// lease with a fencing token, per-task checkpoints of vendor operations, the
// outbox of decided terminal states, tombstones, and the fleet-wide rate
// limits of vendor credentials.
//
// # Keys
//
// Every key of a fleet carries the hash tag {namespace}, so the Lua scripts
// that touch several keys run on Redis Cluster too (one slot per fleet).
// Redis must run with maxmemory-policy noeviction: an evicted lease is a lost
// job.
//
//	{ns}:job:<id>     hash   msg, owner, token, created, source, plan,
//	                         task:<kind> checkpoints, outcome
//	{ns}:leases       zset   job id → lease deadline (ms, Redis time)
//	{ns}:outbox       zset   job id → when its terminal state was decided
//	{ns}:tomb:<id>    string terminal state, expires after TombstoneTTL (7 days)
//	{ns}:fence        int    the fencing-token counter
//	{ns}:epoch        string random; a different value means Redis lost data
//	{ns}:epoch:at     string the epoch's creation time (ms, Redis clock)
//	{ns}:workers      zset   worker → last renewal; {ns}:worker:<id> its in-flight count
//	{ns}:rl:<name>    GCRA   theoretical arrival time of a vendor credential
//	{ns}:cool:<name>  string present while a 429 cool-down is in force
//	{ns}:lock:<name>  string fleet-wide singleton locks (the reconciler)
//	{ns}:leaselog     stream lease history: admitted, takeover, claimed, released,
//	                         forced, completed (job, worker, token, Redis time); ~100k kept
//
// # The lease protocol
//
//	Kafka record                          Redis (Lua, Redis TIME)                 worker
//	────────────                          ───────────────────────                 ──────
//	job J ──decode/validate──▶ Admit ──▶  tomb:J?        → Finished  (drop, commit)
//	                                      lease alive?   → Running   (drop, commit)
//	                                      lease expired? → TakenOver (token++, resume)
//	                                      else create    → Admitted  (token++)
//	                    commit offset ◀── only after the record is durable
//
//	every LeaseTTL/3:   Renew(all held (id,token)) ──▶ one round trip; returns the
//	                    leases lost (stolen | finished | missing) and the epoch
//
//	every second:       Claim(max = free slots) ──▶ expired leases, oldest first:
//	                    token++, owner = me, records returned → resume from checkpoints
//
//	vendor accepted op: Checkpoint(task:<kind> = {ref, taskID, …}) before anything else
//	job ends:           Decide(outcome) → outbox   (first decision wins)
//	                    PUT terminal state to SampleDB (retried; by any later owner)
//	                    Complete → record, lease, outbox entry gone; tomb:J = state
//	SIGTERM:            Release(held) → owner "", deadline 0: claimable at once
//
// Fencing. Every acquisition (admission, takeover, claim) takes a new token
// from {ns}:fence. Every write that depends on owning the job (Checkpoint,
// Decide, Complete, Release) is a script that checks owner and token first
// and fails with ErrStale otherwise, so a worker that lost a job — paused,
// partitioned, or simply slow — can never overwrite its successor's state.
//
// Local validity. Writes to Redis are fenced, but vendor calls and SampleDB
// writes cannot be. The Keeper therefore keeps, per lease, the local
// monotonic time until which the lease is certainly valid: the send time of
// the last successful renewal (or acquisition) plus the TTL, minus a margin.
// The runner checks Keeper.Valid before every external call. A worker
// resumed after a pause longer than the TTL finds every lease invalid before
// any renewal tells it so, and makes no call for those jobs.
//
// Outbox. The terminal state is decided in Redis first (Decide), then PUT to
// SampleDB. If the worker dies in between, its lease expires, another worker
// claims the job, sees the decided outcome and finishes the PUT — the state
// decided first is the one reported, exactly once.
//
// Data loss. Redis here keeps nothing on disk. Each renewal returns the
// ledger epoch; a changed or missing epoch tells the worker Redis restarted
// empty. Workers re-seed the records of jobs they hold in memory (Adopt), and
// the reconciler re-adopts every executing job SampleDB lists that the ledger
// no longer knows, so no job is lost even when Redis comes back empty. The
// reconciler waits until the new epoch is LeaseTTL old (EpochAge): until
// then a worker that held a job before the loss may still, by its local
// clock, hold a valid lease on it, and a job adopted earlier could be run by
// two workers at once. A re-seeded job is safe sooner: the worker that
// re-seeds it has already dropped it, and makes it claimable after a short
// grace (AdoptAfter) that lets the requests it had already sent land first.
//
// Rate limits. RateLimiter is a GCRA limiter per vendor credential shared by
// the fleet, plus a cool-down key that a 429 anywhere sets for its
// Retry-After: one worker's 429 slows the whole fleet down.
package state
