// Package cytomic is the edr.Driver for Cytomic Orion OSQuery (task kind
// cytomic.osquery, Windows samples only): it runs an osquery statement that
// looks for the sample's SHA-256 on every machine of the configured clients,
// follows the operations until every machine answered or the operation TTL
// passed, and summarises the result files.
//
// # Contract
//
// The source document (specs/003) lost its request-field tables; this is the
// contract the driver and sim/cytomic implement:
//
//	POST <TokenURL>  form grant_type=password&username=…&password=…
//	                 → {"access_token","token_type","expires_in"}
//	then "Authorization: Bearer <token>" on every API call. The token is
//	replaced a tenth of its lifetime (at most a minute) before expires_in
//	runs out, and once, transparently, when a call answers 401.
//
//	POST /api/v1/osQuery/client  {"query": "<sql>", "clientIds": ["…"], "ttl": <seconds>}
//	     → [{"pandaID","operationId","MUIDs":[…]}]            one operation per client
//	POST /api/v1/osQuery/info    [{"operationId": …}, …]
//	     → [{"panda","operationId","info":[{"MUID","status","errorCode","errorDescription"}]}]
//	       status: Pending | Success | PartiallySucceeded | Error (errorCode 201/202/203)
//	POST /api/v1/osQuery/state   [{"operationId": …}, …]
//	     → [{"panda","operationId","url","counters":{"totalOperationElements",
//	         "totalSuccess","totalPartiallySucceeded","totalError"}}]
//	GET  <url>  (pre-signed, no credentials, valid five minutes; 403/410 after)
//	     → file "osquery_<operationId>": text, first line the field names
//	       separated by ";", then one line per row.
//
// Decoding is tolerant where the document is loose: IDs and error codes may
// be JSON numbers or strings (IDs are sent back in the type they came in),
// counts may be numeric strings, unknown fields are ignored, statuses are
// compared case-insensitively, and a lone object is taken as a list of one.
// An unknown status counts as still running; the TTL bounds the wait.
//
// # Batching
//
// /info and /state take lists of operation IDs, so Poll and Collect never
// send their own request. They register their operation IDs and block until
// the driver's next round; a round sends one /info request and one /state
// request, each carrying every ID any waiting call needs, split only above
// Config.MaxBatch IDs:
//
//	Poll(ref A) ──┐                          ┌──▶ A: Status
//	Poll(ref B) ──┼─▶ wait ─▶ round (every ──┼──▶ B: Status
//	Collect(C)  ──┘           Config.Round)  └──▶ C: info + state → download
//	                    POST /info  [A…, B…, C…]
//	                    POST /state [A…, B…, C…]
//
// Poll suggests a NextPoll of a few milliseconds, so every open operation
// joins every round. The round loop goroutine starts with the first waiting
// call and exits at the first tick with nobody waiting (or when the last
// waiter leaves); Close stops it at once. A 429 answer holds every round and
// every Start until its Retry-After has passed; the waiting calls get the
// retryable error.
//
// A consequence to know: a round's failure is every waiting call's failure.
// In particular a malformed /info or /state body is permanent (as for every
// driver) and fails every operation that was waiting on that round. A
// request refused as a bad request (400, 404, 413, 422) is the exception: it
// may be about one unknown or expired ID, so it is split in halves until the
// refused ID is alone; that operation is then left out of the answer
// (missing, see below) and every other one is answered.
//
// # Outcome
//
// Poll is Done when every operation's /state counters add up — the source
// document's rule: totalOperationElements equals totalSuccess +
// totalPartiallySucceeded + totalError once every machine has answered — or
// when startedAt+ttl has passed. Where the counters are absent (or all
// zero), /info's per-machine statuses decide instead; an operation that
// names no machine anywhere counts as done one minute after Start (a client
// without machines). When every machine ended in Error, Poll and
// Collect return a permanent *edr.Error whose Code is the Cytomic code and
// whose message names it ("Cytomic 202 ErrorOsNotSupported: Operating system
// not supported"). When only some did, the task succeeds with a note counting
// the failed machines by code. Machines that never answered before the TTL
// are counted in a note ("2 of 10 machines never answered before the
// operation TTL").
//
// Collect downloads each operation's file with the credential-free
// Downloader (the URL is never logged nor put in an error). A download
// answered 403 or 410 (or 400/401, as some stores say it) means the
// five-minute URL expired (404: the file is not visible behind the URL yet);
// either way the operation joins
// the next /state round for a fresh URL, at most a few times before a
// retryable error. Rows are the data lines across files; Hosts the distinct
// values of the host column (the first of hostname, machine, computerName,
// computer_name, MUID present, case-insensitive).
//
// Cancel returns edr.ErrCancelUnsupported without a request: Cytomic has no
// cancel for OSQuery operations (they end at their TTL). It releases calls
// still waiting for a round on the cancelled operations.
//
// # Decisions where the document is silent
//
//   - The query (see Query) looks at running processes and at files directly
//     inside the usual drop folders, and selects system_info.hostname so every
//     row names its host.
//   - startedAt is taken when the start answer arrives, so the driver's TTL
//     never ends before Cytomic's.
//   - An operation missing from /info or /state is taken as "not visible
//     yet" for two minutes after Start, then as lost (permanent).
//   - The result file has no quoting rules: fields split on every ";",
//     surrounding double quotes trimmed, blank lines and repeated header
//     lines skipped, CRLF and a UTF-8 BOM tolerated.
//   - expires_in absent: the token is used until it is rejected.
package cytomic
