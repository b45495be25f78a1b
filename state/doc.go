// Package state is the fleet's job ledger in Redis: one record per job, a
// lease on it through its worker's session with a fencing token, per-task checkpoints of vendor operations, the
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
//	{ns}:job:<id>     hash   msg, owner, session, token, created, source, plan,
//	                         task:<kind> checkpoints, outcome, abort
//	{ns}:sessions     zset   session id → deadline (ms, Redis time)
//	{ns}:sess:<sid>   hash   the session's worker and creation time
//	{ns}:owned:<sid>  set    the jobs the session holds (read only when it dies)
//	{ns}:lines:<sid>  hash   the session's tasks' progress lines, "<id>/<kind>" →
//	                         ProgressLine; read only from the holding session's
//	                         hash; expires LinesTTL after its last write (lines.go)
//	{ns}:mail:<sid>   list   messages to the session: "lost <id> <token> <reason>",
//	                         "abort <id>"; expires when its worker stops reading
//	{ns}:claimable    zset   job id → since when anybody may claim it (released: 0)
//	{ns}:outbox       zset   job id → when its terminal state was decided
//	{ns}:tomb:<id>    string terminal state, expires after TombstoneTTL (7 days)
//	{ns}:tl:<id>      list   the job's timeline: its last 200 events (JSON), kept
//	                         HistoryTTL (24h) after the job finished
//	{ns}:res:<id>     string a finished job's result summary (≤ 32 KiB), HistoryTTL
//	{ns}:finished     zset   finished job id → when; trimmed to HistoryTTL
//	{ns}:fence        int    the fencing-token counter
//	{ns}:epoch        string random; a different value means Redis lost data
//	{ns}:epoch:at     string the epoch's creation time (ms, Redis clock)
//	{ns}:workers      zset   worker → last renewal; {ns}:worker:<id> its in-flight count
//	{ns}:rl:<name>    GCRA   theoretical arrival time of a vendor credential
//	{ns}:cool:<name>  string while a 429 cool-down is in force: when it ends (µs, Redis clock)
//	{ns}:lock:<name>  string fleet-wide singleton locks (the reconciler, the abort lister)
//	{ns}:quarantine   zset   keys moved aside for holding the wrong type
//	{ns}:leaselog     stream lease history: admitted, takeover, claimed, released,
//	                         forced, completed, quarantined; ~100k kept
//
// # Sessions
//
// A worker holds its jobs through one session, the model of etcd leases
// with attached keys and ZooKeeper's ephemeral nodes. The session is one
// member of {ns}:sessions whose score is its deadline; each job's record
// names the session holding it and a fencing token. A job is held while its
// record names a session whose deadline has not passed. Renewing the
// session — one script, a handful of commands, whatever the number of jobs —
// keeps every job held, so the cost of waiting does not grow with the
// number of jobs in flight. The Keeper renews on a Redis connection of its
// own, so a burst of admissions or checkpoints never queues in front of it.
//
// When a session's deadline passes, its jobs are anybody's. The next Claim
// by any worker reaps the dead session: its owned set is moved to
// {ns}:claimable (a bounded number of jobs per call), and the session is
// forgotten once its set is empty. A dead session is never revived: its
// worker learns at its next renewal ("gone"), drops every job and opens a
// new session. Nor does a worker revive a session whose local validity ran
// out before a renewal's answer came back (a worker starved of CPU): its
// jobs stopped when they saw the lapse, so it abandons the session as if
// the renewal had failed, and the session expires with its jobs claimable. Admission of a job whose record names a dead session takes
// it over at once.
//
// # The lease protocol
//
//	Kafka record                          Redis (Lua, Redis TIME)                 worker
//	────────────                          ───────────────────────                 ──────
//	job J ──decode/validate──▶ Admit ──▶  tomb:J?           → Finished  (drop, commit)
//	          (under session S)           J held by S itself → Held      (run it unless it runs: an
//	                                                                      earlier answer was lost)
//	                                      J's session alive? → Running   (drop, commit)
//	                                      record, no holder  → TakenOver (token++, resume)
//	                                      else create        → Admitted  (token++)
//	                    commit offset ◀── only after the record is durable
//
//	every LeaseTTL/3:   Renew(S) ──▶ one command on S, whatever the number of jobs;
//	                    returns alive | gone and the ledger epoch
//	always:             ReadMail(S) (BLPOP) ──▶ jobs taken away (an operator's
//	                    release), aborts requested: acted on at once
//
//	every second:       Claim(max = free slots) ──▶ reap dead sessions, then
//	                    claimable jobs, longest claimable first: token++,
//	                    session = S, records returned → resume from checkpoints
//
//	vendor accepted op: Checkpoint(task:<kind> = {ref, taskID, …}) before anything else
//	job ends:           Decide(outcome) → outbox   (first decision wins)
//	                    PUT terminal state to SampleDB (retried; by any later owner)
//	                    Complete → record, outbox entry gone; tomb:J = state
//	SIGTERM:            Release(held) → session "", claimable at once
//
// Fencing. Every acquisition (admission, takeover, claim) takes a new token
// from {ns}:fence. Every write that depends on owning the job (Checkpoint,
// Decide, Complete, Release) is a script that checks, atomically, that the
// record names the caller's session and token and that the session is
// alive, and fails with ErrStale otherwise, so a worker that lost a job —
// paused, partitioned, or simply slow — can never overwrite its successor's
// state: per-job fencing is as strong as with a lease per job.
//
// Local validity. Writes to Redis are fenced, but vendor calls and SampleDB
// writes cannot be. The Keeper therefore keeps the local monotonic time
// until which the session is certainly alive: the send time of the last
// successful renewal (or of opening it) plus the TTL, minus a margin. The
// runner checks Keeper.Valid before every external call. A worker resumed
// after a pause longer than the TTL finds every job invalid before any
// renewal tells it so, and makes no call for them.
//
// Aborts. One worker of the fleet lists SampleDB's active jobs per interval
// (the lock "aborts") and calls NotifyAborts with the ones whose abort was
// requested: each record is marked (abort = 1) once and its session mailed.
// A job nobody holds carries the mark to whoever takes it.
//
// Outbox. The terminal state is decided in Redis first (Decide), then PUT to
// SampleDB. If the worker dies in between, its session expires, another worker
// claims the job, sees the decided outcome and finishes the PUT — the state
// decided first is the one reported, exactly once.
//
// Data loss. Redis here keeps nothing on disk. Each renewal returns the
// ledger epoch; a changed or missing epoch (and a session Redis no longer
// knows) tells the worker Redis restarted empty. Workers re-seed the
// records of jobs they hold in memory (Adopt), and the reconciler re-adopts
// every executing job SampleDB lists that the ledger no longer knows, so no
// job is lost even when Redis comes back empty. The reconciler waits until
// the new epoch is LeaseTTL old (EpochAge): until then a worker that held a
// job before the loss may still, by its local clock, hold a valid session
// on it, and a job adopted earlier could be run by two workers at once. A re-seeded job is safe sooner: the worker that
// re-seeds it has already dropped it, and makes it claimable after a short
// grace (AdoptAfter) that lets the requests it had already sent land first.
//
// Rate limits. RateLimiter is a GCRA limiter per vendor credential shared by
// the fleet, plus a cool-down key that a 429 anywhere sets for its
// Retry-After: one worker's 429 slows the whole fleet down.
package state
