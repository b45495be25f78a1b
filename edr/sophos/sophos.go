// Package sophos is the edr.Driver for the Sophos Central XDR Data Lake
// query API (task kind sophos.xdr_query): it runs
//
//	SELECT meta_hostname, meta_ip_address, path, sha256, name, cmdline, time, endpoint_id
//	FROM xdr_data WHERE sha256 = '<sha256>'
//
// as an ad-hoc query run, follows the run until it has finished, pages
// through all of its results and summarises them (rows, distinct hosts).
//
// Protocol (specs/004 and the real API where the guide is loose):
//
//	POST <AuthURL>/api/v2/oauth2/token            client credentials → bearer JWT (cached, refreshed);
//	                                              in the form body, once more with HTTP Basic after a 401
//	POST <URL>/xdr-query/v1/queries/runs          {"adHocQuery":{"name","template":<sql>}} → run
//	GET  <URL>/xdr-query/v1/queries/runs/{id}     run: status pending|running|finished, result …
//	GET  <URL>/xdr-query/v1/queries/runs/{id}/results?maxSize=1000[&pageFromKey=<nextKey>]
//	POST <URL>/xdr-query/v1/queries/runs/{id}/cancel
//
// Every data-region call carries "Authorization: Bearer <jwt>",
// "X-Tenant-ID: <tenant>" and "Content-Type: application/json". The guide's
// curl posts the SQL file itself; the real API takes the JSON body above,
// which is what the driver sends.
//
// The operation reference is {"runId","expiresAt"}: any worker can resume
// polling or collecting with it. The driver never retries (the runner
// does), except one transparent re-authentication when the API rejects a
// cached token with 401. Collect remembers, in this process, how far it got
// through the pages of a run, so a Collect retried after a 429 mid-way
// resumes where it stopped instead of starting over.
//
// A Driver is safe for concurrent use.
package sophos

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

const vendor = "sophos"

// Defaults and fixed protocol values.
const (
	// DefaultPollEvery is the suggested pause between status requests: the
	// guide asks for "a few seconds between API calls".
	DefaultPollEvery = 3 * time.Second
	// DefaultMaxRows bounds how many result rows Collect pages through.
	DefaultMaxRows = 100000
	// PageSize is the maxSize Collect asks for; the API allows at most 1000.
	PageSize = 1000
	// QueryName names the ad-hoc query in Sophos Central.
	QueryName = "analysisfleet sample hunt"
	// TokenPath is appended to Config.AuthURL.
	TokenPath = "/api/v2/oauth2/token"
	// RunsPath is appended to Config.URL.
	RunsPath = "/xdr-query/v1/queries/runs"
)

// maxEmptyPages bounds consecutive pages with no rows but a next key.
const maxEmptyPages = 10

// Config configures a Driver. URL, AuthURL, ClientID, ClientSecret and
// TenantID are required; zero values of the rest mean their defaults.
type Config struct {
	// URL is the tenant's data-region API base (SOPHOS_URL), e.g.
	// https://api-eu01.central.sophos.com.
	URL string
	// AuthURL is the identity service base (SOPHOS_AUTH_URL), e.g.
	// https://id.sophos.com; TokenPath is appended.
	AuthURL string
	// ClientID and ClientSecret are the service principal's credentials.
	ClientID, ClientSecret string
	// TenantID is sent as X-Tenant-ID.
	TenantID string
	// PollEvery is the NextPoll Poll suggests. Default DefaultPollEvery.
	PollEvery time.Duration
	// MaxRows stops paging after this many rows (a note says so). Default
	// DefaultMaxRows.
	MaxRows int64
	// UserAgent, Timeout and MaxBody are passed to internal/httpc.
	UserAgent string
	Timeout   time.Duration
	MaxBody   int64
	// Limiter paces data-region calls fleet-wide (the fleet shares one
	// Sophos credential) and hears of every 429. nil = no pacing.
	Limiter httpc.Limiter
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock token lifetimes are judged by. Default time.Now.
	Now func() time.Time
}

// String describes cfg without its secret.
func (c Config) String() string {
	return fmt.Sprintf("sophos.Config{URL:%s AuthURL:%s ClientID:%s ClientSecret:[REDACTED] TenantID:%s}",
		httpc.Redact(c.URL), httpc.Redact(c.AuthURL), c.ClientID, c.TenantID)
}

// GoString is String, so %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// Driver runs XDR Data Lake queries. It implements edr.Driver.
type Driver struct {
	cfg       Config
	base      string
	tokenURL  string
	api       *httpc.Client
	auth      *httpc.Client
	tokens    *tokenSource
	pollEvery time.Duration
	maxRows   int64
	now       func() time.Time

	partialMu sync.Mutex
	partials  map[string]*partial

	// touched is when this process last asked Sophos about each run: Poll
	// does not ask again before PollEvery has passed. The API answers 429
	// to a run polled too fast, and the fleet honours a 429 by pausing every
	// Sophos call, so an early poll would slow every job down.
	touchMu sync.Mutex
	touched map[string]time.Time
}

var _ edr.Driver = (*Driver)(nil)

// New validates cfg and returns a Driver. It makes no network call.
func New(cfg Config) (*Driver, error) {
	base, err := baseURL("URL", cfg.URL)
	if err != nil {
		return nil, err
	}
	authBase, err := baseURL("AuthURL", cfg.AuthURL)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{
		{"ClientID", cfg.ClientID}, {"ClientSecret", cfg.ClientSecret}, {"TenantID", cfg.TenantID},
	} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("sophos: Config.%s is required", f.name)
		}
	}
	if strings.ContainsAny(cfg.TenantID, "\r\n") {
		return nil, errors.New("sophos: Config.TenantID must be a single line")
	}
	if cfg.PollEvery < 0 {
		return nil, errors.New("sophos: Config.PollEvery must not be negative")
	}
	if cfg.MaxRows < 0 {
		return nil, errors.New("sophos: Config.MaxRows must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Driver{
		cfg:      cfg,
		base:     base,
		tokenURL: authBase + TokenPath,
		api: httpc.New(httpc.Config{
			Service: "sophos", UserAgent: cfg.UserAgent, Timeout: cfg.Timeout, MaxBody: cfg.MaxBody,
			Limiter: cfg.Limiter, Transport: cfg.Transport,
		}),
		// The identity service is another host with its own limits: it is
		// not paced by the data-region limiter.
		auth: httpc.New(httpc.Config{
			Service: "sophos-identity", UserAgent: cfg.UserAgent, Timeout: cfg.Timeout,
			MaxBody: 64 << 10, Transport: cfg.Transport,
		}),
		pollEvery: cmp.Or(cfg.PollEvery, DefaultPollEvery),
		maxRows:   cmp.Or(cfg.MaxRows, DefaultMaxRows),
		now:       cfg.Now,
		partials:  map[string]*partial{},
	}
	d.tokens = newTokenSource(d)
	return d, nil
}

func baseURL(field, raw string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("sophos: Config.%s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("sophos: Config.%s must be an http(s) URL with a host", field)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("sophos: Config.%s must not carry user info, a query or a fragment", field)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// Kind returns edr.KindSophosXDR.
func (d *Driver) Kind() string { return edr.KindSophosXDR }

// Query returns the SQL the driver runs for sha256, after validating the
// hash with edr.ValidSHA256 (it is interpolated, never escaped).
func Query(sha256 string) (string, error) {
	sha, err := edr.ValidSHA256(sha256)
	if err != nil {
		return "", err
	}
	return "SELECT meta_hostname, meta_ip_address, path, sha256, name, cmdline, time, endpoint_id " +
		"FROM xdr_data WHERE sha256 = '" + sha + "'", nil
}

// ref is the operation reference checkpointed by the runner.
type ref struct {
	RunID string `json:"runId"`
	// ExpiresAt is the run's expiresAt as Sophos sent it (informational:
	// it explains a 404 after the run expired).
	ExpiresAt string `json:"expiresAt,omitempty"`
}

func parseRef(op string, r edr.Ref) (ref, error) {
	var out ref
	if err := json.Unmarshal(r, &out); err != nil || out.RunID == "" || !validID(out.RunID) {
		return ref{}, &edr.Error{Vendor: vendor, Op: op, Msg: "invalid operation reference (no usable runId)"}
	}
	return out, nil
}

func (r ref) path(suffix string) string { return RunsPath + "/" + url.PathEscape(r.RunID) + suffix }

// Start launches the query run for t.SHA256. Nothing is sent when the hash
// is not 64 hex digits.
// Find is not implemented yet: the operation is started again.
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrFindUnsupported
}

func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sql, err := Query(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing to build the query", Err: err}
	}
	body, err := json.Marshal(map[string]any{"adHocQuery": map[string]string{"name": QueryName, "template": sql}})
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "cannot encode the request", Err: err}
	}
	resp, err := d.call(ctx, "start", http.MethodPost, RunsPath, nil, body)
	if err != nil {
		return nil, err
	}
	if resp.Status >= 300 || resp.Status < 200 {
		return nil, d.statusError("start", resp, "")
	}
	run, err := decodeRun(resp.Body)
	if err == nil && run.ID == "" {
		err = malformed("the new run has no id")
	}
	if err != nil {
		return nil, d.malformedError("start", resp, err)
	}
	d.touch(run.ID)
	out, err := json.Marshal(ref{RunID: run.ID, ExpiresAt: run.ExpiresAt})
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "cannot encode the operation reference", Err: err}
	}
	return out, nil
}

// Poll reports the run's status. Done is set once the run finished with
// result succeeded; a run that failed, timed out or was cancelled is a
// permanent error. NextPoll is Config.PollEvery.
func (d *Driver) Poll(ctx context.Context, r edr.Ref) (edr.Status, error) {
	rf, err := parseRef("poll", r)
	if err != nil {
		return edr.Status{}, err
	}
	if wait := d.tooSoon(rf.RunID); wait > 0 {
		return edr.Status{NextPoll: wait}, nil
	}
	d.touch(rf.RunID)
	resp, err := d.call(ctx, "poll", http.MethodGet, rf.path(""), nil, nil)
	if err != nil {
		return edr.Status{}, err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return edr.Status{}, d.notFound("poll", resp, rf)
	case resp.Status >= 300 || resp.Status < 200:
		return edr.Status{}, d.statusError("poll", resp, "")
	}
	run, err := decodeRun(resp.Body)
	if err != nil {
		return edr.Status{}, d.malformedError("poll", resp, err)
	}
	return d.interpret(run)
}

// touchedCap bounds the pacing memory; the oldest entries go first.
const touchedCap = 20000

func (d *Driver) touch(runID string) {
	d.touchMu.Lock()
	defer d.touchMu.Unlock()
	if d.touched == nil {
		d.touched = map[string]time.Time{}
	}
	if len(d.touched) >= touchedCap {
		cutoff := d.now().Add(-2 * d.pollEvery)
		for id, at := range d.touched {
			if at.Before(cutoff) {
				delete(d.touched, id)
			}
		}
	}
	if len(d.touched) < touchedCap {
		d.touched[runID] = d.now()
	}
}

// tooSoon returns how long to wait before the run may be asked about again.
func (d *Driver) tooSoon(runID string) time.Duration {
	d.touchMu.Lock()
	defer d.touchMu.Unlock()
	at, ok := d.touched[runID]
	if !ok {
		return 0
	}
	return d.pollEvery - d.now().Sub(at)
}

// interpret maps a run's status and result. The guide shows pending and
// finished/succeeded; failed, timedOut and cancelled are the real API's
// other results and end the run. A server may instead say so in the status
// (failed, error, aborted, timedOut, cancelled) and leave the result
// notAvailable: those statuses end the run too. Other unknown statuses are
// treated as still in progress; an unknown result on a finished run is a
// failure.
func (d *Driver) interpret(run runState) (edr.Status, error) {
	status, result := strings.ToLower(run.Status), strings.ToLower(run.Result)
	fail := func(code, msg string) error {
		return &edr.Error{Vendor: vendor, Op: "poll", Code: truncate(code, 40), Msg: msg}
	}
	switch result {
	case "succeeded":
		return edr.Status{Done: true, Progress: "finished: succeeded"}, nil
	case "failed":
		return edr.Status{}, fail(run.Result, "the query run failed at Sophos (result failed)")
	case "timedout":
		return edr.Status{}, fail(run.Result, "the query run timed out at Sophos (result timedOut)")
	case "cancelled", "canceled":
		return edr.Status{}, fail(run.Result, "the query run was cancelled at Sophos")
	}
	switch status {
	case "finished":
		return edr.Status{}, fail(run.Result, fmt.Sprintf("the query run finished without results (result %q)", truncate(run.Result, 40)))
	case "failed", "error", "aborted":
		return edr.Status{}, fail(run.Status, fmt.Sprintf("the query run failed at Sophos (status %q, result %q)",
			truncate(run.Status, 40), truncate(run.Result, 40)))
	case "timedout":
		return edr.Status{}, fail(run.Status, fmt.Sprintf("the query run timed out at Sophos (status %q, result %q)",
			truncate(run.Status, 40), truncate(run.Result, 40)))
	case "cancelled", "canceled":
		return edr.Status{}, fail(run.Status, "the query run was cancelled at Sophos")
	}
	return edr.Status{Progress: truncate(cmp.Or(run.Status, "pending"), 40), NextPoll: d.pollEvery}, nil
}

// ErrRunNotFound is wrapped by the error Cancel returns when Sophos does
// not know the run (404: unknown or expired).
var ErrRunNotFound = errors.New("the query run was not found at Sophos (unknown or expired)")

// Cancel cancels the run. A run that already ended (409) is nothing to
// cancel: nil. A run Sophos no longer knows (404) was not cancelled either:
// Cancel returns a permanent error wrapping ErrRunNotFound, so the caller
// records that rather than a cancellation (retrying would not help).
func (d *Driver) Cancel(ctx context.Context, r edr.Ref) error {
	rf, err := parseRef("cancel", r)
	if err != nil {
		return err
	}
	d.dropPartial(rf.RunID)
	resp, err := d.call(ctx, "cancel", http.MethodPost, rf.path("/cancel"), nil, nil)
	if err != nil {
		return err
	}
	switch {
	case resp.Status >= 200 && resp.Status < 300, resp.Status == http.StatusConflict:
		return nil
	case resp.Status == http.StatusNotFound:
		return &edr.Error{Vendor: vendor, Op: "cancel", Status: resp.Status, Msg: "nothing was cancelled", Err: ErrRunNotFound}
	}
	return d.statusError("cancel", resp, "")
}

// call sends one data-region request with the bearer token and tenant
// header. On 401 with a cached token it fetches a new token and sends the
// request once more; a 401 with a token fetched for this call is a
// credential failure. Other statuses are returned for the caller to map.
func (d *Driver) call(ctx context.Context, op, method, path string, query url.Values, body []byte) (*httpc.Response, error) {
	tok, fresh, err := d.tokens.get(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := d.send(ctx, method, path, query, body, tok)
	if err != nil {
		return nil, d.transportError(op, err)
	}
	if resp.Status != http.StatusUnauthorized {
		return resp, nil
	}
	if !fresh {
		d.tokens.invalidate(tok)
		if tok, _, err = d.tokens.get(ctx); err != nil {
			return nil, err
		}
		if resp, err = d.send(ctx, method, path, query, body, tok); err != nil {
			return nil, d.transportError(op, err)
		}
		if resp.Status != http.StatusUnauthorized {
			return resp, nil
		}
	}
	return nil, d.statusError(op, resp, msgBadCredentials)
}

func (d *Driver) send(ctx context.Context, method, path string, query url.Values, body []byte, tok string) (*httpc.Response, error) {
	u := d.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Tenant-ID", d.cfg.TenantID)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return d.api.Do(req)
}

// Messages operators see for configuration failures.
const msgForbidden = "Sophos refused access to the tenant (check SOPHOS_TENANT_ID and that the credential may use the XDR Data Lake)"

// statusError maps a non-2xx response to an *edr.Error: 429 retryable with
// its Retry-After (Config.PollEvery when absent), 5xx retryable, the rest
// permanent. msg overrides the default explanation.
func (d *Driver) statusError(op string, resp *httpc.Response, msg string) error {
	e := &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: msg}
	var se *httpc.StatusError
	if errors.As(resp.Err(), &se) {
		cp := *se
		cp.Body = d.redact(cp.Body)
		e.Err = &cp
		e.RetryAfter = cp.RetryAfter
		e.Retryable = cp.Retryable()
	}
	def := ""
	switch s := resp.Status; {
	case s == http.StatusTooManyRequests:
		def = "rate limited by Sophos"
		setRetry(e, cmp.Or(e.RetryAfter, d.pollEvery))
	case s >= 500:
		def = "Sophos is unavailable"
	case s == http.StatusUnauthorized:
		def = msgBadCredentials
	case s == http.StatusForbidden:
		def = msgForbidden
	case s == http.StatusBadRequest:
		def = "Sophos refused the request"
	case s >= 300 && s < 400:
		def = "unexpected redirect from Sophos (not followed)"
	default:
		def = "unexpected response from Sophos"
	}
	e.Msg = cmp.Or(e.Msg, def)
	return e
}

// setRetry makes e retryable after delay. The wrapped StatusError carries
// the same delay: edr.RetryAfter reads it first.
func setRetry(e *edr.Error, delay time.Duration) {
	e.Retryable, e.RetryAfter = true, delay
	if se, ok := e.Err.(*httpc.StatusError); ok {
		se.RetryAfter = delay
	}
}

// notFound explains a 404 on a run: it is unknown or has expired.
func (d *Driver) notFound(op string, resp *httpc.Response, rf ref) error {
	msg := "the query run is unknown to Sophos"
	if rf.ExpiresAt != "" {
		msg += " (it expires at " + truncate(rf.ExpiresAt, 40) + ")"
	}
	return d.statusError(op, resp, msg)
}

func (d *Driver) malformedError(op string, resp *httpc.Response, err error) error {
	return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: "malformed response from Sophos", Err: err}
}

// transportError wraps a failure to get a response; the caller's context
// ending is returned as is.
func (d *Driver) transportError(op string, err error) error {
	if errors.Is(err, httpc.ErrTooLarge) {
		return &edr.Error{Vendor: vendor, Op: op, Msg: "response from Sophos too large", Err: err}
	}
	return edr.Wrap(vendor, op, err)
}

// redact removes the client secret and bearer tokens from s, including a
// secret cut short at the end of s (error bodies are truncated snippets).
func (d *Driver) redact(s string) string {
	const minCut = 8
	for _, secret := range append(d.tokens.secrets(), d.cfg.ClientSecret) {
		if secret == "" {
			continue
		}
		s = strings.ReplaceAll(s, secret, "[REDACTED]")
		for k := min(len(secret)-1, len(s)); k >= minCut; k-- {
			if strings.HasSuffix(s, secret[:k]) {
				s = s[:len(s)-k] + "[REDACTED]"
				break
			}
		}
	}
	return s
}
