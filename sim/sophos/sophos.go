// Package sophos simulates the Sophos Central XDR Data Lake query API and the
// Sophos identity endpoint that issues its bearer tokens. It speaks what
// the real API sends and accepts as Sophos's Postman collection
// (sophos/sophos-central-apis-postman @ ae514f49, 04345162, 37b3470b) and
// the answers SEKOIA's connector recorded (SEKOIA-IO/automation-library,
// Sophos/tests @ dca30aa6) show it; the getting-started guide (specs/004)
// fills the rest.
//
// One handler serves both hosts' paths:
//
//	POST /api/v2/oauth2/token                          client-credentials grant (form)
//	GET  /whoami/v1                                    the credential's tenant and data region (this server)
//	POST /xdr-query/v1/queries/runs                    start a run {"adHocQuery":{"template"},"name","from","to"}
//	GET  /xdr-query/v1/queries/runs                    list runs (?statuses=&page=&pageSize=&pageTotal=&order=)
//	GET  /xdr-query/v1/queries/runs/{id}               run status
//	GET  /xdr-query/v1/queries/runs/{id}/results       one page of rows (?pageSize=&pageFromKey=; the guide's maxSize too)
//	POST /xdr-query/v1/queries/runs/{id}/cancel        cancel a run ({} → {"canceled":true})
//	     /_sim/faults                                  fault switches (simhttp.Kit)
//
// A run is pending for Config.PendingFor after it is created, started for
// Config.RunFor, and then finished with result "succeeded" (or the outcome
// set with SetResult); a canceled run is finished with result "canceled".
// State is computed from the clock on every request; no goroutine runs per
// operation. Runs disappear (404) after expiresAt.
//
// What the real API is documented or recorded to do, the simulator does:
//
//   - a run is {"id","createdAt","createdBy","expiresAt","finishedAt",
//     "result","status","name","template","from","to"}; name and finishedAt
//     are left out when the run has none (as in SEKOIA's recording);
//   - a window whose from is in the future is refused with 400
//     ValidationException and an integer code (SEKOIA's recording); a
//     missing to is filled with the creation time (same recording);
//   - results pages say {"fromKey","nextKey","size","maxSize":2000}, size
//     being the page size asked for (SEKOIA's recording), total and items
//     too with pageTotal=true;
//   - the run list pages by page number, newest first unless order=asc,
//     filtered by statuses; its items are whole runs (the 2025 collection),
//     or only id/createdAt/result/status with Config.ListSummaries (the 2026
//     collection);
//   - errors are {"error","message","correlationId","requestId",
//     "createdAt","code"}.
//
// Where the sources are silent the simulator decides, and says so here: a
// run without from searches the 24 hours before its to; pageSize defaults
// to 50 (the collection's example value) and may be 1..2000 (maxSize alone
// is taken as the page size, as the guide uses it); the list's pageSize is
// 1..100; a missing X-Tenant-ID is a malformed request (400) and a tenant
// the token does not grant an authorisation failure (403); results of a
// run that has not finished answer 409, of one that finished without
// success 400; canceling a finished run answers 200 {"canceled":false}; an
// empty cancel body is accepted like {}.
//
// A Server is safe for concurrent use.
package sophos

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Paths the simulator serves.
const (
	TokenPath  = "/api/v2/oauth2/token"
	RunsPath   = "/xdr-query/v1/queries/runs"
	WhoamiPath = "/whoami/v1"
)

// Defaults for Config fields left zero.
const (
	DefaultClientID     = "sim-sophos-client"
	DefaultClientSecret = "sim-sophos-secret"
	DefaultTenantID     = "11111111-2222-3333-4444-555555555555"
	DefaultTokenTTL     = time.Hour
	DefaultRunTTL       = 2 * time.Hour // the guide's expiresAt is createdAt + 2h
	// MaxPageSize is the largest results page (pages.maxSize in the answers
	// SEKOIA recorded).
	MaxPageSize = 2000
	// DefaultPageSize is the results and list page size when none is asked
	// for (the collection's example value).
	DefaultPageSize = 50
	// MaxListPageSize is the largest page of the run list.
	MaxListPageSize = 100
	// DefaultWindow is what a run without from searches.
	DefaultWindow = 24 * time.Hour
)

// Run statuses and results, as Sophos spells them.
const (
	StatusPending  = "pending"
	StatusStarted  = "started"
	StatusFinished = "finished"

	ResultNotAvailable = "notAvailable"
	ResultSucceeded    = "succeeded"
	ResultFailed       = "failed"
	ResultTimedOut     = "timedOut"
	ResultCanceled     = "canceled"
)

// Config configures a Server. Zero durations mean "immediately" (a run with
// PendingFor = RunFor = 0 is finished as soon as it is created); other zero
// fields take the defaults above.
type Config struct {
	// ClientID, ClientSecret: the service principal the token endpoint
	// accepts. TenantID: the X-Tenant-ID every API call must carry.
	ClientID, ClientSecret, TenantID string
	// TokenTTL is the lifetime of an access token (expires_in). Default 1h.
	TokenTTL time.Duration
	// PendingFor and RunFor: a run is pending, then running, then finished,
	// measured from its creation.
	PendingFor, RunFor time.Duration
	// MinPollInterval: a status request for one run less than this after the
	// previous accepted call on that run (its creation or a status request)
	// is answered 429 with Retry-After. 0 = off.
	MinPollInterval time.Duration
	// RateLimit is a global limit on data-region API calls per second
	// (token bucket, burst max(1, RateLimit)); over it → 429 with
	// Retry-After. 0 = off.
	RateLimit float64
	// RunTTL is how long a run and its results live (expiresAt). Default 2h.
	RunTTL time.Duration
	// IDType is what whoami says the credential is: "tenant" (default),
	// "partner" or "organization".
	IDType string
	// ListSummaries makes the run list carry only id, createdAt, result and
	// status for each run, as Sophos's 2026 example does.
	ListSummaries bool
	// Now is the clock run states, tokens and limits are computed from.
	// Default time.Now.
	Now func() time.Time
}

// Run is what the simulator knows of one query run.
type Run struct {
	ID        string
	Query     string // the SQL as received
	SHA256    string // the hash parsed from the query; empty when none
	Name      string // the run's name; empty when the request gave none
	From, To  time.Time
	CreatedAt time.Time
	Status    string
	Result    string
	Cancelled bool
	Rows      int // rows the run returns
}

type hit struct {
	rows  int
	hosts []string
}

type run struct {
	id        string
	query     string
	sha       string
	name      string
	from, to  time.Time
	created   time.Time
	runFor    time.Duration // started for this long (Config.RunFor unless SetRunFor)
	hosts     []string
	rows      int
	outcome   string    // result once finished on its own
	cancelAt  time.Time // zero unless cancelled while live
	lastCall  time.Time // last accepted call on this run (MinPollInterval)
	cancelled bool
}

// Server is the simulator. It is an http.Handler.
type Server struct {
	cfg    Config
	kit    *simhttp.Kit
	h      http.Handler
	tokens simhttp.Tokens

	mu       sync.Mutex
	runs     map[string]*run
	order    []string
	hits     map[string]hit
	outcomes map[string]string
	runFor   simhttp.Durations // SetRunFor
	cancels  int
	bucket   float64
	bucketAt time.Time
}

// New returns a simulator for cfg.
func New(cfg Config) *Server {
	cfg.ClientID = cmp.Or(cfg.ClientID, DefaultClientID)
	cfg.ClientSecret = cmp.Or(cfg.ClientSecret, DefaultClientSecret)
	cfg.TenantID = cmp.Or(cfg.TenantID, DefaultTenantID)
	cfg.TokenTTL = cmp.Or(cfg.TokenTTL, DefaultTokenTTL)
	cfg.RunTTL = cmp.Or(cfg.RunTTL, DefaultRunTTL)
	cfg.IDType = cmp.Or(cfg.IDType, "tenant")
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		kit:      simhttp.New(),
		runs:     map[string]*run{},
		hits:     map[string]hit{},
		outcomes: map[string]string{},
		runFor:   simhttp.Durations{},
		bucket:   max(1, cfg.RateLimit),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	mux.HandleFunc("GET "+WhoamiPath, s.whoami)
	mux.HandleFunc("POST "+RunsPath, s.api(s.start))
	mux.HandleFunc("GET "+RunsPath, s.api(s.list))
	mux.HandleFunc("GET "+RunsPath+"/{id}", s.api(s.status))
	mux.HandleFunc("GET "+RunsPath+"/{id}/results", s.api(s.results))
	mux.HandleFunc("POST "+RunsPath+"/{id}/cancel", s.api(s.cancel))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, http.StatusNotFound, "NotFound", "no such endpoint")
	})
	s.h = s.kit.Wrap(mux)
	return s
}

// ServeHTTP serves the identity endpoint, the data-region API and the
// /_sim/faults control endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// Kit returns the fault switches and request log.
func (s *Server) Kit() *simhttp.Kit { return s.kit }

// Close releases hung requests. Call it before closing the HTTP server.
func (s *Server) Close() { s.kit.Close() }

// SetHits makes runs created from now on whose query asks for sha256 return
// rows rows, spread round-robin over hosts (default one host,
// "sophos-sim-host-1"). rows <= 0 removes the hits.
func (s *Server) SetHits(sha256 string, rows int, hosts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sha := strings.ToLower(sha256)
	if rows <= 0 {
		delete(s.hits, sha)
		return
	}
	if len(hosts) == 0 {
		hosts = []string{"sophos-sim-host-1"}
	}
	s.hits[sha] = hit{rows: rows, hosts: append([]string(nil), hosts...)}
}

// SetResult makes runs created from now on for sha256 finish with result
// (ResultFailed, ResultTimedOut, ...) instead of ResultSucceeded. An empty
// result restores success.
func (s *Server) SetResult(sha256, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if result == "" {
		delete(s.outcomes, strings.ToLower(sha256))
		return
	}
	s.outcomes[strings.ToLower(sha256)] = result
}

// SetRunFor makes runs created from now on for sha256 stay started for d
// instead of Config.RunFor (worker dev --hold: jobs that last). d <= 0
// restores Config.RunFor.
func (s *Server) SetRunFor(sha256 string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runFor.Set(sha256, d)
}

// Runs returns every run created so far, oldest first, with its state now.
func (s *Server) Runs() []Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	out := make([]Run, 0, len(s.order))
	for _, id := range s.order {
		r := s.runs[id]
		st, res, _ := s.state(r, now)
		out = append(out, Run{
			ID: r.id, Query: r.query, SHA256: r.sha, Name: r.name, From: r.from, To: r.to, CreatedAt: r.created,
			Status: st, Result: res, Cancelled: r.cancelled, Rows: r.rows,
		})
	}
	return out
}

// Cancels returns how many live runs a cancel request stopped.
func (s *Server) Cancels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels
}

// Tokens returns the access tokens issued and not revoked (tests check they
// never reach a log).
func (s *Server) Tokens() []string { return s.tokens.List() }

// TokensIssued returns how many access tokens the identity endpoint issued.
func (s *Server) TokensIssued() int { return s.tokens.Issued() }

// RevokeTokens invalidates every access token issued so far: the next API
// call with one of them is answered 401.
func (s *Server) RevokeTokens() { s.tokens.Revoke() }

// state computes a run's status, result and finish time at now.
func (s *Server) state(r *run, now time.Time) (status, result string, finished time.Time) {
	if !r.cancelAt.IsZero() {
		return StatusFinished, ResultCanceled, r.cancelAt
	}
	el := now.Sub(r.created)
	switch {
	case el < s.cfg.PendingFor:
		return StatusPending, ResultNotAvailable, time.Time{}
	case el < s.cfg.PendingFor+r.runFor:
		return StatusStarted, ResultNotAvailable, time.Time{}
	}
	return StatusFinished, r.outcome, r.created.Add(s.cfg.PendingFor + r.runFor)
}

func (s *Server) expiresAt(r *run) time.Time { return r.created.Add(s.cfg.RunTTL) }

// --- identity endpoint ---

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		s.oauthFail(w, http.StatusBadRequest, "invalid_request", "the request body is not a form")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		s.oauthFail(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	if sc := r.PostForm.Get("scope"); sc != "" && sc != "token" {
		s.oauthFail(w, http.StatusBadRequest, "invalid_scope", "scope must be token")
		return
	}
	id, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if bid, bsecret, ok := r.BasicAuth(); ok && id == "" {
		// Also accept client_secret_basic: RFC 6749 §2.3.1 form-encodes
		// each part before it is joined and base64-encoded.
		id, secret = formUnescape(bid), formUnescape(bsecret)
	}
	if id != s.cfg.ClientID || secret != s.cfg.ClientSecret {
		s.oauthFail(w, http.StatusUnauthorized, "oauth.invalid_client", "invalid client credentials")
		return
	}
	tok := newJWT(id)
	s.tokens.Issue(tok, s.cfg.Now().Add(s.cfg.TokenTTL))
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token":  tok,
		"errorCode":     "success",
		"expires_in":    int64(math.Ceil(s.cfg.TokenTTL.Seconds())),
		"message":       "OK",
		"refresh_token": hex.EncodeToString(randomBytes(16)),
		"token_type":    "bearer",
		"trackingId":    uuid.NewString(),
	})
}

// formUnescape decodes one form-encoded part of HTTP Basic client
// credentials; a part that does not decode is taken as it is.
func formUnescape(v string) string {
	if u, err := url.QueryUnescape(v); err == nil {
		return u
	}
	return v
}

func (s *Server) oauthFail(w http.ResponseWriter, status int, code, msg string) {
	simhttp.WriteJSON(w, status, map[string]any{"errorCode": code, "message": msg, "trackingId": uuid.NewString()})
}

func newJWT(sub string) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]string{"sub": sub, "jti": uuid.NewString()})
	return head + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(randomBytes(32))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// whoami answers as Sophos's example does, naming this server as both
// the global host and the data region.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	if !s.bearer(r) {
		s.fail(w, http.StatusUnauthorized, "Unauthorized", "missing, invalid or expired bearer token")
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := scheme + "://" + r.Host
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"id": s.cfg.TenantID, "idType": s.cfg.IDType,
		"apiHosts": map[string]string{"global": base, "dataRegion": base},
	})
}

// bearer says whether r carries a live access token.
func (s *Server) bearer(r *http.Request) bool {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	return s.tokens.Valid(tok, s.cfg.Now()) && strings.EqualFold(scheme, "Bearer")
}

// --- data-region API ---

// api wraps a data-region handler with the global rate limit and the
// bearer and tenant checks.
func (s *Server) api(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if wait, ok := s.allow(); !ok {
			s.tooMany(w, wait, "API rate limit exceeded")
			return
		}
		if !s.bearer(r) {
			s.fail(w, http.StatusUnauthorized, "Unauthorized", "missing, invalid or expired bearer token")
			return
		}
		switch tenant := r.Header.Get("X-Tenant-ID"); {
		case tenant == "":
			s.fail(w, http.StatusBadRequest, "BadRequest", "the X-Tenant-ID header is required")
			return
		case tenant != s.cfg.TenantID:
			s.fail(w, http.StatusForbidden, "Forbidden", "the token does not grant access to this tenant")
			return
		}
		h(w, r)
	}
}

// allow takes one token from the global bucket.
func (s *Server) allow() (time.Duration, bool) {
	if s.cfg.RateLimit <= 0 {
		return 0, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	burst := max(1, s.cfg.RateLimit)
	if !s.bucketAt.IsZero() {
		s.bucket = min(burst, s.bucket+now.Sub(s.bucketAt).Seconds()*s.cfg.RateLimit)
	}
	s.bucketAt = now
	if s.bucket >= 1 {
		s.bucket--
		return 0, true
	}
	return time.Duration((1 - s.bucket) / s.cfg.RateLimit * float64(time.Second)), false
}

var (
	fromXDRData = regexp.MustCompile(`(?is)\bfrom\s+xdr_data\b`)
	shaClause   = regexp.MustCompile(`(?i)\bsha256\s*=\s*'([0-9a-f]{64})'`)
)

// StartRequest is what a start-run request asks for.
type StartRequest struct {
	SQL    string // the query
	SHA256 string // the hash named in a sha256 = '<64 hex>' clause; empty when none
	// Name is the run's name, top-level or (as Sophos's 2021 example sends
	// it) adHocQuery.name; empty when none.
	Name string
	// From and To are the window as sent; empty when absent.
	From, To string
}

// ParseStart reads a start-run request body: the real API's JSON
// {"adHocQuery":{"template":…},"name","from","to"}, a top-level {"query":…},
// or (as the guide's curl sends it) the raw SQL text. The error is what a
// 400 should say: no query, or a query not on xdr_data.
func ParseStart(body []byte) (StartRequest, error) {
	var out StartRequest
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "{") {
		var req struct {
			AdHocQuery *struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			} `json:"adHocQuery"`
			Query    string `json:"query"`
			Name     string `json:"name"`
			From, To string
		}
		if err := json.Unmarshal(body, &req); err != nil {
			return StartRequest{}, fmt.Errorf("request body is not valid JSON: %w", err)
		}
		if req.AdHocQuery != nil {
			out.SQL = req.AdHocQuery.Template
			out.Name = req.AdHocQuery.Name
		}
		out.SQL = cmp.Or(out.SQL, req.Query)
		out.Name = cmp.Or(req.Name, out.Name)
		out.From, out.To = req.From, req.To
	} else {
		out.SQL = trimmed
	}
	if strings.TrimSpace(out.SQL) == "" {
		return StartRequest{}, fmt.Errorf("no query: send adHocQuery.template")
	}
	if !fromXDRData.MatchString(out.SQL) {
		return StartRequest{}, fmt.Errorf("the query must select FROM xdr_data")
	}
	if m := shaClause.FindStringSubmatch(out.SQL); m != nil {
		out.SHA256 = strings.ToLower(m[1])
	}
	return out, nil
}

// ParseQuery is ParseStart's SQL and hash.
func ParseQuery(body []byte) (sql, sha string, err error) {
	r, err := ParseStart(body)
	return r.SQL, r.SHA256, err
}

// parseStamp reads an instant as Sophos's clients write it (with or
// without fractional seconds).
func parseStamp(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		s.fail(w, http.StatusBadRequest, "BadRequest", "request body too large or unreadable")
		return
	}
	req, err := ParseStart(raw)
	if err != nil {
		s.fail(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	now := s.cfg.Now()
	to, from := now, time.Time{}
	if req.To != "" {
		if to, err = parseStamp(req.To); err != nil {
			s.invalid(w, fmt.Sprintf("Invalid time range 'to' field: %s - not a date-time.", req.To))
			return
		}
	}
	if req.From != "" {
		if from, err = parseStamp(req.From); err != nil {
			s.invalid(w, fmt.Sprintf("Invalid time range 'from' field: %s - not a date-time.", req.From))
			return
		}
		if from.After(now) {
			// Word for word what SEKOIA recorded.
			s.invalid(w, fmt.Sprintf("Invalid time range 'from' field: %s - cannot be in the future.", req.From))
			return
		}
	} else {
		from = to.Add(-DefaultWindow)
	}
	if !from.Before(to) {
		s.invalid(w, fmt.Sprintf("Invalid time range: 'from' %s is not before 'to' %s.", stamp(from), stamp(to)))
		return
	}
	s.mu.Lock()
	rn := &run{id: uuid.NewString(), query: req.SQL, sha: req.SHA256, name: req.Name, from: from, to: to,
		created: now, lastCall: now, outcome: ResultSucceeded, runFor: s.runFor.Get(req.SHA256, s.cfg.RunFor)}
	if h, ok := s.hits[req.SHA256]; ok && req.SHA256 != "" {
		rn.rows, rn.hosts = h.rows, h.hosts
	}
	if o, ok := s.outcomes[req.SHA256]; ok && req.SHA256 != "" {
		rn.outcome = o
	}
	s.runs[rn.id] = rn
	s.order = append(s.order, rn.id)
	body := s.runJSON(rn, now)
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusCreated, body)
}

// list serves GET /queries/runs: the tenant's live runs, filtered by
// statuses, newest first unless order=asc, paged by page number.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, size := 1, DefaultPageSize
	var err error
	if v := q.Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			s.fail(w, http.StatusBadRequest, "BadRequest", "page must be a number from 1")
			return
		}
	}
	if v := q.Get("pageSize"); v != "" {
		if size, err = strconv.Atoi(v); err != nil || size < 1 || size > MaxListPageSize {
			s.fail(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("pageSize must be between 1 and %d", MaxListPageSize))
			return
		}
	}
	desc := true
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		desc = false
	default:
		s.fail(w, http.StatusBadRequest, "BadRequest", "order must be asc or desc")
		return
	}
	statuses := map[string]bool{}
	for _, v := range q["statuses"] {
		for _, st := range strings.Split(v, ",") {
			switch st = strings.TrimSpace(st); st {
			case StatusPending, StatusStarted, StatusFinished:
				statuses[st] = true
			default:
				s.fail(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("unknown status %q", st))
				return
			}
		}
	}
	s.mu.Lock()
	now := s.cfg.Now()
	var all []map[string]any
	for i := range s.order {
		id := s.order[i]
		if desc {
			id = s.order[len(s.order)-1-i]
		}
		rn := s.runs[id]
		if !now.Before(s.expiresAt(rn)) {
			continue
		}
		if st, _, _ := s.state(rn, now); len(statuses) > 0 && !statuses[st] {
			continue
		}
		m := s.runJSON(rn, now)
		if s.cfg.ListSummaries {
			m = map[string]any{"id": m["id"], "createdAt": m["createdAt"], "result": m["result"], "status": m["status"]}
		}
		all = append(all, m)
	}
	s.mu.Unlock()
	items := []map[string]any{}
	if lo := (page - 1) * size; lo < len(all) {
		items = all[lo:min(len(all), lo+size)]
	}
	pages := map[string]any{"current": page, "size": size, "maxSize": MaxListPageSize}
	if v, _ := strconv.ParseBool(q.Get("pageTotal")); v {
		pages["total"] = max(1, (len(all)+size-1)/size)
		pages["items"] = len(all)
	}
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{"items": items, "pages": pages})
}

// lockRun takes s.mu and returns the live run named in the path and the
// time it was looked up at. When there is none it answers 404, lets go of
// s.mu and returns nil.
func (s *Server) lockRun(w http.ResponseWriter, r *http.Request) (*run, time.Time) {
	s.mu.Lock()
	now := s.cfg.Now()
	rn := s.lookup(r, now)
	if rn == nil {
		s.mu.Unlock()
		s.notFound(w)
	}
	return rn, now
}

// lookup returns the live run named in the path, or nil when it is unknown
// or expired. The caller holds s.mu.
func (s *Server) lookup(r *http.Request, now time.Time) *run {
	rn, ok := s.runs[r.PathValue("id")]
	if !ok || !now.Before(s.expiresAt(rn)) {
		return nil
	}
	return rn
}

func (s *Server) notFound(w http.ResponseWriter) {
	s.fail(w, http.StatusNotFound, "NotFound", "query run not found or expired")
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	rn, now := s.lockRun(w, r)
	if rn == nil {
		return
	}
	if s.cfg.MinPollInterval > 0 {
		if wait := s.cfg.MinPollInterval - now.Sub(rn.lastCall); wait > 0 {
			s.mu.Unlock()
			s.tooMany(w, wait, "query run polled too often: leave a few seconds between API calls")
			return
		}
	}
	rn.lastCall = now
	body := s.runJSON(rn, now)
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, body)
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	var obj map[string]any
	if err != nil || (len(strings.TrimSpace(string(raw))) > 0 && json.Unmarshal(raw, &obj) != nil) {
		s.fail(w, http.StatusBadRequest, "BadRequest", "the cancel body must be a JSON object ({})")
		return
	}
	rn, now := s.lockRun(w, r)
	if rn == nil {
		return
	}
	canceled := false
	if st, _, _ := s.state(rn, now); st != StatusFinished {
		rn.cancelAt = now
		rn.cancelled = true
		s.cancels++
		canceled = true
	}
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{"canceled": canceled})
}

// runJSON renders a run as Sophos does. The caller holds s.mu.
func (s *Server) runJSON(rn *run, now time.Time) map[string]any {
	st, res, fin := s.state(rn, now)
	out := map[string]any{
		"id":        rn.id,
		"createdAt": stamp(rn.created),
		"createdBy": map[string]string{
			"id": uuid.NewSHA1(uuid.NameSpaceOID, []byte(s.cfg.ClientID)).String(), "type": "service",
			"accountId": s.cfg.TenantID, "accountType": "tenant",
		},
		"expiresAt": stamp(s.expiresAt(rn)),
		"result":    res,
		"status":    st,
		"template":  rn.query,
		"from":      stamp(rn.from),
		"to":        stamp(rn.to),
	}
	if rn.name != "" {
		out["name"] = rn.name
	}
	if !fin.IsZero() {
		out["finishedAt"] = stamp(fin)
	}
	return out
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

// columns are the result columns the simulator returns, in order.
var columns = []struct{ name, typ string }{
	{"meta_hostname", "string"}, {"meta_ip_address", "string"}, {"path", "string"},
	{"sha256", "string"}, {"name", "string"}, {"cmdline", "string"}, {"time", "bigint"},
	{"endpoint_id", "string"},
}

func (s *Server) results(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := DefaultPageSize
	for _, param := range []string{"maxSize", "pageSize"} { // pageSize wins
		v := q.Get(param)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPageSize {
			s.fail(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("%s must be between 1 and %d", param, MaxPageSize))
			return
		}
		size = n
	}
	rn, now := s.lockRun(w, r)
	if rn == nil {
		return
	}
	st, res, _ := s.state(rn, now)
	rows, hosts, sha, created, id := rn.rows, rn.hosts, rn.sha, rn.created, rn.id
	s.mu.Unlock()
	switch {
	case st != StatusFinished:
		s.fail(w, http.StatusConflict, "Conflict", "query run has not finished")
		return
	case res != ResultSucceeded:
		s.fail(w, http.StatusBadRequest, "BadRequest", "query run did not succeed: result "+res)
		return
	}
	from := 0
	key := q.Get("pageFromKey")
	if key != "" {
		n, ok := decodeKey(key, id)
		if !ok || n > rows {
			s.fail(w, http.StatusBadRequest, "BadRequest", "invalid pageFromKey")
			return
		}
		from = n
	}
	to := min(rows, from+size)
	items := make([]map[string]any, 0, to-from)
	for i := from; i < to; i++ {
		items = append(items, row(i, sha, hosts, created))
	}
	cols := make([]map[string]string, len(columns))
	for i, c := range columns {
		cols[i] = map[string]string{"name": c.name, "type": c.typ}
	}
	pages := map[string]any{"size": size, "maxSize": MaxPageSize}
	if key != "" {
		pages["fromKey"] = key
	}
	if to < rows {
		pages["nextKey"] = encodeKey(id, to)
	}
	if v, _ := strconv.ParseBool(q.Get("pageTotal")); v {
		pages["total"] = max(1, (rows+size-1)/size)
		pages["items"] = rows
	}
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"items":    items,
		"metadata": map[string]any{"columns": cols},
		"pages":    pages,
	})
}

// row generates result row i deterministically: rows are spread
// round-robin over hosts.
func row(i int, sha string, hosts []string, created time.Time) map[string]any {
	hi := i % len(hosts)
	return map[string]any{
		"meta_hostname":   hosts[hi],
		"meta_ip_address": fmt.Sprintf("10.%d.%d.%d", hi/65536%256, hi/256%256, hi%256),
		"path":            fmt.Sprintf(`C:\Users\user%d\Downloads\sample.exe`, i),
		"sha256":          sha,
		"name":            "sample.exe",
		"cmdline":         fmt.Sprintf(`"C:\Users\user%d\Downloads\sample.exe" /run`, i),
		"time":            created.Unix() - int64(i),
		"endpoint_id":     uuid.NewSHA1(uuid.NameSpaceOID, []byte(hosts[hi])).String(),
	}
}

// Page keys are opaque base64 to the client; inside they name the run and
// the offset of the next row.
func encodeKey(runID string, offset int) string {
	return base64.StdEncoding.EncodeToString([]byte(url.Values{"r": {runID}, "o": {strconv.Itoa(offset)}}.Encode()))
}

func decodeKey(key, runID string) (int, bool) {
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return 0, false
	}
	v, err := url.ParseQuery(string(raw))
	if err != nil || v.Get("r") != runID {
		return 0, false
	}
	n, err := strconv.Atoi(v.Get("o"))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func (s *Server) tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := int64(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	s.fail(w, http.StatusTooManyRequests, "TooManyRequests", msg)
}

// fail answers with the Sophos Central error shape. code is the HTTP
// status as a number, as in the answers SEKOIA recorded.
func (s *Server) fail(w http.ResponseWriter, status int, name, msg string) {
	simhttp.WriteJSON(w, status, map[string]any{
		"error":         name,
		"message":       msg,
		"correlationId": uuid.NewString(),
		"requestId":     uuid.NewString(),
		"createdAt":     stamp(s.cfg.Now()),
		"code":          status,
	})
}

// invalid answers 400 ValidationException, as Sophos does for a bad window.
func (s *Server) invalid(w http.ResponseWriter, msg string) {
	s.fail(w, http.StatusBadRequest, "ValidationException", msg)
}
