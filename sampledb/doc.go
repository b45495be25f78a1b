// Package sampledb is the client of the SampleDB v2 job API (Argus envelope,
// Argus-API-Key header) and the job, task and message types the fleet shares.
//
// The fleet drives a job through SampleDB's state machine and reports the
// tasks it runs for it:
//
//	enqueued ──PUT executing──▶ executing ──PUT──▶ success | failed | aborted | timeout
//	   (set by SampleDB)            │
//	                                └─ POST /job/{id}/task {"worker": kind, "state": "executing"}
//	                                   PUT  /job/{id}/task/{taskId} {"state": success|failed|timeout|cancelled}
//
// Repeating the current state answers 200, so every write may be retried.
// Anything outside the machine answers 412 (ErrPrecondition). An analyst's
// DELETE only sets abortRequested on the job; the fleet notices it in list
// pages and PUT responses, and PUTs aborted itself.
//
// Job IDs are UUIDs, one job whatever their case: the client addresses a
// job by its canonical (lower-case) ID and reads every job ID SampleDB
// sends back in that form (job.CanonicalID).
//
// Errors, branch with errors.Is / errors.As:
//
//	5xx, 429, 408, network  retried inside the client (exponential backoff,
//	                        Retry-After honoured) until MaxElapsed or ctx ends
//	412                     *Error, ErrPrecondition (with SampleDB's messages)
//	404                     *Error, ErrNotFound: the job is gone; on a task's
//	                        URL the task or the job (GetJob tells which)
//	401 / 403               *Error, ErrUnauthorized / ErrForbidden: configuration
//	other 4xx, 3xx          *Error, permanent
//	2xx, body not a valid   ErrMalformed, permanent
//	envelope
//	2xx about another job   *BadAnswerError, ErrBadAnswer: retried inside the
//	                        client like a 5xx, then returned (retryable)
//
// The API key never appears in errors, logs or String output; it is also
// scrubbed from any text SampleDB sends back.
package sampledb
