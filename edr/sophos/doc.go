// Package sophos is the edr.Driver for the Sophos Central XDR Data Lake
// query API (task kind sophos.xdr_query): it runs
//
//	SELECT meta_hostname, meta_ip_address, path, sha256, name, cmdline, time, endpoint_id
//	FROM xdr_data WHERE sha256 = '<sha256>'
//
// as an ad-hoc query run over a time window, follows the run until it has
// finished, pages through its results and summarises them (rows, distinct
// hosts).
//
// # Sources
//
// specs/004 (the EDR Data Lake getting-started guide) lost most of the
// API's fields. What the driver sends and accepts follows, in this order:
//
//   - Sophos's Postman collection, sophos/sophos-central-apis-postman,
//     "Sophos Central APIs.postman_collection.json" @ ae514f49 (2026-01-08;
//     also @ 04345162, 2025, and @ 37b3470b, 2021): the routes, the request
//     bodies (from/to, cancel {}), the list filters (statuses, page,
//     pageSize, pageTotal, order), results paging (pageFromKey, pageSize;
//     pages.fromKey/nextKey/size/maxSize), statuses pending|started|finished,
//     results notAvailable|succeeded|failed|timedOut|canceled, the error
//     shape {error,message,correlationId,code,createdAt,requestId,docUrl};
//   - Sophos-Community/API_Academy @ a0a80fd9, XDR/SearchSHA256.ps1 and
//     XDR/QueryDataLake*.ps1: Sophos's own hunts send a from/to window (30
//     days for a SHA-256), poll until status finished, then read results;
//   - SEKOIA-IO/automation-library, Sophos/ @ dca30aa6 (tests) and 4f801f02
//     (connector): answers a production connector recorded (a run created
//     pending; a 400 ValidationException with an integer code for a from in
//     the future; results pages with nextKey then fromKey, maxSize 2000),
//     and how it pages (pageSize with maxSize, pageFromKey).
//
// testdata/README.md lists the recorded bodies the tests replay.
//
// # Protocol
//
//	POST <AuthURL>/api/v2/oauth2/token            client credentials → bearer JWT (cached, refreshed);
//	                                              in the form body, once more with HTTP Basic after a 401
//	GET  <GlobalURL>/whoami/v1                    {"id","idType","apiHosts":{"dataRegion"}}: only when the
//	                                              tenant or the data region is not configured (tenant credentials)
//	POST <URL>/xdr-query/v1/queries/runs          {"adHocQuery":{"template":<sql>},"name":<name>,
//	                                               "from":<At−Window>,"to":<At>} → run (status pending|started)
//	GET  <URL>/xdr-query/v1/queries/runs/{id}     run: status pending|started|finished, result notAvailable|
//	                                              succeeded|failed|timedOut|canceled
//	GET  <URL>/xdr-query/v1/queries/runs/{id}/results?pageSize=&maxSize=[&pageFromKey=<nextKey>]
//	POST <URL>/xdr-query/v1/queries/runs/{id}/cancel   {} → {"canceled":true}
//	GET  <URL>/xdr-query/v1/queries/runs?page=&pageSize=&pageTotal=true&order=desc   (Find)
//
// Every data-region call carries "Authorization: Bearer <jwt>",
// "X-Tenant-ID: <tenant>" and "Content-Type: application/json" (a partner
// credential, too, names the customer tenant with X-Tenant-ID). A tenant
// credential may leave the tenant ID and the data region unconfigured:
// whoami names both, as it does for Sophos's scripts and SEKOIA's
// connector; a partner or organization credential must name them.
//
// # Starting once
//
// The run's time window and name come from the edr.Intent: to = Intent.At,
// from = At − Config.Window (30 days by default, as Sophos's SHA-256 hunt;
// the data lake keeps 30 days), name = "analysisfleet <job> <hash of the
// intent key>" (RunName). The same intent therefore always sends the same
// request, and Find can recognise the run: it lists runs newest first
// (order=desc), considers those created at or after At − edr.FindSkew, and
// matches the name exactly (a run listed without its name is read once to
// learn it; a run Sophos keeps no name for is matched on its template and
// window instead). Where Sophos puts the name is not settled: runs carry a
// top-level "name", and that is where the driver sends it; Sophos's 2021
// example sent adHocQuery.name, which Config.NameIn selects.
//
// A window whose from is in Sophos's future (the worker's clock ahead) is
// refused with 400 ValidationException; the same request succeeds once
// Sophos's clock has caught up, so that refusal is retryable.
//
// # Limits
//
// Collect stops after Config.MaxRows rows, Config.MaxPages pages or
// Config.MaxResultBytes bytes, whichever comes first, and says in a note
// that the result is truncated. Result pages are decoded as a stream: no
// single JSON value (a row, or any other field) may exceed
// Config.MaxRowBytes, and a page that holds one fails the task permanently
// instead of being read into memory.
//
// # Errors
//
// Statuses map to errors as edr/vendorhttp's table says (a 429 without
// Retry-After waits Config.PollEvery). Sophos's error body is summarised
// into the edr.Error: the error name (or its string code), the message, and
// the correlationId and requestId Sophos support asks for. The identity
// service's errors keep only their errorCode and trackingId: its free text
// may quote the request, and with it the client secret. The client secret
// and bearer tokens are masked (Config.Redact) in every error, in every
// encoding the driver sends them in, also when cut short at the end of a
// body snippet.
//
// The operation reference is {"runId","expiresAt"}: any worker can resume
// polling or collecting with it. The driver never retries (the runner
// does), except one transparent re-authentication when the API rejects a
// cached token with 401 (vendorhttp.TokenSource). Collect remembers, in this process, how far it got
// through the pages of a run, so a Collect retried after a 429 mid-way
// resumes where it stopped instead of starting over.
//
// A Driver is safe for concurrent use.
package sophos
