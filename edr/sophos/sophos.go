package sophos

import (
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
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

const vendor = "sophos"

// Defaults and fixed protocol values.
const (
	// DefaultPollEvery is the suggested pause between status requests: the
	// guide asks for "a few seconds between API calls".
	DefaultPollEvery = 3 * time.Second
	// DefaultWindow is how far back a run searches: Sophos's own SHA-256
	// hunt (API_Academy XDR/SearchSHA256.ps1) asks for 30 days, which is
	// what the data lake keeps.
	DefaultWindow = 30 * 24 * time.Hour
	// MaxWindow bounds Config.Window.
	MaxWindow = 90 * 24 * time.Hour
	// DefaultMaxRows bounds how many result rows Collect pages through.
	DefaultMaxRows = 100000
	// DefaultPageSize is the results pageSize Collect asks for.
	DefaultPageSize = 1000
	// MaxPageSize is the largest page Sophos serves (pages.maxSize 2000 in
	// the answers SEKOIA recorded).
	MaxPageSize = 2000
	// DefaultMaxPages bounds the result pages one run is paged through.
	DefaultMaxPages = 200
	// DefaultMaxResultBytes bounds the result bytes read for one run.
	DefaultMaxResultBytes = 256 << 20
	// DefaultMaxRowBytes bounds one result row (one JSON value).
	DefaultMaxRowBytes = 1 << 20
	// DefaultFindPages bounds the pages of runs Find lists.
	DefaultFindPages = 40
	// FindClockMargin is how much earlier than the intent's instant, on
	// Sophos's clock (learnt from the list answer's Date header), a run may
	// have been created and Find still look at it. It covers the Date
	// header's one-second resolution and the clock skew between the worker
	// that wrote the intent and the one looking: keep workers' clocks
	// within 15 s of each other (NTP does far better). Without a Date
	// header Find falls back to edr.FindSkew.
	FindClockMargin = 20 * time.Second
	// FindPageSize is the pageSize Find lists runs with (Sophos's
	// documented default).
	FindPageSize = 50
	// TokenPath is appended to Config.AuthURL.
	TokenPath = "/api/v2/oauth2/token"
	// RunsPath is appended to Config.URL.
	RunsPath = "/xdr-query/v1/queries/runs"
)

// Where the start request carries the run's name (Config.NameIn).
const (
	// NameTopLevel sends "name" beside "adHocQuery", where a run carries
	// it (Sophos's collection, every version).
	NameTopLevel = "run"
	// NameInQuery sends "adHocQuery.name", as Sophos's 2021 example
	// request did.
	NameInQuery = "adHocQuery"
)

// maxEmptyPages bounds consecutive pages with no rows but a next key.
const maxEmptyPages = 10

// Config configures a Driver. AuthURL, ClientID and ClientSecret are
// required; zero values of the rest mean their defaults.
type Config struct {
	// URL is the tenant's data-region API base (SOPHOS_URL), e.g.
	// https://api-eu01.central.sophos.com. Empty: whoami's
	// apiHosts.dataRegion (a tenant credential only).
	URL string
	// AuthURL is the identity service base (SOPHOS_AUTH_URL), e.g.
	// https://id.sophos.com; TokenPath is appended.
	AuthURL string
	// GlobalURL is Sophos Central's global API base, where whoami answers.
	// Default DefaultGlobalURL. Used only when URL or TenantID is empty.
	GlobalURL string
	// ClientID and ClientSecret are the service principal's credentials.
	ClientID, ClientSecret string
	// TenantID is sent as X-Tenant-ID. Empty: whoami's id (a tenant
	// credential only; a partner or organization credential must name
	// the tenant).
	TenantID string
	// PollEvery is the NextPoll Poll suggests. Default DefaultPollEvery.
	PollEvery time.Duration
	// Window is how far before the intent's instant a run searches.
	// Default DefaultWindow; at most MaxWindow.
	Window time.Duration
	// NameIn is where the start request puts the run's name: NameTopLevel
	// (default) or NameInQuery.
	NameIn string
	// MaxRows stops paging after this many rows (a note says so). Default
	// DefaultMaxRows.
	MaxRows int64
	// PageSize is the results pageSize, 1..MaxPageSize. Default
	// DefaultPageSize.
	PageSize int
	// MaxPages stops paging after this many pages of one run (a note says
	// so). Default DefaultMaxPages.
	MaxPages int
	// MaxResultBytes stops paging once this many result bytes of one run
	// were read (a note says so). Default DefaultMaxResultBytes.
	MaxResultBytes int64
	// MaxRowBytes is the largest result row (one JSON value) accepted; a
	// larger one fails the task. Default DefaultMaxRowBytes.
	MaxRowBytes int64
	// FindPages bounds the pages of runs Find lists before it gives up
	// telling. Default DefaultFindPages.
	FindPages int
	// UserAgent, Timeout and MaxBody are passed to internal/httpc. MaxBody
	// also caps one results page.
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
	// Redact is the process's set of secrets, which every text built from
	// an answer goes through; the driver adds its client secret (in every
	// wire form, HTTP Basic included) and every access token it fetches to
	// it. nil: a set of the driver's own.
	Redact *redact.Set
}

// String describes cfg without its secret.
func (c Config) String() string {
	return fmt.Sprintf("sophos.Config{URL:%s AuthURL:%s ClientID:%s ClientSecret:%s TenantID:%s}",
		httpc.Redact(c.URL), httpc.Redact(c.AuthURL), c.ClientID, redact.Mask, c.TenantID)
}

// GoString is String, so %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// Driver runs XDR Data Lake queries. It implements edr.Driver.
type Driver struct {
	cfg       Config
	tokenURL  string
	globalURL string
	api       *httpc.Client
	auth      *httpc.Client
	tokens    *vendorhttp.TokenSource
	now       func() time.Time
	// answers maps the data region's (and whoami's) answers to *edr.Error,
	// identity the identity service's; redact masks the secret and the
	// tokens in every text built from one.
	answers, identity *vendorhttp.API
	redact            *redact.Set

	pollEvery      time.Duration
	window         time.Duration
	nameIn         string
	maxRows        int64
	pageSize       int
	maxPages       int
	maxResultBytes int64
	maxRowBytes    int64
	maxPageBytes   int64
	findPages      int

	// ten is the data region and tenant, configured or learnt from whoami
	// (one whoami at a time: whoamiSem).
	whoMu     sync.Mutex
	ten       tenancy
	whoamiSem chan struct{}

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
	var base string
	if cfg.URL != "" {
		b, err := baseURL("URL", cfg.URL)
		if err != nil {
			return nil, err
		}
		base = b
	}
	authBase, err := baseURL("AuthURL", cfg.AuthURL)
	if err != nil {
		return nil, err
	}
	globalBase, err := baseURL("GlobalURL", cmp.Or(cfg.GlobalURL, DefaultGlobalURL))
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ name, v string }{
		{"ClientID", cfg.ClientID}, {"ClientSecret", cfg.ClientSecret},
	} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("sophos: Config.%s is required", f.name)
		}
	}
	if cfg.TenantID != "" && strings.TrimSpace(cfg.TenantID) == "" {
		return nil, errors.New("sophos: Config.TenantID must not be blank")
	}
	if strings.ContainsAny(cfg.TenantID, "\r\n") {
		return nil, errors.New("sophos: Config.TenantID must be a single line")
	}
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"PollEvery", cfg.PollEvery < 0},
		{"Window", cfg.Window < 0 || cfg.Window > MaxWindow},
		{"NameIn", cfg.NameIn != "" && cfg.NameIn != NameTopLevel && cfg.NameIn != NameInQuery},
		{"MaxRows", cfg.MaxRows < 0},
		{"PageSize", cfg.PageSize < 0 || cfg.PageSize > MaxPageSize},
		{"MaxPages", cfg.MaxPages < 0},
		{"MaxResultBytes", cfg.MaxResultBytes < 0},
		{"MaxRowBytes", cfg.MaxRowBytes < 0},
		{"FindPages", cfg.FindPages < 0},
	} {
		if f.bad {
			return nil, fmt.Errorf("sophos: Config.%s is out of range", f.name)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Driver{
		cfg:       cfg,
		tokenURL:  authBase + TokenPath,
		globalURL: globalBase,
		ten:       tenancy{base: base, tenant: cfg.TenantID},
		whoamiSem: make(chan struct{}, 1),
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
		now:            cfg.Now,
		pollEvery:      cmp.Or(cfg.PollEvery, DefaultPollEvery),
		window:         cmp.Or(cfg.Window, DefaultWindow),
		nameIn:         cmp.Or(cfg.NameIn, NameTopLevel),
		maxRows:        cmp.Or(cfg.MaxRows, DefaultMaxRows),
		pageSize:       cmp.Or(cfg.PageSize, DefaultPageSize),
		maxPages:       cmp.Or(cfg.MaxPages, DefaultMaxPages),
		maxResultBytes: cmp.Or(cfg.MaxResultBytes, DefaultMaxResultBytes),
		maxRowBytes:    cmp.Or(cfg.MaxRowBytes, DefaultMaxRowBytes),
		maxPageBytes:   cmp.Or(cfg.MaxBody, httpc.DefaultMaxBody),
		findPages:      cmp.Or(cfg.FindPages, DefaultFindPages),
		partials:       map[string]*partial{},
	}
	// The secret as the requests carry it: raw and form-encoded in the
	// body, and in HTTP Basic with each part form-encoded (and as a
	// server quoting it may show it: redact.Forms).
	d.redact = cmp.Or(cfg.Redact, redact.New())
	d.redact.Add(cfg.ClientSecret)
	for _, id := range []string{cfg.ClientID, url.QueryEscape(cfg.ClientID)} {
		for _, secret := range []string{cfg.ClientSecret, url.QueryEscape(cfg.ClientSecret)} {
			d.redact.AddBasic(id, secret)
		}
	}
	d.answers, d.identity = newAPIs(d.pollEvery, d.redact)
	d.tokens = vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: d.fetchToken, Now: cfg.Now, Redact: d.redact})
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

// Close does nothing: the driver runs nothing in the background.
func (d *Driver) Close() {}

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

func encodeRef(op string, run runState) (edr.Ref, error) {
	out, err := json.Marshal(ref{RunID: run.ID, ExpiresAt: truncate(run.ExpiresAt, 64)})
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: op, Msg: "cannot encode the operation reference", Err: err}
	}
	return out, nil
}

// stampLayout is how Sophos writes instants (its examples and answers).
const stampLayout = "2006-01-02T15:04:05.000Z"

// request is what Start sends for t under in: the same for the same
// inputs, so a Start repeated for an intent is the same request and Find
// can recognise its run.
type request struct {
	sql, name, from, to string
}

func (d *Driver) request(t edr.Target, in edr.Intent) (request, error) {
	sql, err := Query(t.SHA256)
	if err != nil {
		return request{}, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing to build the query", Err: err}
	}
	if in.At <= 0 || in.Key == "" {
		return request{}, &edr.Error{Vendor: vendor, Op: "start", Msg: "the start intent has no key or time"}
	}
	to := in.Time().UTC()
	return request{
		sql: sql, name: RunName(t, in),
		from: to.Add(-d.window).Format(stampLayout), to: to.Format(stampLayout),
	}, nil
}

func (r request) body(nameIn string) ([]byte, error) {
	query := map[string]string{"template": r.sql}
	body := map[string]any{"adHocQuery": query, "from": r.from, "to": r.to}
	if nameIn == NameInQuery {
		query["name"] = r.name
	} else {
		body["name"] = r.name
	}
	return json.Marshal(body)
}

// Start launches the query run for t.SHA256 under in. Nothing is sent when
// the hash is not 64 hex digits.
func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	req, err := d.request(t, in)
	if err != nil {
		return nil, err
	}
	body, err := req.body(d.nameIn)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "cannot encode the request", Err: err}
	}
	resp, err := d.call(ctx, "start", http.MethodPost, RunsPath, nil, body)
	if err != nil {
		return nil, err
	}
	if resp.Status >= 300 || resp.Status < 200 {
		return nil, d.startRefused(resp)
	}
	run, err := decodeRun(resp.Body)
	if err == nil && run.ID == "" {
		err = malformed("the new run has no id")
	}
	if err != nil {
		return nil, d.answers.Malformed(vendorhttp.Call{Op: "start"}, resp.Status, err)
	}
	d.touch(run.ID)
	return encodeRef("start", run)
}

// startRefused maps a refused start. Sophos refuses a window whose from is
// in its future (SEKOIA recorded it): the worker's clock is ahead, and the
// same request succeeds once Sophos's has caught up.
func (d *Driver) startRefused(resp *httpc.Response) error {
	e := d.answers.Error(vendorhttp.Call{Op: "start"}, resp)
	if resp.Status == http.StatusBadRequest &&
		strings.Contains(strings.ToLower(decodeAPIError(resp.Body).Message), "in the future") {
		e.Msg = "Sophos says the query window starts in its future (this worker's clock is ahead); retrying: " + e.Msg
		setRetry(e, max(e.RetryAfter, d.pollEvery, 5*time.Second))
	}
	return e
}

// Poll reports the run's status. Done is set once the run finished with
// result succeeded; a run that failed, timed out or was canceled is a
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
		return edr.Status{}, d.answers.Error(notFound("poll", rf), resp)
	case resp.Status >= 300 || resp.Status < 200:
		return edr.Status{}, d.answers.Error(vendorhttp.Call{Op: "poll"}, resp)
	}
	run, err := decodeRun(resp.Body)
	if err != nil {
		return edr.Status{}, d.answers.Malformed(vendorhttp.Call{Op: "poll"}, resp.Status, err)
	}
	st, err := d.interpret(run)
	return st, d.answers.Mask(err) // the run's status and result are Sophos's words
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

// interpret maps a run's status and result. Sophos's statuses are
// pending, started and finished; its results notAvailable, succeeded,
// failed, timedOut and canceled. A server may instead say how a run ended
// in its status (failed, error, aborted, timedOut, canceled) and leave the
// result notAvailable: those statuses end the run too. Other unknown
// statuses are treated as still in progress; an unknown result on a
// finished run is a failure.
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
		return edr.Status{}, fail(run.Result, "the query run was canceled at Sophos")
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
		return edr.Status{}, fail(run.Status, "the query run was canceled at Sophos")
	}
	return edr.Status{Progress: truncate(cmp.Or(run.Status, "pending"), 40), NextPoll: d.pollEvery}, nil
}

// ErrRunNotFound is wrapped by the error Cancel returns when Sophos does
// not know the run (404: unknown or expired).
var ErrRunNotFound = errors.New("the query run was not found at Sophos (unknown or expired)")

// Cancel cancels the run: POST {} to its cancel route, as Sophos's
// collection does; Sophos answers {"canceled":true}. A run that already
// ended (409, or canceled false) is nothing to cancel: nil. A run Sophos no
// longer knows (404) was not canceled either: Cancel returns a permanent
// error wrapping ErrRunNotFound, so the caller records that rather than a
// cancellation (retrying would not help).
func (d *Driver) Cancel(ctx context.Context, r edr.Ref) error {
	rf, err := parseRef("cancel", r)
	if err != nil {
		return err
	}
	d.dropPartial(rf.RunID)
	resp, err := d.call(ctx, "cancel", http.MethodPost, rf.path("/cancel"), nil, []byte("{}"))
	if err != nil {
		return err
	}
	switch {
	case resp.Status >= 200 && resp.Status < 300, resp.Status == http.StatusConflict:
		return nil
	case resp.Status == http.StatusNotFound:
		e := d.answers.Error(vendorhttp.Call{Op: "cancel", Msg: "nothing was canceled"}, resp)
		e.Err = ErrRunNotFound
		return e
	}
	return d.answers.Error(vendorhttp.Call{Op: "cancel"}, resp)
}
