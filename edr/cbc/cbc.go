// Package cbc is the Carbon Black Cloud driver: it hunts a sample with an
// asynchronous event export through the CB Cloud Job Service (task kind
// cbc.event_export), as described in "Using the new Jobs Service API":
//
//	Start    POST {URL}/jobs/v1/orgs/{org_key}/jobs/start/event_export
//	         {"query":{"query":"process_hash:<sha256>","time_range":{"start":…},"rows":N},
//	          "api_resource":"enriched_events","version":"v2"}      → {"id":4522,...}
//	Poll     GET  …/jobs/{job_id}/progress   → {"num_total","num_completed","message"}
//	         message QUEUED → IN_PROGRESS → FINISHED (COMPLETED, DONE… are taken
//	         as FINISHED, FAILED, ERROR… as a failure; see Poll)
//	Collect  GET  …/jobs/{job_id}/download   → 404 while not ready, else a redirect to a
//	         pre-signed S3 URL, fetched with the credential-free httpc.Downloader and
//	         summarised as a stream (rows, distinct hosts)
//	Cancel   the Job Service has no cancel: edr.ErrCancelUnsupported
//
// Every API request carries X-Auth-Token: <API secret>/<API ID>. The
// operation reference is {"id":"<job id>"}; everything else (URL, org key,
// credentials) comes from Config, so another worker with the same
// configuration re-attaches from the reference alone.
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
	"github.com/analysisfleet/analysisfleet/internal/httpc"
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
)

// NotReadyRetryAfter is the RetryAfter of the error Collect returns while
// /download still answers 404 (output not available yet).
const NotReadyRetryAfter = 2 * time.Second

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
	// Window is how far back time_range.start reaches (DefaultWindow if 0).
	Window time.Duration
	// Rows is query.rows, the export's row limit (DefaultRows if 0).
	Rows int
	// TempDir is where zip exports larger than 8 MiB are spooled while they
	// are read (zip needs random access); "" = os.TempDir().
	TempDir string
	// Transport overrides the API client's transport (tests).
	Transport http.RoundTripper
	// Now is the clock for time_range.start (time.Now if nil).
	Now func() time.Time
	// Logger is optional.
	Logger *zap.Logger
}

// String describes cfg without its secret.
func (c Config) String() string {
	return fmt.Sprintf("cbc.Config{URL: %s, OrgKey: %s, APIID: %s, APISecret: [redacted]}", httpc.Redact(c.URL), c.OrgKey, c.APIID)
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
	log   *zap.Logger

	mu     sync.Mutex
	warned map[string]bool // unknown progress messages already logged
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
	}
	cfg.MaxExport = cmp.Or(cfg.MaxExport, DefaultMaxExport)
	cfg.Window = cmp.Or(cfg.Window, DefaultWindow)
	cfg.Rows = cmp.Or(cfg.Rows, DefaultRows)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Driver{
		cfg:   cfg,
		base:  strings.TrimRight(cfg.URL, "/"),
		org:   url.PathEscape(cfg.OrgKey),
		token: cfg.APISecret + "/" + cfg.APIID,
		api: httpc.New(httpc.Config{
			Service:   vendor,
			UserAgent: cfg.UserAgent,
			Timeout:   cfg.Timeout,
			MaxBody:   cfg.MaxBody,
			Limiter:   cfg.Limiter,
			Transport: cfg.Transport,
		}),
		log:    log.Named(vendor),
		warned: map[string]bool{},
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

// Start launches an event export for process_hash:<sha256> over the
// retention window. A hash that is not 64 hex digits is refused before any
// request is sent.
// Find is not implemented yet: the operation is started again.
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrFindUnsupported
}

func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing to build the query", Err: err}
	}
	body, err := json.Marshal(startBody{
		Query: startQuery{
			Query:     "process_hash:" + sha,
			TimeRange: timeRange{Start: d.cfg.Now().Add(-d.cfg.Window).UTC().Truncate(time.Second).Format(time.RFC3339)},
			Rows:      d.cfg.Rows,
		},
		APIResource: "enriched_events",
		Version:     "v2",
	})
	if err != nil {
		return nil, fmt.Errorf("cbc start: encoding request: %w", err)
	}
	resp, err := d.call(ctx, "start", http.MethodPost, "/jobs/start/event_export", body)
	if err != nil {
		return nil, err
	}
	if resp.Status/100 != 2 {
		return nil, d.statusErr("start", resp)
	}
	id, err := decodeStart(resp.Body)
	if err != nil {
		return nil, malformedErr("start", err)
	}
	raw, err := json.Marshal(ref{ID: id})
	if err != nil {
		return nil, fmt.Errorf("cbc start: encoding reference: %w", err)
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

// Poll reads the job's progress. FINISHED (or COMPLETED, DONE, SUCCESS…) is
// Done; a failure message (FAILED, ERROR, CANCELLED…) is a permanent error
// naming it; QUEUED, IN_PROGRESS and any unknown message mean "keep polling"
// and are shown in Status.Progress (an unknown message is logged once).
func (d *Driver) Poll(ctx context.Context, r edr.Ref) (edr.Status, error) {
	id, err := d.ref("poll", r)
	if err != nil {
		return edr.Status{}, err
	}
	return d.progress(ctx, "poll", id)
}

// progress asks for job id's progress on behalf of op.
func (d *Driver) progress(ctx context.Context, op, id string) (edr.Status, error) {
	resp, err := d.call(ctx, op, http.MethodGet, "/jobs/"+id+"/progress", nil)
	if err != nil {
		return edr.Status{}, err
	}
	if resp.Status == http.StatusNotFound {
		return edr.Status{}, &edr.Error{Vendor: vendor, Op: op, Status: resp.Status,
			Msg: "export job " + id + " not found (expired, or started under another org key)"}
	}
	if resp.Status/100 != 2 {
		return edr.Status{}, d.statusErr(op, resp)
	}
	p, err := decodeProgress(resp.Body)
	if err != nil {
		return edr.Status{}, malformedErr(op, err)
	}
	line := p.Message
	if p.Total > 0 || p.Completed > 0 {
		line = fmt.Sprintf("%s %d/%d", p.Message, p.Completed, p.Total)
	}
	switch {
	case finishedMessages[p.Message]:
		return edr.Status{Done: true, Progress: line}, nil
	case failedMessages[p.Message]:
		return edr.Status{}, &edr.Error{Vendor: vendor, Op: op, Code: p.Message,
			Msg: "export job " + id + " ended without output (" + p.Message + ")"}
	case !knownMessages[p.Message]:
		d.warnUnknown(id, p.Message)
	}
	return edr.Status{Progress: line}, nil
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
	resp, err := d.call(ctx, "collect", http.MethodGet, path, nil)
	if err != nil {
		return edr.Result{}, err
	}
	var res edr.Result
	switch {
	case resp.Status == http.StatusNotFound:
		// The document: "If the job output is not yet available, this route
		// will return 404 Not Found." The same 404 would come back forever
		// for a job that no longer exists (expired at the vendor while no
		// worker held it), so ask for its progress once: a job that is gone
		// or failed is a permanent error, anything else means "not yet".
		if _, perr := d.progress(ctx, "collect", id); perr != nil && !edr.IsRetryable(perr) {
			return edr.Result{}, perr
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
		return edr.Result{}, d.statusErr("collect", resp)
	}
	if err != nil {
		return edr.Result{}, err
	}
	if res.Rows >= int64(d.cfg.Rows) {
		res.Notes = append(res.Notes, fmt.Sprintf("the export reached its row limit (%d): there may be more events", d.cfg.Rows))
	}
	return res, nil
}

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
	})
	switch {
	case err == nil:
		return res, nil
	case errors.Is(err, errMalformedExport):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: malformedPrefix + err.Error()}
	case errors.Is(err, errExportTooLarge), errors.Is(err, httpc.ErrTooLarge):
		return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Msg: "export too large (raise MaxExport and the download size limit)", Err: err}
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

// call sends one API request under /jobs/v1/orgs/{org_key}. The returned
// error is nil for every complete response, whatever its status.
func (d *Driver) call(ctx context.Context, op, method, path string, body []byte) (*httpc.Response, error) {
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
	resp, err := d.api.Do(req)
	if err != nil {
		return nil, transportErr(ctx, op, err)
	}
	return resp, nil
}

// transportErr classifies a request that got no complete response. The
// caller's own context ending is returned as such (not a vendor failure); a
// per-request timeout is a retryable vendor failure.
func transportErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cbc %s: %w", op, ctx.Err())
	}
	if errors.Is(err, httpc.ErrTooLarge) {
		return &edr.Error{Vendor: vendor, Op: op, Msg: "response too large", Err: err}
	}
	return &edr.Error{Vendor: vendor, Op: op, Retryable: httpc.IsRetryable(err), RetryAfter: httpc.RetryAfterOf(err),
		Msg: "no response (network error or timeout)", Err: err}
}

// statusErr maps an unexpected HTTP status to an *edr.Error.
func (d *Driver) statusErr(op string, resp *httpc.Response) error {
	se, _ := resp.Err().(*httpc.StatusError)
	if se == nil {
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: fmt.Sprintf("unexpected HTTP status %d", resp.Status)}
	}
	e := &edr.Error{Vendor: vendor, Op: op, Status: se.Status, Err: se, Retryable: se.Retryable(), RetryAfter: se.RetryAfter}
	switch {
	case se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden:
		e.Msg = credentialsMsg
	case se.Status == http.StatusTooManyRequests:
		e.Msg = "rate limited"
		// No Retry-After: wait as long as the fleet limiter assumes.
		e.RetryAfter = cmp.Or(e.RetryAfter, httpc.DefaultThrottle)
	case se.Status >= 500:
		e.Msg = "server error"
	case se.Status == http.StatusBadRequest:
		e.Msg = "request refused as invalid"
	}
	return e
}

func malformedErr(op string, err error) error {
	return &edr.Error{Vendor: vendor, Op: op, Msg: err.Error()}
}
