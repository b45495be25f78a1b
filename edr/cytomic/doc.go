// Package cytomic is the edr.Driver for Cytomic Orion OSQuery (task kind
// cytomic.osquery, Windows samples only): it runs an osquery statement that
// looks for the sample's SHA-256 on every machine of the configured clients,
// follows the operations until every machine answered or the operation TTL
// passed, and summarises the result files.
//
// # Sources
//
// The real API outranks specs/003 (a copy of Cytomic's "OSQuery Access API"
// page that lost its field tables) and our simulator. What the driver sends
// is taken from, in this order:
//
//   - the only public client, the Cortex XSOAR integration
//     demisto/content Packs/CytomicOrion/Integrations/CytomicOrion
//     (CytomicOrion.py and CytomicOrion.yml, commit
//     ff3346a2807c43b11f03ea78cdd9391b59ef0b2c): token request, base URL,
//     paths, headers, start body fields, ttl unit;
//   - Cytomic's help pages (info.cytomicmodel.com, ORION/en and ORION/es,
//     17_integration_soc_tools/api_access_osquery.htm, oauth_data_flow.htm,
//     enable_access_api_external.htm): answer fields, counters, error codes,
//     the file format, the ttl unit, the OAuth client credentials.
//
// No recorded answer of a real server is public (the XSOAR pack has no test
// data); testdata/ holds bodies built from the documented field names, and
// says so.
//
// # Contract
//
//	POST <TokenURL>  Authorization: Basic base64(client_id:client_secret)
//	                 form grant_type=password&username=…&password=…&scope=orion.api
//	                 → {"access_token", "token_type", "expires_in", "refresh_token", …}
//	then "Authorization: Bearer <token>", "Content-Type:
//	application/json-patch+json" and "Accept: application/json" on every API
//	call. The token is replaced a tenth of its lifetime (at most a minute)
//	before expires_in runs out, and once, transparently, when a call
//	answers 401 (edr/vendorhttp's TokenSource); the refresh token is not
//	used (a new password grant needs nothing but the configuration).
//	Statuses map to errors as edr/vendorhttp's table says; the password,
//	the client secret and every token are masked in every error text.
//
//	POST <URL><APIPrefix>/osQuery/client  {"query": "<sql>", "ttl": <minutes>, "pandaIDs": ["…"]}
//	     → [{"pandaID","operationId","MUIDs":[…]}]            one operation per client
//	POST <URL><APIPrefix>/osQuery/info    [{"operationId": …}, …]
//	     → [{"panda","operationId","info":[{"MUID","status","errorCode","errorDescription"}]}]
//	       status: Pending | Success | PartiallySucceeded | Error (errorCode 201/202/203)
//	POST <URL><APIPrefix>/osQuery/state   [{"operationId": …}, …]
//	     → [{"panda","operationId","url","counters":{"totalOperationElements",
//	         "totalSuccess","totalPartiallySucceeded","totalError"}}]
//	GET  <url>  (pre-signed, no credentials, valid five minutes; 403/410 after)
//	     → file "osquery_<operationId>": text, first line the field names
//	       separated by ";", then one line per row.
//
// Every 2xx is a success (the public client accepts 200, 201 and 204); an
// empty body is an empty list.
//
// # Choices where the sources disagree (Config)
//
//   - Paths: the public client posts to /osQuery/… on https://api.cytomic.ai
//     (DefaultURL); Cytomic's page writes /api/v1/osQuery/…. Default: the
//     client's; Config.APIPrefix "/api/v1" gives the page's.
//   - ttl: minutes (Config.TTLUnit, default time.Minute), as both the page
//     and the client say ("máximo tiempo de espera en minutos … 0 para 24
//     horas"); this driver used to send seconds. Config.TTL is rounded up
//     and never sent as 0, which Cytomic reads as 24 hours.
//   - The client list's field: the client names its command argument
//     "pandaIDs" (its code then drops it: no public code ever sent a client
//     list); the page's name for it did not survive. Default "pandaIDs"
//     (Config.ClientsField); "clientIds" is what this driver sent before.
//   - Token: Config.TokenURL defaults to the client's
//     https://auth.pandasecurity.com/oauth/token; Config.ClientID and
//     ClientSecret (Cytomic's page says the CAS server requires them and
//     publishes the pair) are sent with HTTP Basic, as the client does; the
//     scope is Config.Scope, default "orion.api", as the client sends.
//
// Decoding is tolerant where the sources are loose: IDs and error codes may
// be JSON numbers or strings (IDs are sent back in the type they came in),
// counts may be numeric strings, field names match case-insensitively,
// unknown fields are ignored, statuses are compared case-insensitively, a
// lone object is taken as a list of one and an empty body as an empty list.
// An unknown status counts as still running; the TTL bounds the wait.
//
// # Hostile answers
//
// Every API answer is read whole but capped (Config.MaxBody, 8 MiB by
// default), and no JSON string or number in it may be longer than
// Config.MaxToken (64 KiB): an operation ID is checkpointed in the
// reference, a URL handed to the downloader, an access token sent with
// every request. Result files are streamed: at most Config.MaxFile (64 MiB)
// per file, Config.MaxLine (1 MiB) per line — a line is never held whole
// beyond that — and 1024 fields in the header line; data lines are not
// split (only the host field is cut out). Exceeding any cap fails the task
// with a permanent error.
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
// The runner polls through PollBatch instead (edr.BatchPoller): it gathers
// an account's due polls itself and PollBatch sends their round at once.
// The answers of the round in which a poll finds operations settled are
// kept for a minute (within a bound of operations and the machines they list): the Collect that follows
// takes them and downloads at once, instead of holding one of the
// account's call slots for up to a round — after a takeover of hundreds of
// finished operations, collects had queued for tens of seconds, and the
// account's polls behind them.
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
// # Find and restarts
//
// Find always answers edr.ErrFindUnsupported, without a request. Cytomic's
// OSQuery API has no way to list operations, and none to look one up by
// something the start request sets: the start body carries only the query,
// the ttl and the clients (no name or label to put the intent key in), and
// /info and /state answer only for operation IDs the caller already has.
//
// So when a worker crashes between Cytomic accepting a start and the
// reference being checkpointed, or a start's answer is lost (timeout, 5xx),
// the runner starts again. What that costs, and why it is harmless:
//
//   - One duplicate start is one request and one extra osquery operation
//     per configured client, run once on each of its machines; Start never
//     retries by itself, so it can be no more.
//   - The abandoned operations cannot be cancelled; they end by themselves
//     at their TTL (Config.TTL, an hour by default: a shorter CYTOMIC_TTL
//     shortens what a duplicate can cost).
//   - The new operations run the same query (it depends only on the hash)
//     and the task reads only their results: the outcome is the one a
//     single start would have given. Nothing about the abandoned operations
//     is kept anywhere.
//   - A worker that takes over a task whose reference was checkpointed never
//     starts: the reference is self-sufficient (operation IDs in Cytomic's
//     own JSON types, startedAt, the ttl applied) and Poll and Collect
//     re-attach with it, no request made to re-attach.
//
// # Decisions where the sources are silent
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
//   - Client IDs are sent as JSON strings, as configured.
package cytomic
