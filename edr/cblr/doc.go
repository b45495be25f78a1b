// Package cblr is the edr.Driver for Carbon Black EDR (Cb Response) Live
// Response, task kind "cblr.triage": on every sensor named in the
// submission it takes a Live Response session, runs "process list" (and
// "get file" when the submission names the sample's path on the host),
// hashes the retrieved file, and closes the session.
//
// Sources. The real API outranks the vendor document (specs/001, "CB Live
// Response Sensor API"): the driver follows carbonblack/cbapi-python at
// commit 550679c0847f1dc33fca5136a030a979b3944523 —
// src/cbapi/response/cblr.py (sessions: reuse, close) and
// src/cbapi/live_response_api.py (commands, keepalive, the 404 retry) —
// and is tested against the answers a real server gave that client,
// recorded in the same repository's tests/caches/cber.sqlite (testdata/
// recorded, with their requests). Where they are silent,
// ace-ecosystem/cbinterface2 cbinterface/response/sessions.py (commit
// 2f0dbe08) adds one observation: a keepalive closes a session that is not
// active yet.
//
// The API (/api/v1/cblr/…, header X-Auth-Token) is asynchronous at every
// level: a session is pending until the sensor checks in, a command is
// pending / in progress until the sensor reports back, and an idle session
// times out after its sensor_wait_timeout unless kept alive. The driver is
// therefore a small state machine per sensor, carried entirely in the Ref so
// that any worker can resume it after a crash:
//
//	Start: GET /session?active_only=true, then per sensor: take up its session
//	  │    tagged with this intent, else POST /session {"sensor_id": N,
//	  │    "checkin_timeout": tag} (else, refused or with ReuseSessions, borrow
//	  │    the sensor's open session, as cbapi does)
//	  ▼
//	wait ── GET /session/{id} ──▶ pending: poll again (no keepalive: it would close it)
//	  │                          timeout | inactive | close | 404: sensor failed ─┐
//	  │ active (supported_commands checked when the sensor lists any)             │
//	  ▼                                                                           │
//	process_list ── POST …/command {"name": "process list"} ── (checkpoint)      │
//	  │   GET …/command/{cmd} until complete; error | cancel: failed ────────────┤
//	  │   processes matched by path, file name or sha256                         │
//	  ▼ (only when the target has a usable path)                                  │
//	get_file ── POST …/command {"name": "get file", "object": path} ── (cp)       │
//	  │   GET …/command/{cmd} until complete (error: a note), then                │
//	  │   …/file/{file_id}/content (streamed, capped at MaxFile, hashed; only     │
//	  │   size+sha256 kept); with Config.FileMetadata first GET …/file/{file_id}  │
//	  │   (size, status) until size_uploaded = size (or it stalls)                │
//	  ▼                                                                           │
//	close ◀───────────────────────────────────────────────────────────────────────┘
//	  │   GET /session/{id}, PUT it back with "status": "close" — a session
//	  │   this triage opened; a borrowed one is left to its owner
//	  ▼
//	done
//
//	open: a sensor whose session was lost (a command refused with 404 and
//	  the session gone or closed, a command cut short by a close) acquires
//	  another, as above, and carries on where it was (at most 5 times, as
//	  cbapi's MAX_RETRY_COUNT); so does a sensor Find found no session of.
//
// Whose session. cbapi reuses a sensor's pending or active session instead
// of opening a second one. The driver does so only with
// Config.ReuseSessions, or when the server refuses the sensor a second
// session (a session limit): a borrowed session is shared with whoever
// opened it (an analyst, another task), whose commands cannot be told from
// the triage's and who may close it under it. A borrowed session is used,
// kept alive while a command runs, never searched for commands to adopt,
// and left open for its owner, with a note. By default every task opens,
// uses and closes sessions of its own.
//
// Starting exactly once (edr.Driver.Find). Live Response sessions carry no
// name or label, but a session POST may ask for a check_in_timeout, which
// the session object reports back. Sessions opened under an intent ask for
// the document's default (1200 s) less a tag derived from the intent's key
// (checkInTag: 1 to 599 s and a fraction in milliseconds; a server that
// keeps whole seconds only is matched on those). Find takes the task's sensors' pending or
// active sessions carrying the tag and created no earlier than Intent.At
// less edr.FindSkew, and answers edr.ErrNotStarted when no sensor has one
// (an ended session cannot be resumed); Start takes them up again the same
// way before opening any, so a Start retried after a lost answer, or after
// a crash, re-attaches. A Start that fails half way for a retryable reason
// leaves its sessions open for that retry. A server that ignores the
// request reports 1200: nothing is ever recognised, and the driver behaves
// as it would without Find (the recorded answers cannot say: cbapi never
// asks). With Config.UntaggedSessions nothing is asked and Find answers
// edr.ErrFindUnsupported. Commands are made idempotent the same way: before
// posting one in a session of its own, Poll lists the session's commands
// and adopts an identical one (same name and object, created no earlier
// than Intent.At less edr.FindSkew, not cancelled or failed), which covers
// a crash between the vendor accepting a command and the checkpoint (a list
// it cannot read is logged, and the command created).
//
// Each Poll advances every unfinished sensor by one step, and returns at
// once, with the new Ref, when a session was taken, the vendor accepted a
// command or a session was closed: the runner checkpoints the Ref before
// anything else happens.
//
// While a command runs the driver sends GET …/keepalive when half of the
// shorter of the session's sensor_wait_timeout and session_timeout has
// passed since its last activity (never more often than every 100 ms), and
// suggests a NextPoll no later than that.
//
// The submitted path is used only when it is an absolute local path of sane
// length and characters (checkPath: a drive-letter path for Windows, an
// absolute POSIX path for Linux and macOS; no UNC or device namespace, no
// "..", no control characters, at most 1024 bytes). Anything else skips
// "get file" with a note saying why; the process list still runs.
//
// Every JSON answer is read whole (at most MaxBody) and refused, before it
// is decoded, when one value in it is longer than Config.MaxToken: the
// sensor fails with a message saying so. File content is streamed and
// capped at MaxFile.
//
// Failures are per sensor: a session the vendor refuses (Live Response
// disabled, session limit: a 4xx other than 401/404/429, with the vendor's
// text), a session that never checks in or ends early, a supported command
// missing from a non-empty supported_commands, a "process list" that ends in
// error (result_code / result_type / result_desc) or a command that is
// cancelled. A "get file" that fails on the sensor is not a failure, since
// the process list has answered: a path that does not exist (Win32 error 2
// or 3, bare or as HRESULT 0x8007000x) answers "not on this host"; any other
// error (or the server refusing the command, or the content, or a file
// object with a non-zero status) says the file could not be retrieved, with
// the result fields; both become notes. A session that timed out or became
// inactive under a command fails the sensor. The failed sensor's session is
// closed and the others carry on; the task fails only when every sensor
// failed, and otherwise Result.Notes names the failed sensors and why. A
// rejected token (401) fails the task at once; 429, 5xx and network errors
// are returned as retryable and the runner retries the same call (statuses
// map to errors as edr/vendorhttp's table says). The API token is masked,
// in every encoding, in every text built from the server's answers.
//
// A Driver is safe for concurrent use: it keeps no per-operation state.
package cblr
