// Package cbc is the Carbon Black Cloud driver: it hunts a sample with an
// asynchronous event export through the CB Cloud Job Service (task kind
// cbc.event_export).
//
// Sources. The routes come from "Using the new Jobs Service API" (2020,
// specs/000). The shapes of the answers come from the vendor's own client,
// carbonblack/carbon-black-cloud-sdk-python at commit
// fc0c2643f340af86e3b4ac39b800cce2c661f664: src/cbc_sdk/platform/jobs.py
// (Job, JobQuery), src/cbc_sdk/platform/models/job.yaml (the job object),
// src/cbc_sdk/connection.py (headers, error bodies) and the fixtures under
// src/tests/unit/fixtures/ (recorded in testdata/, see its README). Where
// they say more than the document, the driver accepts every shape:
//
//	Start    POST {URL}/jobs/v1/orgs/{org_key}/jobs/start/event_export
//	         {"query":{"query":"process_hash:<sha256>","time_range":{"start":<Intent.At − Window, ms>},"rows":N},
//	          "api_resource":"enriched_events","version":"v2"}    → the job object, {"id":4522,...}
//	         (the id is an int64 in the SDK's model; strings are accepted)
//	Poll     GET  …/jobs/{job_id}/progress → {"num_total","num_completed","message"}; message
//	         QUEUED → IN_PROGRESS → FINISHED as documented, but optional (the SDK reads it
//	         with .get, its fixture for a completed job has none, others hold free text).
//	         When the answer cannot tell (no message and 0/0, an unknown message) or has not
//	         changed for JobCheckAfter, GET …/jobs/{job_id}: the job object's status
//	         CREATED → COMPLETED or FAILED (the SDK has waited on it alone since 1.5.x;
//	         FAILED has no spelling in /progress). FAILED fails the task with the job's
//	         "errors" text.
//	Collect  GET  …/jobs/{job_id}/download → 404 while not ready (the job object tells a
//	         failed or vanished job from "not yet"), else a redirect (any 3xx) to a
//	         pre-signed URL, fetched with the credential-free httpc.Downloader, or the
//	         output inline with 200 (the SDK's fixture); summarised as a stream (rows,
//	         distinct hosts) with every line, record and JSON value capped at MaxLine and
//	         zip spooling capped driver-wide at MaxSpool
//	Find     GET  …/jobs (the SDK's JobQuery: no parameters, {"num_found","results"}),
//	         paged with start/rows only when the answer says there is more; see Find
//	Cancel   the Job Service has no cancel: edr.ErrCancelUnsupported
//
// Every API request carries X-Auth-Token: <API secret>/<API ID>. Statuses
// map to errors as edr/vendorhttp's table says; error bodies
// ({"error_code","message"}, {"reason":"query_malformed_syntax"}) give the
// error its Code and text, with the secret masked; a 2xx answer carrying
// "errorMessage" is an error, as the SDK has it. The operation reference is {"id":"<job
// id>"}; everything else (URL, org key, credentials) comes from Config, so
// another worker with the same configuration re-attaches from the
// reference alone.
//
// A Driver is safe for concurrent use.
package cbc

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

const vendor = "cbc"

// Defaults for Config fields left zero.
const (
	// DefaultWindow is the look-back of time_range.start: CB Cloud keeps
	// events for 30 days.
	DefaultWindow = 30 * 24 * time.Hour
	// DefaultRows is query.rows.
	DefaultRows = 10000
	// DefaultMaxExport caps the downloaded export.
	DefaultMaxExport = 512 << 20
	// DefaultJobCheckAfter is how long /progress may repeat itself before
	// Poll reads the job object.
	DefaultJobCheckAfter = time.Minute
	// DefaultFindMaxPages and DefaultFindMaxBytes cap what Find reads of
	// the job list.
	DefaultFindMaxPages = 10
	DefaultFindMaxBytes = 32 << 20
	// DefaultMaxLine caps one line (CSV record, NDJSON event) or JSON value
	// of the export.
	DefaultMaxLine = 1 << 20
	// DefaultMaxSpool caps the zip exports spooled to TempDir at once.
	DefaultMaxSpool = 1 << 30
)

// NotReadyRetryAfter is the RetryAfter of the error Collect returns while
// /download still answers 404 (output not available yet).
const NotReadyRetryAfter = 2 * time.Second

// SpoolRetryAfter is the RetryAfter of the error Collect returns when the
// zip spool budget (MaxSpool) is held by other downloads.
const SpoolRetryAfter = 30 * time.Second

// credentialsMsg is the operator-facing text for 401/403.
const credentialsMsg = "CBC credentials rejected (check CBC_API_ID/CBC_API_SECRET/CBC_ORG_KEY)"

// Config configures a Driver.
type Config struct {
	// URL is the CB Cloud API base ("{psc-hostname}"), e.g.
	// https://defense.conferdeploy.net. Required.
	URL string
	// OrgKey, APIID and APISecret are the org key and the API key pair
	// (X-Auth-Token: APISecret/APIID). Required.
	OrgKey, APIID, APISecret string
	// UserAgent is sent on every API request.
	UserAgent string
	// Timeout bounds one API request (httpc.DefaultTimeout if 0).
	Timeout time.Duration
	// MaxBody caps API responses (httpc.DefaultMaxBody if 0).
	MaxBody int64
	// MaxExport caps the downloaded export in bytes (DefaultMaxExport if 0).
	// Decompressed content is capped at 4 × MaxExport. The Downloader's own
	// MaxBody applies too: set it at least as large.
	MaxExport int64
	// Limiter paces API requests fleet-wide; nil means none. The pre-signed
	// download is not paced (it goes to S3, not to CB Cloud).
	Limiter httpc.Limiter
	// Downloader fetches the pre-signed URL without credentials. Required.
	Downloader *httpc.Downloader
	// Window is how far back time_range.start reaches from Intent.At
	// (DefaultWindow if 0).
	Window time.Duration
	// Rows is query.rows, the export's row limit (DefaultRows if 0).
	Rows int
	// TempDir is where zip exports larger than 8 MiB are spooled while they
	// are read (zip needs random access); "" = os.TempDir().
	TempDir string
	// MaxSpool caps the bytes of all zip exports this driver spools to
	// TempDir at the same time (DefaultMaxSpool if 0). The worker builds
	// one CBC driver, so this is the process's cap. A download that finds
	// the budget spent fails retryably (RetryAfter SpoolRetryAfter) and
	// gives back what it held; one larger than the whole budget fails
	// permanently.
	MaxSpool int64
	// Spool, when set, is the budget shared with other drivers (one per
	// process, whatever the number of accounts); MaxSpool is then ignored.
	Spool *SpoolBudget
	// MaxLine caps one CSV record, NDJSON line or JSON value of the export
	// (DefaultMaxLine if 0): a longer one fails the task permanently
	// instead of being read into memory.
	MaxLine int
	// JobCheckAfter is how long the answer of /progress may stay the same
	// before Poll reads the job object for its status (the documented
	// progress messages have no failure spelling, so a failed job may repeat
	// its last progress): DefaultJobCheckAfter if 0.
	JobCheckAfter time.Duration
	// FindMaxPages caps the pages of the job list Find reads
	// (DefaultFindMaxPages if 0); FindMaxBytes caps one page
	// (DefaultFindMaxBytes if 0).
	FindMaxPages int
	FindMaxBytes int64
	// Transport overrides the API client's transport (tests).
	Transport http.RoundTripper
	// Now is the clock Poll measures JobCheckAfter with (time.Now if nil).
	// Nothing sent to the vendor depends on it: the start request is
	// derived from the Intent.
	Now func() time.Time
	// Logger is optional.
	Logger *zap.Logger
	// Redact is the process's set of secrets, which every error text built
	// from an answer goes through; the driver adds its own secret (in every
	// wire form) to it. nil: a set of the driver's own.
	Redact *redact.Set
}

// String describes cfg without its secret.
func (c Config) String() string {
	return fmt.Sprintf("cbc.Config{URL: %s, OrgKey: %s, APIID: %s, APISecret: %s}", httpc.Redact(c.URL), c.OrgKey, c.APIID, redact.Mask)
}

// GoString is String, so %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// Driver runs CB Cloud event exports. Safe for concurrent use.
type Driver struct {
	cfg   Config
	base  string // URL without a trailing slash
	org   string // path-escaped org key
	token string // X-Auth-Token value
	api   *httpc.Client
	list  *httpc.Client // the job list: a larger body cap
	spool *SpoolBudget
	log   *zap.Logger
	// answers maps the API's answers to *edr.Error; redact masks the
	// secret in every text built from one.
	answers *vendorhttp.API
	redact  *redact.Set

	mu     sync.Mutex
	warned map[string]bool // unknown progress messages already logged
	// watch remembers, per job, the last /progress answer and since when
	// it has not changed (or when the job object was last read).
	watch map[string]watched
}

type watched struct {
	sig   string
	since time.Time
}

var _ edr.Driver = (*Driver)(nil)

var orgKeyRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// New validates cfg and returns a Driver. The error names the first field
// that is missing or invalid.
func New(cfg Config) (*Driver, error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("cbc: URL is required")
	case cfg.OrgKey == "":
		return nil, errors.New("cbc: OrgKey is required")
	case cfg.APIID == "":
		return nil, errors.New("cbc: APIID is required")
	case cfg.APISecret == "":
		return nil, errors.New("cbc: APISecret is required")
	case cfg.Downloader == nil:
		return nil, errors.New("cbc: Downloader is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("cbc: URL must be an absolute http(s) URL without credentials, query or fragment")
	}
	if !orgKeyRe.MatchString(cfg.OrgKey) {
		return nil, errors.New("cbc: OrgKey must be letters, digits, '-' or '_'")
	}
	if !headerSafe(cfg.APIID) || strings.Contains(cfg.APIID, "/") {
		return nil, errors.New("cbc: APIID must be printable ASCII without spaces or '/'")
	}
	if !headerSafe(cfg.APISecret) {
		return nil, errors.New("cbc: APISecret must be printable ASCII without spaces")
	}
	switch {
	case cfg.Timeout < 0:
		return nil, errors.New("cbc: Timeout must not be negative")
	case cfg.MaxBody < 0:
		return nil, errors.New("cbc: MaxBody must not be negative")
	case cfg.MaxExport < 0:
		return nil, errors.New("cbc: MaxExport must not be negative")
	case cfg.Window < 0:
		return nil, errors.New("cbc: Window must not be negative")
	case cfg.Rows < 0:
		return nil, errors.New("cbc: Rows must not be negative")
	case cfg.MaxSpool < 0:
		return nil, errors.New("cbc: MaxSpool must not be negative")
	case cfg.MaxLine < 0:
		return nil, errors.New("cbc: MaxLine must not be negative")
	case cfg.JobCheckAfter < 0:
		return nil, errors.New("cbc: JobCheckAfter must not be negative")
	case cfg.FindMaxPages < 0:
		return nil, errors.New("cbc: FindMaxPages must not be negative")
	case cfg.FindMaxBytes < 0:
		return nil, errors.New("cbc: FindMaxBytes must not be negative")
	}
	cfg.MaxExport = cmp.Or(cfg.MaxExport, DefaultMaxExport)
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	cfg.Rows = cmp.Or(cfg.Rows, DefaultRows)
	cfg.MaxSpool = cmp.Or(cfg.MaxSpool, DefaultMaxSpool)
	cfg.MaxLine = cmp.Or(cfg.MaxLine, DefaultMaxLine)
	cfg.JobCheckAfter = cmp.Or(cfg.JobCheckAfter, DefaultJobCheckAfter)
	cfg.FindMaxPages = cmp.Or(cfg.FindMaxPages, DefaultFindMaxPages)
	cfg.FindMaxBytes = cmp.Or(cfg.FindMaxBytes, DefaultFindMaxBytes)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	hc := httpc.Config{
		Service:   vendor,
		UserAgent: cfg.UserAgent,
		Timeout:   cfg.Timeout,
		MaxBody:   cfg.MaxBody,
		Limiter:   cfg.Limiter,
		Transport: cfg.Transport,
	}
	lc := hc
	lc.MaxBody = cfg.FindMaxBytes
	red := cmp.Or(cfg.Redact, redact.New())
	red.Add(cfg.APISecret, cfg.APISecret+"/"+cfg.APIID)
	return &Driver{
		redact: red,
		answers: &vendorhttp.API{
			Vendor: vendor,
			Texts: map[vendorhttp.Class]string{
				vendorhttp.Credentials: credentialsMsg, vendorhttp.Forbidden: credentialsMsg,
				vendorhttp.Unavailable: "server error", vendorhttp.NotFound: "", vendorhttp.Refused: "",
			},
			Describe: describe,
			Redact:   red,
		},
		cfg:    cfg,
		base:   strings.TrimRight(cfg.URL, "/"),
		org:    url.PathEscape(cfg.OrgKey),
		token:  cfg.APISecret + "/" + cfg.APIID,
		api:    httpc.New(hc),
		list:   httpc.New(lc),
		spool:  cmp.Or(cfg.Spool, NewSpoolBudget(cfg.MaxSpool)),
		log:    log.Named(vendor),
		warned: map[string]bool{},
		watch:  map[string]watched{},
	}, nil
}

func headerSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// String describes the driver without its secret.
func (d *Driver) String() string {
	return fmt.Sprintf("cbc.Driver{URL: %s, OrgKey: %s}", httpc.Redact(d.base), d.cfg.OrgKey)
}

// Kind returns edr.KindCBCEventExport.
func (d *Driver) Kind() string { return edr.KindCBCEventExport }

type startBody struct {
	Query       startQuery `json:"query"`
	APIResource string     `json:"api_resource"`
	Version     string     `json:"version"`
}

type startQuery struct {
	Query     string    `json:"query"`
	TimeRange timeRange `json:"time_range"`
	Rows      int       `json:"rows"`
}

type timeRange struct {
	Start string `json:"start"`
}

// timeStartLayout renders time_range.start: UTC with milliseconds, as the
// SDK renders its time ranges ("%Y-%m-%dT%H:%M:%S.%fZ"), so two intents
// decided in the same second still send different requests.
const timeStartLayout = "2006-01-02T15:04:05.000Z"

// request is the start request for sha under intent in: the same intent
// always gives the same bytes (time_range.start = Intent.At − Window), so
// Find can recognise the job by its parameters.
func (d *Driver) request(sha string, in edr.Intent) startBody {
	return startBody{
		Query: startQuery{
			Query:     "process_hash:" + sha,
			TimeRange: timeRange{Start: d.timeStart(in).Format(timeStartLayout)},
			Rows:      d.cfg.Rows,
		},
		APIResource: "enriched_events",
		Version:     "v2",
	}
}

func (d *Driver) timeStart(in edr.Intent) time.Time {
	return in.Time().Add(-d.cfg.Window).UTC().Truncate(time.Millisecond)
}

// Start launches an event export for process_hash:<sha256> over the
// retention window before the intent. A hash that is not 64 hex digits is
// refused before any request is sent. The Job Service has no field for a
// name or label, so the intent key is not sent: Find matches the request's
// exact parameters instead.
func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing to build the query", Err: err}
	}
	body, err := json.Marshal(d.request(sha, in))
	if err != nil {
		return nil, fmt.Errorf("cbc start: encoding request: %w", err)
	}
	resp, err := d.call(ctx, d.api, "start", http.MethodPost, "/jobs/start/event_export", body)
	if err != nil {
		return nil, err
	}
	id, err := decodeAnswer(d, "start", resp, decodeStart)
	if err != nil {
		return nil, err
	}
	return refOf(id)
}

func refOf(id string) (edr.Ref, error) {
	raw, err := json.Marshal(ref{ID: id})
	if err != nil {
		return nil, fmt.Errorf("cbc: encoding reference: %w", err)
	}
	return raw, nil
}

// failedMessages are progress messages that end the job without output. The
// document only names QUEUED, IN_PROGRESS and FINISHED; these are the
// plausible failure spellings of the real service.
var failedMessages = map[string]bool{
	"FAILED": true, "FAILURE": true, "ERROR": true, "CANCELLED": true, "CANCELED": true,
	"ABORTED": true, "TIMED_OUT": true, "TIMEOUT": true, "EXPIRED": true,
}

// finishedMessages are progress messages that mean the output is ready:
// FINISHED, as documented, and the other spellings of "done".
var finishedMessages = map[string]bool{
	"FINISHED": true, "COMPLETED": true, "COMPLETE": true, "DONE": true,
	"SUCCESS": true, "SUCCEEDED": true,
}

// knownMessages are the documented messages that mean "not yet".
var knownMessages = map[string]bool{"QUEUED": true, "IN_PROGRESS": true}

// maxWarned bounds how many distinct unknown progress messages are logged.
const maxWarned = 32

// Poll reads the job's progress and, when that cannot tell, the job
// object:
//
//   - message FINISHED (or COMPLETED, DONE, SUCCESS…) is Done; a failure
//     message (FAILED, ERROR, CANCELLED…) is a permanent error;
//   - no message (the SDK's fixture for a completed job is
//     {"num_total":18,"num_completed":18}): num_completed ≥ num_total > 0 is
//     Done, as the SDK decided before 1.5.x; with num_total 0 the counters
//     cannot tell a queued job from a finished empty export, so the job
//     object decides;
//   - an unknown message: the job object decides (and the message is
//     logged once);
//   - QUEUED, IN_PROGRESS, or counters still counting: not done. The
//     documented messages have no failure spelling, so a failed job may
//     repeat its last progress forever: when the answer has not changed
//     for JobCheckAfter, the job object is read too.
//
// The job object (GET …/jobs/{id}, the SDK's Job model) says CREATED,
// COMPLETED or FAILED; the SDK waits on it alone since 1.5.x. COMPLETED is
// Done; FAILED is a permanent error carrying the job's "errors" text.
// Reading it only when /progress is ambiguous or stuck costs one request
// per JobCheckAfter of a long job, not one per poll.
func (d *Driver) Poll(ctx context.Context, r edr.Ref) (edr.Status, error) {
	id, err := d.ref("poll", r)
	if err != nil {
		return edr.Status{}, err
	}
	p, err := d.progress(ctx, "poll", id)
	if err != nil {
		return edr.Status{}, err
	}
	line := p.String()
	ambiguous := false
	switch {
	case finishedMessages[p.Message]:
		d.forget(id)
		return edr.Status{Done: true, Progress: line}, nil
	case failedMessages[p.Message]:
		d.forget(id)
		return edr.Status{}, d.failedErr(ctx, "poll", id, p.Message)
	case p.Message == "" && p.Total > 0 && p.Completed >= p.Total:
		d.forget(id)
		return edr.Status{Done: true, Progress: line}, nil
	case p.Message == "":
		ambiguous = p.Total == 0
	case !knownMessages[p.Message]:
		d.warnUnknown(id, p.Message)
		ambiguous = true
	}
	if !d.jobCheckDue(id, line, ambiguous) {
		return edr.Status{Progress: line}, nil
	}
	j, err := d.job(ctx, "poll", id)
	if err != nil {
		return edr.Status{}, err
	}
	switch j.Status {
	case jobCompleted:
		d.forget(id)
		return edr.Status{Done: true, Progress: p.with(jobCompleted)}, nil
	case jobFailed:
		d.forget(id)
		return edr.Status{}, d.jobFailedErr("poll", j)
	}
	return edr.Status{Progress: line}, nil
}

// jobCheckDue says whether Poll should read the job object now: always
// for an ambiguous answer, else when the same answer (sig) has come back
// for JobCheckAfter since it first did or since the last check. The clock
// restarts either way.
func (d *Driver) jobCheckDue(id, sig string, ambiguous bool) bool {
	now := d.cfg.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	w, seen := d.watch[id]
	due := ambiguous || (seen && w.sig == sig && now.Sub(w.since) >= d.cfg.JobCheckAfter)
	if due || !seen || w.sig != sig {
		d.pruneWatchLocked(now)
		d.watch[id] = watched{sig: sig, since: now}
	}
	return due
}

// maxWatched bounds the per-job progress memory; past it, entries idle for
// a day go (their jobs were collected elsewhere or abandoned).
const maxWatched = 10_000

func (d *Driver) pruneWatchLocked(now time.Time) {
	if len(d.watch) < maxWatched {
		return
	}
	for id, w := range d.watch {
		if now.Sub(w.since) > 24*time.Hour {
			delete(d.watch, id)
		}
	}
	if len(d.watch) >= maxWatched {
		clear(d.watch) // only costs an early job check per job
	}
}

func (d *Driver) forget(id string) {
	d.mu.Lock()
	delete(d.watch, id)
	d.mu.Unlock()
}

// progress asks for job id's progress on behalf of op.
func (d *Driver) progress(ctx context.Context, op, id string) (progress, error) {
	resp, err := d.call(ctx, d.api, op, http.MethodGet, "/jobs/"+id+"/progress", nil)
	if err != nil {
		return progress{}, err
	}
	if resp.Status == http.StatusNotFound {
		return progress{}, d.notFoundErr(op, id, resp)
	}
	return decodeAnswer(d, op, resp, decodeProgress)
}

// job reads job id's object on behalf of op.
func (d *Driver) job(ctx context.Context, op, id string) (jobInfo, error) {
	resp, err := d.call(ctx, d.api, op, http.MethodGet, "/jobs/"+id, nil)
	if err != nil {
		return jobInfo{}, err
	}
	if resp.Status == http.StatusNotFound {
		return jobInfo{}, d.notFoundErr(op, id, resp)
	}
	return decodeAnswer(d, op, resp, decodeJob)
}

func (d *Driver) notFoundErr(op, id string, resp *httpc.Response) error {
	return d.answers.Error(vendorhttp.Call{Op: op,
		Msg: "export job " + id + " not found (expired, or started under another org key or API key)"}, resp)
}

// failedErr is the error for a job whose progress message says it failed.
// The job object's "errors" is the vendor's reason: it is read once, best
// effort.
func (d *Driver) failedErr(ctx context.Context, op, id, msg string) error {
	e := &edr.Error{Vendor: vendor, Op: op, Code: msg, Msg: "export job " + id + " ended without output (" + msg + ")"}
	if j, err := d.job(ctx, op, id); err == nil && j.Errors != "" {
		e.Msg += ": " + d.redact.String(j.Errors)
	}
	return e
}

// jobFailedErr is the error for a job object that says FAILED.
func (d *Driver) jobFailedErr(op string, j jobInfo) error {
	msg := "export job " + j.ID + " failed at the vendor"
	if j.Errors != "" {
		msg += ": " + d.redact.String(j.Errors)
	}
	return &edr.Error{Vendor: vendor, Op: op, Code: jobFailed, Msg: msg}
}

// warnUnknown logs a progress message this driver does not know, once per
// message (up to maxWarned of them).
func (d *Driver) warnUnknown(id, msg string) {
	d.mu.Lock()
	first := !d.warned[msg] && len(d.warned) < maxWarned
	if first {
		d.warned[msg] = true
	}
	d.mu.Unlock()
	if first {
		d.log.Warn("unknown export progress message; polling on until FINISHED or a failure",
			zap.String("message", msg), zap.String("job_id", id))
	}
}

// Collect downloads the finished export and summarises it. While the output
// is not available (/download answers 404) it returns a retryable error with
// RetryAfter NotReadyRetryAfter. A pre-signed URL that was refused (expired)
// is retryable too: the next Collect asks /download for a fresh one.
func (d *Driver) Collect(ctx context.Context, r edr.Ref) (edr.Result, error) {
	id, err := d.ref("collect", r)
	if err != nil {
		return edr.Result{}, err
	}
	path := "/jobs/" + id + "/download"
	resp, err := d.call(ctx, d.api, "collect", http.MethodGet, path, nil)
	if err != nil {
		return edr.Result{}, err
	}
	var res edr.Result
	switch {
	case resp.Status == http.StatusNotFound:
		// The document: "If the job output is not yet available, this route
		// will return 404 Not Found." The same 404 would come back forever
		// for a job that no longer exists (expired at the vendor while no
		// worker held it) or that failed, so ask for the job object once:
		// gone or FAILED is a permanent error, anything else "not yet".
		j, jerr := d.job(ctx, "collect", id)
		switch {
		case jerr != nil && !edr.IsRetryable(jerr):
			return edr.Result{}, jerr
		case jerr == nil && j.Status == jobFailed:
			return edr.Result{}, d.jobFailedErr("collect", j)
		}
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Status: resp.Status, Retryable: true,
			RetryAfter: NotReadyRetryAfter, Msg: "export output not available yet"}
	case resp.Status >= 300 && resp.Status < 400:
		res, err = d.fetch(ctx, path, resp.Header.Get("Location"))
	case resp.Status/100 == 2:
		// Not what the document describes: the output came inline (bounded
		// by MaxBody, as every API response). It must be export data: an
		// empty body, or a JSON document that holds no events ({"url":…},
		// the job object), is malformed rather than "nothing found".
		if len(bytes.TrimSpace(resp.Body)) == 0 {
			return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Status: resp.Status,
				Msg: fmt.Sprintf("malformed response: /download answered HTTP %d with an empty body instead of a redirect to the export", resp.Status)}
		}
		res, err = d.summarize(bytes.NewReader(resp.Body),
			fmt.Sprintf("malformed response: /download answered HTTP %d without a redirect, and the body is not export data: ", resp.Status))
	default:
		return edr.Result{}, d.answers.Error(vendorhttp.Call{Op: "collect"}, resp)
	}
	if err != nil {
		return edr.Result{}, err
	}
	if res.Rows >= int64(d.cfg.Rows) {
		res.Notes = append(res.Notes, fmt.Sprintf("the export reached its row limit (%d): there may be more events", d.cfg.Rows))
	}
	return res, nil
}

// Close does nothing: the driver runs nothing in the background.
func (d *Driver) Close() {}

// Cancel returns edr.ErrCancelUnsupported: the CB Cloud Job Service has no
// route to cancel a job, so an aborted export is abandoned and ends on its
// own. No request is sent.
func (d *Driver) Cancel(ctx context.Context, r edr.Ref) error {
	return edr.ErrCancelUnsupported
}

// fetch follows the /download redirect with the credential-free Downloader.
// The location is a pre-signed URL: it never goes into an error.
func (d *Driver) fetch(ctx context.Context, path, location string) (edr.Result, error) {
	if location == "" {
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: "malformed response: download redirect has no Location"}
	}
	base, err := url.Parse(d.base + "/jobs/v1/orgs/" + d.org + path)
	if err != nil {
		return edr.Result{}, fmt.Errorf("cbc collect: %w", err)
	}
	target, err := base.Parse(location)
	if err != nil {
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: "malformed response: download redirect Location is not a URL"}
	}
	resp, err := d.cfg.Downloader.Get(ctx, target.String())
	if err != nil {
		return edr.Result{}, downloadErr(ctx, err)
	}
	defer resp.Body.Close()
	res, err := d.summarize(resp.Body, "")
	if err != nil && ctx.Err() != nil {
		return edr.Result{}, fmt.Errorf("cbc collect: %w", ctx.Err())
	}
	return res, err
}

// summarize reads an export and classifies its failure. malformedPrefix
// introduces the message of an export that cannot be parsed.
func (d *Driver) summarize(r io.Reader, malformedPrefix string) (edr.Result, error) {
	res, err := summarize(r, exportLimits{
		maxRaw:      d.cfg.MaxExport,
		maxInflated: inflateRatio * d.cfg.MaxExport,
		maxHosts:    MaxDistinctHosts,
		tempDir:     d.cfg.TempDir,
		maxLine:     d.cfg.MaxLine,
		spool:       d.spool,
	})
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, errMalformedExport):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: malformedPrefix + err.Error()}
	case errors.Is(err, errLineTooLong):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: fmt.Sprintf("export line longer than %d bytes (raise MaxLine if the export is genuine)", d.cfg.MaxLine), Err: err}
	case errors.Is(err, errExportTooLarge), errors.Is(err, httpc.ErrTooLarge):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: "export too large (raise MaxExport and the download size limit)", Err: err}
	case errors.Is(err, errSpoolTooLarge):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: "zip export larger than the spool budget (raise MaxSpool)", Err: err}
	case errors.Is(err, errSpoolBusy):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Retryable: true, RetryAfter: SpoolRetryAfter,
			Msg: "other exports hold the zip spool budget; collecting again later", Err: err}
	}
	// The connection failed mid-export (or the local spool did): fetch
	// again.
	return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Retryable: true, Msg: "reading the export failed", Err: err}
}

// downloadErr classifies a failure of the pre-signed download. Bodies of
// object-store errors are dropped: S3 echoes the signature back.
func downloadErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cbc collect: %w", ctx.Err())
	}
	var se *httpc.StatusError
	switch {
	case errors.Is(err, httpc.ErrDownloadRefused):
		return &edr.Error{Vendor: vendor, Op: "collect",
			Msg: "pre-signed export URL refused by the download policy (check DOWNLOAD_HOSTS / INSECURE_HTTP)", Err: err}
	case errors.As(err, &se):
		clean := *se
		clean.Body = ""
		e := &edr.Error{Vendor: vendor, Op: "collect", Status: se.Status, Err: &clean,
			Retryable: se.Retryable(), RetryAfter: se.RetryAfter}
		switch se.Status {
		case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusGone:
			// Expired (S3 says 403; other stores 400 or 410) or not yet
			// visible (404): a new /download issues a fresh URL. Like any
			// retryable failure, the runner retries it until the job's
			// deadline.
			e.Retryable = true
			e.Msg = "object store refused the pre-signed export URL (expired?); a fresh URL will be requested"
		default:
			e.Msg = "downloading the export failed"
		}
		return e
	case errors.Is(err, httpc.ErrTooLarge):
		return &edr.Error{Vendor: vendor, Op: "collect", Msg: "export too large for the download size limit", Err: err}
	}
	return &edr.Error{Vendor: vendor, Op: "collect", Retryable: httpc.IsRetryable(err), Msg: "downloading the export failed", Err: err}
}

// ref decodes a checkpointed reference.
func (d *Driver) ref(op string, r edr.Ref) (string, error) {
	id, err := parseRef(r)
	if err != nil {
		return "", &edr.Error{Vendor: vendor, Op: op, Msg: "invalid operation reference: " + err.Error()}
	}
	return id, nil
}

// call sends one API request under /jobs/v1/orgs/{org_key} with client c.
// The returned error is nil for every complete response, whatever its
// status.
func (d *Driver) call(ctx context.Context, c *httpc.Client, op, method, path string, body []byte) (*httpc.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.base+"/jobs/v1/orgs/"+d.org+path, rd)
	if err != nil {
		return nil, fmt.Errorf("cbc %s: building request: %w", op, err)
	}
	req.Header.Set("X-Auth-Token", d.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, d.answers.NoAnswer(ctx, op, err)
	}
	return resp, nil
}

// decodeAnswer decodes a 2xx answer to op with decode. Another status is
// mapped to an *edr.Error; a 2xx carrying "errorMessage" is refused, as the
// SDK refuses it whatever the status (permanent: the service answered, and
// said no); a body decode cannot read is malformed.
func decodeAnswer[T any](d *Driver, op string, resp *httpc.Response, decode func([]byte) (T, error)) (T, error) {
	var zero T
	if resp.Status/100 != 2 {
		return zero, d.answers.Error(vendorhttp.Call{Op: op}, resp)
	}
	var probe struct {
		ErrorMessage json.RawMessage `json:"errorMessage"`
	}
	if bytes.HasPrefix(bytes.TrimSpace(resp.Body), []byte("{")) && json.Unmarshal(resp.Body, &probe) == nil && probe.ErrorMessage != nil {
		_, msg := vendorMessage(resp.Body)
		return zero, &edr.Error{Vendor: vendor, Op: op, Status: resp.Status,
			Msg: "the service answered with an error: " + cmp.Or(d.redact.String(msg), "(no text)")}
	}
	v, err := decode(resp.Body)
	if err != nil {
		return zero, d.answers.Malformed(vendorhttp.Call{Op: op}, resp.Status, err)
	}
	return v, nil
}

// describe reads what a CBC error body says (vendorMessage) for
// vendorhttp.
func describe(status int, body []byte) vendorhttp.Detail {
	code, msg := vendorMessage(body)
	d := vendorhttp.Detail{Code: code, Msg: msg}
	if status == http.StatusBadRequest && code == "query_malformed_syntax" {
		d.Explain = "the query was refused as malformed"
	}
	return d
}
