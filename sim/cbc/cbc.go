// Package cbc simulates the Carbon Black Cloud Job Service as the fleet uses
// it for event exports. Sources: "Using the new Jobs Service API" (2020,
// specs/000) for the routes, and the vendor's own client,
// carbonblack/carbon-black-cloud-sdk-python at commit
// fc0c2643f340af86e3b4ac39b800cce2c661f664 (src/cbc_sdk/platform/jobs.py,
// src/cbc_sdk/platform/models/job.yaml and the job fixtures under
// src/tests/unit/fixtures/), for the shapes of the answers:
//
//	POST {base}/jobs/v1/orgs/{org_key}/jobs/start/event_export   start a query → the job object ({"id":4522,"type":"event_export","status":"CREATED",...})
//	GET  {base}/jobs/v1/orgs/{org_key}/jobs                       the job list: {"num_found":N,"results":[job objects]}, oldest first
//	GET  {base}/jobs/v1/orgs/{org_key}/jobs/{job_id}              the job object: status CREATED → COMPLETED (or FAILED, with "errors")
//	GET  {base}/jobs/v1/orgs/{org_key}/jobs/{job_id}/progress     {"num_total","num_completed","message"}: QUEUED → IN_PROGRESS → FINISHED;
//	                                                              "message" is omitted for some jobs (Config.Message), as in the SDK's fixture
//	GET  {base}/jobs/v1/orgs/{org_key}/jobs/{job_id}/download     404 until the output is ready, then 302 to a pre-signed URL
//	GET  {base}/presigned/{job_id}?X-Amz-...                      the "S3" object: no credentials, signature and expiry checked
//
// The job object follows the SDK's model (job.yaml) and fixtures: an int64
// id, type "event_export", job_parameters nesting the start request's query
// object as {"job_parameters":{"query":{…}},"api_resource":…,"version":…}
// (the shape of the SDK's usbdevice_export fixture), connector_id (the API
// ID that started it), org_key, status, an embedded progress, create_time
// and last_update_time with milliseconds. A failed job says FAILED in its
// status and why in "errors"; its /progress freezes where it stopped, since
// the documented progress messages have no failure spelling.
//
// The job list is unpaged, as the SDK reads it (one GET, "results"), unless
// Config.ListPageSize is set: then an answer holds at most that many jobs
// and num_found says how many there are, and start/rows query parameters
// page through them.
//
// Every API route needs X-Auth-Token: <APISecret>/<APIID> (401 otherwise) and
// the configured org key in the path (403 otherwise). Job state is computed
// from the time elapsed since creation on every request (Config.Now), so no
// goroutine runs per job.
//
// The data: SetHits says which devices saw a hash; each device contributes
// RowsPerDevice event rows. Hashes never given to SetHits get 0–4 devices
// derived from the hash itself, so some jobs find nothing.
//
// A Server is an http.Handler and is safe for concurrent use. Tests start it
// with httptest.NewServer, and call Close before closing that server so that
// requests held by a Hang fault are released.
package cbc

import (
	"archive/zip"
	"bytes"
	"cmp"
	"compress/gzip"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Export formats the simulator can serve from the pre-signed URL.
const (
	FormatCSV    = "csv"    // header line + one line per event (the default)
	FormatJSON   = "json"   // {"results":[{...},...],"num_found":N}
	FormatNDJSON = "ndjson" // one JSON object per line
	FormatCSVGz  = "csv.gz" // the CSV, gzip-compressed
	FormatZip    = "zip"    // a zip with the CSV split over two entries, each with its header
)

// Defaults for Config fields left zero.
const (
	DefaultOrgKey    = "SIMORG01"
	DefaultAPIID     = "SIMAPIID01"
	DefaultAPISecret = "SIMSECRETKEY0000000000001"
	DefaultURLTTL    = 5 * time.Minute
)

// RowsPerDevice is how many event rows each device named in SetHits (or
// derived from the hash) contributes to an export.
const RowsPerDevice = 3

// CSVHeader is the column list of CSV exports.
var CSVHeader = []string{"event_id", "device_id", "device_name", "process_hash", "process_name", "event_type", "backend_timestamp"}

// Progress messages, as the document names them.
const (
	StatusQueued     = "QUEUED"
	StatusInProgress = "IN_PROGRESS"
	StatusFinished   = "FINISHED"
	// StatusFailed is what JobInfo.Status says for a job Fail was called
	// on. It is the job object's status; /progress has no failure message.
	StatusFailed = "FAILED"
)

// Job object statuses (the SDK's job.yaml enum).
const (
	JobCreated   = "CREATED"
	JobCompleted = "COMPLETED"
	JobFailed    = "FAILED"
)

// MessageMode says when /progress carries its "message" field.
type MessageMode int

const (
	// MessageSometimes omits it for jobs with an even ID (the first job,
	// 4522, among them) and sends it for the others: both shapes the real
	// service has been seen to send appear in every run.
	MessageSometimes MessageMode = iota
	// MessageAlways always sends it, as the document shows.
	MessageAlways
	// MessageNever never sends it, as the SDK's fixture for a completed
	// job ({"num_total":18,"num_completed":18}).
	MessageNever
)

// DefaultFailReason is the "errors" text of a job failed with Fail.
const DefaultFailReason = "Search request failed: the query timed out"

// Config configures a Server. Durations left zero are zero (the state is
// reached at once), except URLTTL.
type Config struct {
	// OrgKey, APIID and APISecret are the credentials the API accepts
	// (X-Auth-Token: APISecret/APIID, org key in the path). Defaults
	// DefaultOrgKey, DefaultAPIID, DefaultAPISecret.
	OrgKey, APIID, APISecret string
	// A job is QUEUED for QueuedFor after its creation, then IN_PROGRESS for
	// RunFor, then FINISHED.
	QueuedFor, RunFor time.Duration
	// ReadyAfter is how long /download keeps answering 404 after FINISHED.
	ReadyAfter time.Duration
	// URLTTL is the lifetime of a pre-signed URL. Default DefaultURLTTL.
	URLTTL time.Duration
	// Format is the export format: FormatCSV (default), FormatJSON,
	// FormatNDJSON, FormatCSVGz or FormatZip. New panics on anything else.
	Format string
	// Message says when /progress carries "message" (MessageSometimes by
	// default).
	Message MessageMode
	// ListPageSize caps the jobs in one answer of the job list; 0 = the
	// whole list in one answer.
	ListPageSize int
	// Now is the simulator's clock. Default time.Now.
	Now func() time.Time
}

// JobInfo describes one export job, for tests.
type JobInfo struct {
	ID     int64
	Query  string // query.query as sent
	SHA256 string // parsed from process_hash:<sha256>; empty when absent
	Rows   int    // query.rows as sent
	// TimeStart is query.time_range.start exactly as sent ("" when absent).
	TimeStart string
	Created   time.Time
	Status    string // QUEUED, IN_PROGRESS, FINISHED or FAILED, now
}

// Server is the simulated API. Safe for concurrent use.
type Server struct {
	cfg Config
	kit *simhttp.Kit
	h   http.Handler
	key []byte // signs pre-signed URLs

	mu     sync.Mutex
	nextID int64
	jobs   map[int64]*job
	hits   map[string][]string
	starts map[string]int
	runFor simhttp.Durations // SetRunFor
	total  int
	urls   map[string]*presigned // by signature
	issued []string
}

type job struct {
	id        int64
	query     string
	sha       string
	rows      int
	start     time.Time // time_range.start; zero = none
	startRaw  string    // time_range.start as sent
	params    json.RawMessage
	version   string
	created   time.Time
	runFor    time.Duration // IN_PROGRESS for this long (Config.RunFor unless SetRunFor)
	failed    bool
	failedAt  time.Time
	reason    string
	events    []event
	exportRaw []byte // rendered on first download
}

type presigned struct {
	job     int64
	issued  time.Time
	revoked bool
}

type event struct {
	EventID          string   `json:"event_id"`
	DeviceID         int64    `json:"device_id"`
	DeviceName       string   `json:"device_name"`
	ProcessHash      []string `json:"process_hash"`
	ProcessName      string   `json:"process_name"`
	EventType        string   `json:"event_type"`
	BackendTimestamp string   `json:"backend_timestamp"`
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	cfg.OrgKey = cmp.Or(cfg.OrgKey, DefaultOrgKey)
	cfg.APIID = cmp.Or(cfg.APIID, DefaultAPIID)
	cfg.APISecret = cmp.Or(cfg.APISecret, DefaultAPISecret)
	cfg.Format = cmp.Or(cfg.Format, FormatCSV)
	if cfg.URLTTL <= 0 {
		cfg.URLTTL = DefaultURLTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	switch cfg.Format {
	case FormatCSV, FormatJSON, FormatNDJSON, FormatCSVGz, FormatZip:
	default:
		panic(fmt.Sprintf("sim/cbc: unknown export Format %q", cfg.Format))
	}
	s := &Server{
		cfg:    cfg,
		kit:    simhttp.New(),
		key:    make([]byte, 32),
		nextID: 4522,
		jobs:   map[int64]*job{},
		hits:   map[string][]string{},
		starts: map[string]int{},
		runFor: simhttp.Durations{},
		urls:   map[string]*presigned{},
	}
	_, _ = rand.Read(s.key)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /jobs/v1/orgs/{org}/jobs/start/event_export", s.handleStart)
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs", s.handleList)
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}", s.handleJob)
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}/progress", s.handleProgress)
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}/download", s.handleDownload)
	mux.HandleFunc("GET /presigned/{id}", s.handlePresigned)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "NOT_FOUND", "no such route")
	})
	s.h = s.kit.Wrap(mux)
	return s
}

// ServeHTTP serves the API, the pre-signed URLs and /_sim/faults.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// Kit returns the fault switches and request log.
func (s *Server) Kit() *simhttp.Kit { return s.kit }

// Close releases requests held by Hang faults. Call it before closing the
// HTTP server. Safe to call twice.
func (s *Server) Close() { s.kit.Close() }

// Config returns the effective configuration (defaults applied).
func (s *Server) Config() Config { return s.cfg }

// SetHits says which devices saw sha256: each contributes RowsPerDevice
// rows to exports started from now on. No devices means the hash is found
// nowhere.
func (s *Server) SetHits(sha256 string, devices ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits[strings.ToLower(sha256)] = slices.Clone(devices)
}

// SetRunFor makes exports started from now on for sha256 stay IN_PROGRESS
// for d instead of Config.RunFor (worker dev --hold: jobs that last). d <= 0
// restores Config.RunFor.
func (s *Server) SetRunFor(sha256 string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runFor.Set(sha256, d)
}

// Starts returns how many exports were started for sha256.
func (s *Server) Starts(sha256 string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts[strings.ToLower(sha256)]
}

// TotalStarts returns how many exports were started.
func (s *Server) TotalStarts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// Jobs lists every job, oldest first.
func (s *Server) Jobs() []JobInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	out := make([]JobInfo, 0, len(s.jobs))
	for _, j := range s.jobs {
		st, _, _ := s.state(j, now)
		if j.failed {
			st = StatusFailed
		}
		out = append(out, JobInfo{ID: j.id, Query: j.query, SHA256: j.sha, Rows: j.rows, TimeStart: j.startRaw, Created: j.created, Status: st})
	}
	slices.SortFunc(out, func(a, b JobInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Fail makes job id fail now with DefaultFailReason: its job object says
// FAILED, its /progress stays where it was, /download answers 404. It
// reports whether the job exists.
func (s *Server) Fail(id int64) bool { return s.FailWith(id, DefaultFailReason) }

// FailWith is Fail with the job object's "errors" text.
func (s *Server) FailWith(id int64, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if ok && !j.failed {
		j.failed, j.failedAt, j.reason = true, s.cfg.Now(), reason
	}
	return ok
}

// ExpireURLs expires every pre-signed URL issued so far; later /download
// calls issue fresh ones.
func (s *Server) ExpireURLs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.urls {
		p.revoked = true
	}
}

// IssuedURLs returns every pre-signed URL handed out, oldest first (tests
// check that none leaks into errors or logs).
func (s *Server) IssuedURLs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

// state returns the job's progress message and counters at now. Caller
// holds s.mu.
func (s *Server) state(j *job, now time.Time) (msg string, total, completed int) {
	if j.failed {
		// Frozen where it stopped.
		msg, total, completed = s.progressAt(j, j.failedAt)
		if msg == StatusFinished {
			msg = StatusInProgress
		}
		return msg, total, completed
	}
	return s.progressAt(j, now)
}

// progressAt is the progress of a job that does not fail. Caller holds
// s.mu.
func (s *Server) progressAt(j *job, now time.Time) (msg string, total, completed int) {
	el := now.Sub(j.created)
	total = len(j.events)
	switch {
	case el < s.cfg.QueuedFor:
		// The real service cannot know the total before the query runs.
		return StatusQueued, 0, 0
	case el < s.cfg.QueuedFor+j.runFor:
		done := int(float64(total) * float64(el-s.cfg.QueuedFor) / float64(j.runFor))
		return StatusInProgress, total, min(done, total)
	default:
		return StatusFinished, total, total
	}
}

// finishedAt is when the job reaches FINISHED.
func (s *Server) finishedAt(j *job) time.Time {
	return j.created.Add(s.cfg.QueuedFor + j.runFor)
}

// authorize checks X-Auth-Token and the org key in the path. A wrong token
// is 401. A valid token with another org key is 403: the key authenticates
// fine but is not authorised for that org (the real service scopes API keys
// to one org); 404 would hide configuration mistakes behind "not found".
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) bool {
	want := s.cfg.APISecret + "/" + s.cfg.APIID
	got := r.Header.Get("X-Auth-Token")
	if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
		writeErr(w, http.StatusUnauthorized, "UNAUTHORIZED", "missing or invalid X-Auth-Token")
		return false
	}
	if r.PathValue("org") != s.cfg.OrgKey {
		writeErr(w, http.StatusForbidden, "FORBIDDEN", "API key is not authorized for this org")
		return false
	}
	return true
}

var processHashRe = regexp.MustCompile(`(?i)process_hash:"?([0-9a-f]{64})\b`)

type startRequest struct {
	Query *struct {
		Query     string `json:"query"`
		TimeRange *struct {
			Start string `json:"start"`
			End   string `json:"end"`
		} `json:"time_range"`
		Rows *int `json:"rows"`
	} `json:"query"`
	APIResource string `json:"api_resource"`
	Version     string `json:"version"`
	// rawQuery is the "query" object as sent, echoed in job_parameters.
	rawQuery json.RawMessage
}

func (s *Server) handleStart(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) {
		return
	}
	var req startRequest
	var raw struct {
		Query json.RawMessage `json:"query"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, &req) != nil || json.Unmarshal(body, &raw) != nil {
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "request body is not valid JSON")
		return
	}
	req.rawQuery = raw.Query
	switch {
	case req.APIResource != "enriched_events":
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", `api_resource must be "enriched_events"`)
		return
	case req.Query == nil || strings.TrimSpace(req.Query.Query) == "":
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "query.query is required")
		return
	case req.Query.Rows == nil || *req.Query.Rows <= 0:
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "query.rows must be a positive number")
		return
	case req.Version != "" && req.Version != "v2":
		writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", `version must be "v2"`)
		return
	}
	var start time.Time
	var startRaw string
	if tr := req.Query.TimeRange; tr != nil && tr.Start != "" {
		t, err := time.Parse(time.RFC3339, tr.Start)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", "time_range.start is not an ISO 8601 timestamp")
			return
		}
		start, startRaw = t, tr.Start
	}
	sha := ""
	if m := processHashRe.FindStringSubmatch(req.Query.Query); m != nil {
		sha = strings.ToLower(m[1])
	}

	s.mu.Lock()
	now := s.cfg.Now()
	j := &job{id: s.nextID, query: req.Query.Query, sha: sha, rows: *req.Query.Rows, start: start, startRaw: startRaw,
		params: req.rawQuery, version: req.Version, created: now, runFor: s.runFor.Get(sha, s.cfg.RunFor)}
	s.nextID++
	j.events = s.events(j)
	s.jobs[j.id] = j
	s.starts[sha]++
	s.total++
	obj := s.jobObject(j, now)
	s.mu.Unlock()
	// The answer to the start is the job as created, whatever the timings:
	// the document shows "status": "CREATED".
	obj["status"] = JobCreated
	simhttp.WriteJSON(w, http.StatusOK, obj)
}

// jobObject renders j as the Job Service does (the SDK's job.yaml and
// fixtures). Caller holds s.mu.
func (s *Server) jobObject(j *job, now time.Time) map[string]any {
	status := JobCreated
	switch {
	case j.failed:
		status = JobFailed
	case s.ready(j, now):
		status = JobCompleted
	}
	updated := j.created
	switch {
	case j.failed:
		updated = j.failedAt
	case status == JobCompleted:
		updated = s.finishedAt(j).Add(s.cfg.ReadyAfter)
	case now.After(j.created.Add(s.cfg.QueuedFor)):
		updated = now
	}
	msg, total, done := s.state(j, now)
	obj := map[string]any{
		"id":   j.id,
		"type": "event_export",
		"job_parameters": map[string]any{
			"job_parameters": map[string]any{"query": j.params},
			"api_resource":   "enriched_events",
			"version":        cmp.Or(j.version, "v2"),
		},
		"connector_id":     s.cfg.APIID,
		"org_key":          s.cfg.OrgKey,
		"status":           status,
		"progress":         s.progressBody(j, msg, total, done),
		"create_time":      stamp(j.created),
		"last_update_time": stamp(updated),
	}
	if j.failed {
		obj["errors"] = j.reason
	}
	return obj
}

// progressBody is the /progress answer, with or without "message" as
// Config.Message says.
func (s *Server) progressBody(j *job, msg string, total, done int) map[string]any {
	out := map[string]any{"num_total": total, "num_completed": done}
	switch s.cfg.Message {
	case MessageAlways:
		out["message"] = msg
	case MessageSometimes:
		if j.id%2 != 0 {
			out["message"] = msg
		}
	}
	return out
}

// stamp renders a time as the Job Service does: UTC, milliseconds.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// ready reports whether job j's output can be downloaded at now. Caller
// holds s.mu.
func (s *Server) ready(j *job, now time.Time) bool {
	return !j.failed && !now.Before(s.finishedAt(j).Add(s.cfg.ReadyAfter))
}

// lookup authorizes the request and finds the job its path names; when it
// answered an error instead, ok is false.
func (s *Server) lookup(w http.ResponseWriter, r *http.Request) (j *job, ok bool) {
	if !s.authorize(w, r) {
		return nil, false
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	j = s.jobs[id]
	s.mu.Unlock()
	if err != nil || j == nil {
		writeErr(w, http.StatusNotFound, "NOT_FOUND", "job not found")
		return nil, false
	}
	return j, true
}

func (s *Server) handleProgress(w http.ResponseWriter, r *http.Request) {
	j, ok := s.lookup(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	msg, total, done := s.state(j, s.cfg.Now())
	body := s.progressBody(j, msg, total, done)
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, body)
}

func (s *Server) handleJob(w http.ResponseWriter, r *http.Request) {
	j, ok := s.lookup(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	obj := s.jobObject(j, s.cfg.Now())
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, obj)
}

// handleList answers the job list: every job, oldest first, as
// {"num_found":N,"results":[…]}. With Config.ListPageSize, one answer holds
// at most that many from query parameter start (default 0), fewer when rows
// asks for fewer.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	if !s.authorize(w, r) {
		return
	}
	q := r.URL.Query()
	start, rows := 0, 0
	for name, dst := range map[string]*int{"start": &start, "rows": &rows} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeErr(w, http.StatusBadRequest, "INVALID_REQUEST", name+" must be a non-negative integer")
				return
			}
			*dst = n
		}
	}
	s.mu.Lock()
	now := s.cfg.Now()
	ids := make([]int64, 0, len(s.jobs))
	for id := range s.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	page := s.cfg.ListPageSize
	if page <= 0 {
		page = len(ids)
	}
	if rows > 0 {
		page = min(page, rows)
	}
	results := []map[string]any{}
	for i := start; i < len(ids) && len(results) < page; i++ {
		results = append(results, s.jobObject(s.jobs[ids[i]], now))
	}
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{"num_found": len(ids), "results": results})
}

func (s *Server) handleDownload(w http.ResponseWriter, r *http.Request) {
	j, ok := s.lookup(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	now := s.cfg.Now()
	ready := s.ready(j, now)
	var loc string
	if ready {
		loc = s.issueLocked(r, j.id, now)
	}
	s.mu.Unlock()
	if !ready {
		// The document: "If the job output is not yet available, this route
		// will return 404 Not Found."
		writeErr(w, http.StatusNotFound, "NOT_FOUND", "job output is not available")
		return
	}
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusFound)
}

// issueLocked mints a pre-signed URL for job id on the host the request came
// to, in the shape of an S3 SigV4 query-string URL. Caller holds s.mu.
func (s *Server) issueLocked(r *http.Request, id int64, now time.Time) string {
	tok := make([]byte, 16)
	_, _ = rand.Read(tok)
	q := url.Values{}
	q.Set("X-Amz-Algorithm", "AWS4-HMAC-SHA256")
	q.Set("X-Amz-Credential", "ASIASIMULATOR0000000/"+now.UTC().Format("20060102")+"/us-east-1/s3/aws4_request")
	q.Set("X-Amz-Date", now.UTC().Format("20060102T150405Z"))
	q.Set("X-Amz-Expires", strconv.Itoa(int((s.cfg.URLTTL+time.Second-1)/time.Second)))
	q.Set("X-Amz-SignedHeaders", "host")
	q.Set("X-Amz-Security-Token", hex.EncodeToString(tok))
	sig := s.sign(id, q)
	q.Set("X-Amz-Signature", sig)
	s.urls[sig] = &presigned{job: id, issued: now}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := scheme + "://" + r.Host + "/presigned/" + strconv.FormatInt(id, 10) + "?" + q.Encode()
	s.issued = append(s.issued, u)
	return u
}

func (s *Server) sign(id int64, q url.Values) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "%d\n", id)
	for _, k := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token"} {
		fmt.Fprintf(m, "%s=%s\n", k, q.Get(k))
	}
	return hex.EncodeToString(m.Sum(nil))
}

func (s *Server) handlePresigned(w http.ResponseWriter, r *http.Request) {
	// S3 refuses a request that carries two authentication mechanisms: a
	// client that forwards its API credentials to the redirect target fails
	// here, loudly.
	if r.Header.Get("X-Auth-Token") != "" || r.Header.Get("Authorization") != "" {
		writeS3Err(w, http.StatusBadRequest, s3Error{Code: "InvalidArgument",
			Message:      "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified",
			ArgumentName: "Authorization"})
		return
	}
	q := r.URL.Query()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	got := q.Get("X-Amz-Signature")
	if err != nil || got == "" || !hmac.Equal([]byte(got), []byte(s.sign(id, q))) {
		writeS3Err(w, http.StatusForbidden, s3Error{Code: "SignatureDoesNotMatch",
			Message:           "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
			SignatureProvided: got})
		return
	}
	s.mu.Lock()
	now := s.cfg.Now()
	p := s.urls[got]
	j := s.jobs[id]
	var body []byte
	expired := p == nil || p.revoked || now.After(p.issued.Add(s.cfg.URLTTL))
	if !expired && j != nil {
		if j.exportRaw == nil {
			j.exportRaw = render(s.cfg.Format, j.events)
		}
		body = j.exportRaw
	}
	s.mu.Unlock()
	switch {
	case expired:
		writeS3Err(w, http.StatusForbidden, s3Error{Code: "AccessDenied", Message: "Request has expired",
			XAmzExpires: q.Get("X-Amz-Expires"), ServerTime: now.UTC().Format(time.RFC3339)})
		return
	case j == nil:
		writeS3Err(w, http.StatusNotFound, s3Error{Code: "NoSuchKey", Message: "The specified key does not exist."})
		return
	}
	w.Header().Set("Content-Type", contentType(s.cfg.Format))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// events builds job j's rows from the hits for its hash. Caller holds s.mu.
func (s *Server) events(j *job) []event {
	if j.sha == "" {
		return nil
	}
	devices, ok := s.hits[j.sha]
	if !ok {
		devices = defaultDevices(j.sha)
	}
	var out []event
	n := 0
	for di, dev := range devices {
		for k := range RowsPerDevice {
			n++
			ts := j.created.Add(-time.Duration(n) * 7 * time.Minute)
			if !j.start.IsZero() && ts.Before(j.start) {
				continue
			}
			id := sha256.Sum256(fmt.Appendf(nil, "%d/%d/%d", j.id, di, k))
			out = append(out, event{
				EventID:          fmt.Sprintf("%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16]),
				DeviceID:         int64(100000 + crc32.ChecksumIEEE([]byte(dev))%900000),
				DeviceName:       dev,
				ProcessHash:      []string{j.sha},
				ProcessName:      `c:\users\public\sample.exe`,
				EventType:        []string{"childproc", "filemod", "netconn"}[k%3],
				BackendTimestamp: ts.UTC().Format("2006-01-02T15:04:05.000Z"),
			})
			if len(out) == j.rows {
				return out
			}
		}
	}
	return out
}

// defaultDevices derives 0–4 device names from a hash nobody configured.
func defaultDevices(sha string) []string {
	if len(sha) != 64 {
		return nil
	}
	b, err := hex.DecodeString(sha[:2])
	if err != nil {
		return nil
	}
	out := make([]string, int(b[0])%5)
	for i := range out {
		out[i] = "WKS-" + strings.ToUpper(sha[2+i*6:8+i*6])
	}
	return out
}

func render(format string, evs []event) []byte {
	var buf bytes.Buffer
	switch format {
	case FormatJSON:
		_ = json.NewEncoder(&buf).Encode(map[string]any{"results": nonNil(evs), "num_found": len(evs), "num_available": len(evs)})
	case FormatNDJSON:
		enc := json.NewEncoder(&buf)
		for _, e := range evs {
			_ = enc.Encode(e)
		}
	case FormatCSVGz:
		zw := gzip.NewWriter(&buf)
		writeCSV(zw, evs)
		_ = zw.Close()
	case FormatZip:
		zw := zip.NewWriter(&buf)
		half := (len(evs) + 1) / 2
		for i, part := range [][]event{evs[:half], evs[half:]} {
			f, _ := zw.Create(fmt.Sprintf("event_export/part-%04d.csv", i+1))
			writeCSV(f, part)
		}
		_ = zw.Close()
	default:
		writeCSV(&buf, evs)
	}
	return buf.Bytes()
}

func writeCSV(w io.Writer, evs []event) {
	cw := csv.NewWriter(w)
	_ = cw.Write(CSVHeader)
	for _, e := range evs {
		_ = cw.Write([]string{e.EventID, strconv.FormatInt(e.DeviceID, 10), e.DeviceName,
			strings.Join(e.ProcessHash, " "), e.ProcessName, e.EventType, e.BackendTimestamp})
	}
	cw.Flush()
}

func contentType(format string) string {
	switch format {
	case FormatJSON:
		return "application/json"
	case FormatNDJSON:
		return "application/x-ndjson"
	case FormatCSVGz:
		return "application/gzip"
	case FormatZip:
		return "application/zip"
	}
	return "text/csv"
}

func nonNil(evs []event) []event {
	if evs == nil {
		return []event{}
	}
	return evs
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	simhttp.WriteJSON(w, status, map[string]any{"success": false, "error_code": code, "message": msg})
}

type s3Error struct {
	XMLName           xml.Name `xml:"Error"`
	Code              string   `xml:"Code"`
	Message           string   `xml:"Message"`
	ArgumentName      string   `xml:"ArgumentName,omitempty"`
	SignatureProvided string   `xml:"SignatureProvided,omitempty"`
	XAmzExpires       string   `xml:"X-Amz-Expires,omitempty"`
	ServerTime        string   `xml:"ServerTime,omitempty"`
	RequestID         string   `xml:"RequestId"`
}

func writeS3Err(w http.ResponseWriter, status int, e s3Error) {
	e.RequestID = "SIMREQUEST0000001"
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(e)
}
