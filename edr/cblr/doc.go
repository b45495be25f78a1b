// Package cblr is the edr.Driver for Carbon Black EDR (Cb Response) Live
// Response, task kind "cblr.triage": on every sensor named in the
// submission it opens a Live Response session, runs "process list" (and
// "get file" when the submission names the sample's path on the host),
// hashes the retrieved file, and closes the session.
//
// The API (/api/v1/cblr/…, header X-Auth-Token) is asynchronous at every
// level: a session is pending until the sensor checks in, a command is
// pending / in progress until the sensor reports back, and an idle session
// times out after its sensor_wait_timeout unless kept alive. The driver is
// therefore a small state machine per sensor, carried entirely in the Ref so
// that any worker can resume it after a crash:
//
//	Start: POST /session {"sensor_id": N}  (one session per sensor)
//	  │
//	  ▼
//	wait ── GET /session/{id} ──▶ pending: keepalive when due, poll again
//	  │                          timeout | inactive | close: sensor failed ─┐
//	  │ active (supported_commands checked when the sensor lists any)        │
//	  ▼                                                                      │
//	process_list ── POST …/command {"name": "process list"} ── (checkpoint) │
//	  │   GET …/command/{cmd} until complete; error | cancel: failed ───────┤
//	  │   processes matched by path, file name or sha256                    │
//	  ▼ (only when the target has a path)                                    │
//	get_file ── POST …/command {"name": "get file", "object": path} ── (cp)  │
//	  │   GET …/command/{cmd} until complete (error: a note), then          │
//	  │   GET …/file/{file_id} (size, status) until size_uploaded = size    │
//	  │   (or it stalls), and …/file/{file_id}/content (streamed, capped at │
//	  │   MaxFile, hashed; only size+sha256 kept)                           │
//	  ▼                                                                      │
//	close ◀──────────────────────────────────────────────────────────────────┘
//	  │   GET /session/{id}, PUT it back with "status": "close"
//	  ▼
//	done
//
// Each Poll advances every unfinished sensor by one step, and returns at
// once, with the new Ref, when the vendor accepted a command or a session
// was closed: the runner checkpoints the Ref before anything else happens,
// so a takeover follows the same command instead of issuing it again. Before
// issuing a command the driver lists the session's commands and adopts an
// earlier one with the same name and object, which covers a crash between
// the vendor accepting a command and the checkpoint (a list it cannot read
// is logged, and the command created).
//
// While a sensor waits (for its check-in, or for a command) the driver sends
// GET …/keepalive when half of the shorter of the session's
// sensor_wait_timeout and session_timeout has passed since its last activity
// (never more often than every 100 ms), and suggests a NextPoll no later
// than that.
//
// Failures are per sensor: a session the vendor refuses (Live Response
// disabled, session limit: a 4xx other than 401/404/429, with the vendor's
// text), a session that never checks in or ends early, a supported command
// missing from a non-empty supported_commands, a "process list" that ends in
// error (result_code / result_type / result_desc) or a command that is
// cancelled. A "get file" that fails on the sensor is not a failure, since
// the process list has answered: a path that does not exist (Win32 error 2
// or 3, bare or as HRESULT 0x8007000x) answers "not on this host"; any other
// error (or the server refusing the command, or a file object with a
// non-zero status) says the file could not be retrieved, with the result
// fields; both become notes. Only a session that
// ended under it fails the sensor. The failed sensor's session is closed and
// the others carry on; the task fails only when every sensor failed, and
// otherwise Result.Notes names the failed sensors and why. A rejected token
// (401) fails the task at once; 429, 5xx and network errors are returned
// as retryable and the runner retries the same call.
//
// A Driver is safe for concurrent use: it keeps no per-operation state.
package cblr
