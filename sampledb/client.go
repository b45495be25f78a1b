package sampledb

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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/job"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout         = 15 * time.Second
	DefaultMaxBody         = 8 << 20
	DefaultInitialInterval = 200 * time.Millisecond
	DefaultMaxInterval     = 10 * time.Second
	DefaultUserAgent       = "analysisfleet"
)

// Paging limits for ListJobs and SearchJobs.
const (
	DefaultPageSize = 500
	MaxPageSize     = 10000 // the API refuses larger limits
)

// jobPath is the job API's root, below Config.URL.
const jobPath = "/sampledb/v2/job"

// Config configures a Client.
type Config struct {
	// URL is the API base, e.g. https://api.mnemonic.no. A path prefix (a
	// gateway) is kept; a trailing slash is ignored. Required.
	URL string
	// APIKey is sent as Argus-API-Key. Required; never logged or shown in
	// errors.
	APIKey string
	// UserAgent is sent on every request: "analysisfleet/<version> (<WORKER_ID>)".
	// Default DefaultUserAgent.
	UserAgent string
	// Timeout bounds one request (one attempt). Default DefaultTimeout.
	Timeout time.Duration
	// MaxBody caps a response body. Default DefaultMaxBody.
	MaxBody int64
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// Limiter, when set, paces requests fleet-wide and is told of 429s.
	Limiter httpc.Limiter
	// Retry policy for 5xx, 429, 408 and network errors: exponential
	// backoff from InitialInterval (default DefaultInitialInterval) to
	// MaxInterval (default DefaultMaxInterval); a longer Retry-After wins.
	// MaxElapsed bounds the retries of one call; 0 retries until ctx ends.
	InitialInterval, MaxInterval, MaxElapsed time.Duration
	// Logger receives retries at debug level. Optional.
	Logger *zap.Logger
}

// String describes the config without the API key.
func (c Config) String() string {
	return fmt.Sprintf("sampledb.Config{URL: %s, APIKey: [REDACTED], UserAgent: %q}", httpc.Redact(c.URL), c.UserAgent)
}

// GoString is String, so %#v does not print the key either.
func (c Config) GoString() string { return c.String() }

// Client calls the SampleDB v2 job API. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host[/prefix], no trailing slash
	key        string
	hc         *httpc.Client
	log        *zap.Logger
	initial    time.Duration
	maxIntv    time.Duration
	maxElapsed time.Duration
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("sampledb: Config.URL is required")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("sampledb: Config.URL does not parse: %s", httpc.Redact(cfg.URL))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("sampledb: Config.URL scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("sampledb: Config.URL has no host")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("sampledb: Config.URL must not carry user info, query or fragment")
	}
	if cfg.APIKey == "" {
		return nil, errors.New("sampledb: Config.APIKey is required (SAMPLEDB_API_KEY)")
	}
	if strings.TrimSpace(cfg.APIKey) != cfg.APIKey || strings.ContainsFunc(cfg.APIKey, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, errors.New("sampledb: Config.APIKey has surrounding white space or control characters (SAMPLEDB_API_KEY)")
	}
	for name, d := range map[string]time.Duration{
		"Timeout": cfg.Timeout, "InitialInterval": cfg.InitialInterval,
		"MaxInterval": cfg.MaxInterval, "MaxElapsed": cfg.MaxElapsed,
	} {
		if d < 0 {
			return nil, fmt.Errorf("sampledb: Config.%s must not be negative", name)
		}
	}
	if cfg.MaxBody < 0 {
		return nil, errors.New("sampledb: Config.MaxBody must not be negative")
	}
	base := u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/")
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{
		base: base,
		key:  cfg.APIKey,
		hc: httpc.New(httpc.Config{
			Service:   "sampledb",
			UserAgent: cmp.Or(cfg.UserAgent, DefaultUserAgent),
			Timeout:   cmp.Or(cfg.Timeout, DefaultTimeout),
			MaxBody:   cmp.Or(cfg.MaxBody, DefaultMaxBody),
			Limiter:   cfg.Limiter,
			Transport: cfg.Transport,
		}),
		log:        log.Named("sampledb"),
		initial:    cmp.Or(cfg.InitialInterval, DefaultInitialInterval),
		maxIntv:    cmp.Or(cfg.MaxInterval, DefaultMaxInterval),
		maxElapsed: cfg.MaxElapsed,
	}
	c.maxIntv = max(c.maxIntv, c.initial)
	return c, nil
}

// String names the client's endpoint, without the API key.
func (c *Client) String() string { return "sampledb.Client(" + c.base + ")" }

// GoString is String, so %#v does not print the key either.
func (c *Client) GoString() string { return c.String() }

// UpdateJob moves job id to state (PUT /sampledb/v2/job/{id}) and returns
// the job as SampleDB now has it; its AbortRequested tells the caller an
// abort is pending. Repeating the current state is a harmless 200; a
// transition outside the state machine is ErrPrecondition.
//
// UpdateJob, GetJob and AbortJob check that the job answered is job id
// (its canonical form): an answer about another job is retried like a
// 5xx and, when the retries give up, returned as a *BadAnswerError
// (ErrBadAnswer, retryable); the other job's object is never returned.
func (c *Client) UpdateJob(ctx context.Context, id, state string) (*Job, error) {
	if err := checkID("job id", id); err != nil {
		return nil, err
	}
	if state == "" {
		return nil, errors.New("sampledb: UpdateJob: empty state")
	}
	return c.jobCall(ctx, http.MethodPut, id, map[string]string{"state": state})
}

// GetJob fetches job id (GET /sampledb/v2/job/{id}).
func (c *Client) GetJob(ctx context.Context, id string) (*Job, error) {
	if err := checkID("job id", id); err != nil {
		return nil, err
	}
	return c.jobCall(ctx, http.MethodGet, id, nil)
}

// AbortJob requests the abort of job id (DELETE /sampledb/v2/job/{id}):
// SampleDB sets abortRequested on an active job and leaves a finished one
// as it is. It returns the job.
func (c *Client) AbortJob(ctx context.Context, id string) (*Job, error) {
	if err := checkID("job id", id); err != nil {
		return nil, err
	}
	return c.jobCall(ctx, http.MethodDelete, id, nil)
}

// ListOptions selects the jobs ListJobs returns.
type ListOptions struct {
	// States filters by job state; empty means the API's default, the
	// active jobs (enqueued and executing).
	States []string
	// PageSize is the number of jobs per request: default DefaultPageSize,
	// larger values are lowered to MaxPageSize.
	PageSize int
	// Brief reads of each job only its ID, state, abortRequested and
	// timestamps; the submission and classification are left empty. A
	// listing that needs no more (the abort poll, the reconciler's check)
	// costs about a third of the CPU of a whole one (sampledb's
	// BenchmarkListingOf100kActiveJobs).
	Brief bool
}

// ListJobs lists jobs (GET /sampledb/v2/job?limit=&offset=[&state=…]) in
// SampleDB's default order (enqueuedTimestamp) and calls fn with each
// non-empty page. An error from fn stops the listing and is returned as is.
// The page is fn's only while it runs (a brief listing reads the next page
// into the same memory): fn keeps copies of the jobs it needs, not the slice.
//
// More than one state is listed with one listing per state (state=a, then
// state=b), not one query with the parameter repeated: a server that reads
// the parameter once would otherwise return one state only. fn sees each
// state's jobs in turn, each job once (a job that moved from one listed
// state to another meanwhile is not repeated).
//
// Paging is described at pages: it reads on while pages come back full,
// whatever count says, and skips (and logs) items that are not readable
// jobs. Pages are offsets into a live list: a job that
// leaves the selected states while the listing runs may shift a later job
// onto a page already read. Callers that poll (abort checks, the
// reconciler) see it next time.
func (c *Client) ListJobs(ctx context.Context, opts ListOptions, fn func(page []Job) error) error {
	size := pageSize(opts.PageSize)
	seen := &seenJobs{}
	list := func(state string) error {
		return c.pages(ctx, size, opts.Brief, seen, fn, func(offset int) (Envelope, error) {
			q := url.Values{}
			q.Set("limit", strconv.Itoa(size))
			q.Set("offset", strconv.Itoa(offset))
			if state != "" {
				q.Set("state", state)
			}
			if opts.Brief {
				return c.doRetry(ctx, http.MethodGet, jobPath, q, nil, briefJobsBody, nil, nil)
			}
			return c.do(ctx, http.MethodGet, jobPath, q, nil)
		}, http.MethodGet, jobPath)
	}
	var states []string
	for _, st := range opts.States {
		if st != "" && !slices.Contains(states, st) {
			states = append(states, st)
		}
	}
	if len(states) == 0 {
		return list("")
	}
	for _, st := range states {
		if err := list(st); err != nil {
			return err
		}
	}
	return nil
}

// SearchCriteria is the body of POST /sampledb/v2/job/search. Zero fields
// are left out, so SampleDB applies its defaults (notably: no State means
// the active jobs only).
type SearchCriteria struct {
	// State selects job states.
	State []string `json:"state,omitempty"`
	// SampleSha256 selects jobs for these samples.
	SampleSha256 []string `json:"sampleSha256,omitempty"`
	// Customer selects jobs for these customers.
	Customer []string `json:"customer,omitempty"`
	// StartTimestamp and EndTimestamp bound a time range, in epoch
	// milliseconds.
	StartTimestamp int64 `json:"startTimestamp,omitempty"`
	EndTimestamp   int64 `json:"endTimestamp,omitempty"`
	// TimeFieldStrategy names the timestamp fields the range applies to
	// (enqueuedTimestamp, startTimestamp, endTimestamp).
	TimeFieldStrategy []string `json:"timeFieldStrategy,omitempty"`
	// TimeMatchStrategy is "any" or "all" of those fields.
	TimeMatchStrategy string `json:"timeMatchStrategy,omitempty"`
	// SortBy orders the result (default enqueuedTimestamp).
	SortBy []string `json:"sortBy,omitempty"`
	// PageSize is the number of jobs per request, as in ListOptions.
	PageSize int `json:"-"`
}

// SearchJobs searches jobs (POST /sampledb/v2/job/search) and calls fn with
// each non-empty page, like ListJobs (the states go in the body's list, in
// one search).
func (c *Client) SearchJobs(ctx context.Context, crit SearchCriteria, fn func(page []Job) error) error {
	size := pageSize(crit.PageSize)
	p := jobPath + "/search"
	return c.pages(ctx, size, false, &seenJobs{}, fn, func(offset int) (Envelope, error) {
		body := struct {
			SearchCriteria
			Limit  int `json:"limit"`
			Offset int `json:"offset"`
		}{crit, size, offset}
		// Argus search endpoints read limit/offset from the body; the
		// document lists them as query parameters. Send both (same values)
		// so either reading works.
		q := url.Values{}
		q.Set("limit", strconv.Itoa(size))
		q.Set("offset", strconv.Itoa(offset))
		return c.do(ctx, http.MethodPost, p, q, body)
	}, http.MethodPost, p)
}

// maxPages bounds one listing, whatever the server answers.
const maxPages = 100_000

// pages runs one paged listing. The offset moves by the number of items
// each page held, readable or not; an item that is not a readable job is
// left out (logged with the count), so one odd job never hides a page.
// The listing goes on while the offset is below the envelope's count or
// the page came back full (as many items as asked for, or as the server's
// own limit when it says it used a lower one): a server that leaves count
// out, or counts one page only, is still read to the end. It stops at the
// first empty page. A page that brings nothing new (the same items again,
// or only jobs already seen: a server ignoring offset) ends it with an
// error, as does passing maxPages. Jobs in seen are not passed to fn
// again; seen gets every job passed. brief: see ListOptions.Brief.
func (c *Client) pages(ctx context.Context, size int, brief bool, seen *seenJobs, fn func([]Job) error, fetch func(offset int) (Envelope, error), method, path string) error {
	offset := 0
	var prev uint64
	// mine holds the jobs of this listing, for the repeat check; nil in
	// the first listing (or the only one), whose jobs are seen's.
	var mine map[string]bool
	if seen.listings++; seen.listings > 1 {
		mine = make(map[string]bool)
	}
	for n := 1; ; n++ {
		env, err := fetch(offset)
		if err != nil {
			return err
		}
		seen.size(env.Count)
		var pg jobPage
		var sig uint64
		if env.brief != nil {
			pg, sig = *env.brief, env.sum
		} else if pg, err = decodeJobs(env.Data, brief); err != nil {
			return c.malformed(method, path, err)
		} else {
			sig = pageSum(bytes.TrimSpace(env.Data))
		}
		if pg.items == 0 {
			return nil
		}
		if pg.bad > 0 {
			c.log.Warn("SampleDB listing: skipped items that are not readable jobs",
				zap.String("method", method), zap.String("path", path), zap.Int("offset", offset),
				zap.Int("skipped", pg.bad), zap.Int("items", pg.items), zap.String("first", c.scrub(pg.first.Error())))
		}
		fresh := 0
		page := pg.jobs[:0] // the jobs not passed before, in place
		for _, j := range pg.jobs {
			unseen := !seen.m[j.ID]
			if unseen {
				seen.m[j.ID] = true
				page = append(page, j)
			}
			if mine == nil {
				if unseen {
					fresh++ // the first listing: its jobs are seen's
				}
			} else if !mine[j.ID] {
				mine[j.ID] = true
				fresh++
			}
		}
		if offset > 0 && (sig == prev || (len(pg.jobs) > 0 && fresh == 0)) {
			pg.release()
			return fmt.Errorf("sampledb %s %s: the page at offset %d repeats jobs already listed (does the server ignore offset?); listing stopped", method, path, offset)
		}
		prev = sig
		if len(page) > 0 {
			err = fn(page)
		}
		pg.release()
		if err != nil {
			return err
		}
		offset += pg.items
		full := pg.items >= size || (env.Limit > 0 && env.Limit < size && pg.items >= env.Limit)
		if offset >= env.Count && !full {
			return nil
		}
		if n >= maxPages {
			return fmt.Errorf("sampledb %s %s: listing stopped after %d pages (%d items)", method, path, n, offset)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// seenJobs is the jobs a ListJobs call passed to its fn, over its
// listings (one per state asked for).
type seenJobs struct {
	m        map[string]bool
	listings int
}

// maxSeenHint bounds the room made ahead for a listing's jobs: the count
// comes from the server.
const maxSeenHint = 1 << 17

// size makes the set once, with room for count jobs (what the first page
// says the listing holds), so that a listing of 100,000 jobs does not
// grow it step by step.
func (s *seenJobs) size(count int) {
	if s.m == nil {
		s.m = make(map[string]bool, min(max(count, 0), maxSeenHint))
	}
}

func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// CreateTask creates a task for job jobID (POST /sampledb/v2/job/{id}/task
// {"worker": worker, "state": "executing"}) and returns it with its ID.
//
// The document does not show the answer, so any 2xx is a created task,
// and its ID is looked for where a SampleDB may put it (see createdTask):
// under id, taskId or taskID, as a string or a number, in the data or in
// a job object that holds the task; never the job's own ID. When the
// answer names no task (an empty body, data null, only the job), the task
// was created but cannot be addressed: CreateTask logs a warning and
// returns the task with an empty ID and no error. The caller runs the
// work without reporting the task; posting again would only create a
// second task.
//
// A POST is not idempotent. When an attempt failed in a way that may have
// created the task anyway (network error or timeout, 500, 502, 504), the
// client lists the job's tasks before trying again and adopts an executing
// task with the same worker instead of creating a second one (best effort:
// when the listing fails it posts again).
func (c *Client) CreateTask(ctx context.Context, jobID, worker string) (*Task, error) {
	if err := checkID("job id", jobID); err != nil {
		return nil, err
	}
	if worker == "" {
		return nil, errors.New("sampledb: CreateTask: empty worker")
	}
	p := jobURLPath(jobID) + "/task"
	body := map[string]string{"worker": worker, "state": TaskExecuting}
	var adopted *Task
	maybeApplied := false
	env, err := c.doRetry(ctx, http.MethodPost, p, nil, body, anyBody, c.checkTaskAnswer(http.MethodPost, p, jobID), func(ctx context.Context, last error) bool {
		// Once an attempt may have applied, look before every later try.
		if maybeApplied = maybeApplied || ambiguous(last); !maybeApplied {
			return false
		}
		t, ok := c.findTask(ctx, jobID, worker)
		if ok {
			adopted = t
		}
		return ok
	})
	if adopted != nil {
		c.log.Debug("adopted task created by an unanswered attempt",
			zap.String("job_id", jobID), zap.String("worker", worker), zap.String("task_id", string(adopted.ID)))
		return adopted, nil
	}
	if err != nil {
		return nil, err
	}
	t, ok := createdTask(env.Data, jobID, worker)
	if !ok {
		c.log.Warn("SampleDB created a task but its answer names no task ID (id, taskId or taskID); the task's end will not be reported",
			zap.String("job_id", jobID), zap.String("worker", worker), zap.String("path", p))
		return &Task{Worker: worker, State: TaskExecuting}, nil
	}
	return &t, nil
}

// findTask looks for an executing task of worker on job jobID, without
// retries (one attempt; failure means "not found").
func (c *Client) findTask(ctx context.Context, jobID, worker string) (*Task, bool) {
	p := jobURLPath(jobID) + "/task"
	env, err := c.once(ctx, http.MethodGet, c.base+p, p, nil, envelopeBody)
	if err != nil {
		return nil, false
	}
	if _, ok := otherJobIn(env.Data, jobID); ok {
		return nil, false // a listing that names another job is no answer
	}
	tasks, err := decodeTasks(env.Data)
	if err != nil {
		return nil, false
	}
	for i := len(tasks) - 1; i >= 0; i-- {
		if tasks[i].Worker == worker && tasks[i].State == TaskExecuting {
			return &tasks[i], true
		}
	}
	return nil, false
}

// ambiguous reports whether a failed attempt may have been applied.
func ambiguous(err error) bool {
	var te *httpc.TransportError
	if errors.As(err, &te) || errors.Is(err, ErrBadAnswer) {
		return true
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.Status {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
			return true
		}
	}
	return false
}

// UpdateTask moves task taskID of job jobID to state (PUT
// /sampledb/v2/job/{id}/task/{taskId}). Any 2xx is success, whatever the
// body holds (204, an empty body, data null, the job): the document does
// not show it. The task returned is SampleDB's when the answer carries
// this task, else taskID in the state asked for.
func (c *Client) UpdateTask(ctx context.Context, jobID string, taskID ID, state string) (*Task, error) {
	if err := checkID("job id", jobID); err != nil {
		return nil, err
	}
	if err := checkID("task id", string(taskID)); err != nil {
		return nil, err
	}
	if state == "" {
		return nil, errors.New("sampledb: UpdateTask: empty state")
	}
	p := jobURLPath(jobID) + "/task/" + url.PathEscape(string(taskID))
	env, err := c.doRetry(ctx, http.MethodPut, p, nil, map[string]string{"state": state}, anyBody, c.checkTaskAnswer(http.MethodPut, p, jobID), nil)
	if err != nil {
		return nil, err
	}
	if t, err := decodeTask(env.Data); err == nil && t.ID == taskID {
		return &t, nil
	}
	return &Task{ID: taskID, State: state}, nil
}

// jobURLPath is the API path of job id, in its canonical form.
func jobURLPath(id string) string { return jobPath + "/" + url.PathEscape(job.CanonicalID(id)) }

func checkID(what, id string) error {
	if id == "" || id == "." || id == ".." {
		return fmt.Errorf("sampledb: invalid %s %q", what, id)
	}
	return nil
}

// jobCall sends a call on job id whose answer is the job, and returns the
// job once an answer is about it.
func (c *Client) jobCall(ctx context.Context, method, id string, body any) (*Job, error) {
	p := jobURLPath(id)
	var j Job
	_, err := c.doRetry(ctx, method, p, nil, body, envelopeBody, func(env Envelope) error {
		got, err := decodeJob(env.Data)
		if err != nil {
			return c.malformed(method, p, err)
		}
		if !job.SameID(got.ID, id) {
			return c.badAnswer(method, p, id, got.ID)
		}
		j = got
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// badAnswer is the error for an answer about job got to a call about job
// want. What SampleDB sent is scrubbed, made printable and capped.
func (c *Client) badAnswer(method, path, want, got string) error {
	got = printable(c.scrub(got))
	if len(got) > maxQuotedID {
		got = strings.ToValidUTF8(got[:maxQuotedID], "") + "…"
	}
	return &BadAnswerError{Method: method, Path: path, Want: job.CanonicalID(want), Got: got}
}

// maxQuotedID caps an ID from an answer quoted in an error.
const maxQuotedID = 80

// checkTaskAnswer returns a *BadAnswerError when the data of a task call's
// answer names another job than jobID: a task object (or each of a list)
// with a jobId (any case, or job_id), or a job holding tasks whose id is
// another job's. An answer that names no job is not checked.
func (c *Client) checkTaskAnswer(method, path, jobID string) func(Envelope) error {
	return func(env Envelope) error {
		if other, ok := otherJobIn(env.Data, jobID); ok {
			return c.badAnswer(method, path, jobID, other)
		}
		return nil
	}
}

func (c *Client) malformed(method, path string, err error) error {
	return fmt.Errorf("sampledb %s %s: %w: %s", method, path, ErrMalformed, c.scrub(err.Error()))
}

// bodyMode says what a 2xx answer's body must be.
type bodyMode int

const (
	// envelopeBody: an Argus envelope, else ErrMalformed.
	envelopeBody bodyMode = iota
	// anyBody: anything. An envelope is decoded; other JSON, or an object
	// without a "data" member, is taken as the data itself (a server that
	// does not wrap); anything else (an empty body) is an empty envelope.
	anyBody
	// briefJobsBody: as envelopeBody, a page of jobs read brief, decoded
	// with the envelope in one pass when it can be (decodeBriefEnvelope).
	briefJobsBody
)

// do sends one call, retrying what is retryable.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body any) (Envelope, error) {
	return c.doRetry(ctx, method, path, q, body, envelopeBody, nil, nil)
}

// doRetry is do with a body mode, a check of each 2xx answer (its error
// ends the attempt like a failed one: retried when retryable), and a hook
// that runs before each retry; when the hook returns true the call stops
// with the last error (it found what it needed).
func (c *Client) doRetry(ctx context.Context, method, path string, q url.Values, body any, mode bodyMode, check func(Envelope) error, before func(ctx context.Context, last error) bool) (Envelope, error) {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return Envelope{}, fmt.Errorf("sampledb %s %s: encode body: %w", method, path, err)
		}
	}
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.initial),
		backoff.WithMaxInterval(c.maxIntv),
		backoff.WithMaxElapsedTime(c.maxElapsed),
	)
	var last error // the last answer or failure that was not the context's
	for attempt := 1; ; attempt++ {
		env, err := c.once(ctx, method, u, path, payload, mode)
		if err == nil && check != nil {
			err = check(env)
		}
		if err == nil {
			return env, nil
		}
		if ctx.Err() != nil {
			if !errors.Is(err, ctx.Err()) {
				last = err
			}
			if last != nil {
				return Envelope{}, fmt.Errorf("sampledb %s %s: %w (last attempt: %w)", method, path, ctx.Err(), last)
			}
			return Envelope{}, fmt.Errorf("sampledb %s %s: %w", method, path, ctx.Err())
		}
		last = err
		if !httpc.IsRetryable(err) {
			return Envelope{}, err
		}
		wait := b.NextBackOff()
		if ra := httpc.RetryAfterOf(err); ra > wait && wait != backoff.Stop {
			wait = ra
			if c.maxElapsed > 0 && b.GetElapsedTime()+wait > c.maxElapsed {
				wait = backoff.Stop
			}
		}
		if wait == backoff.Stop {
			return Envelope{}, fmt.Errorf("sampledb: giving up after %d attempts in %s: %w",
				attempt, b.GetElapsedTime().Round(time.Millisecond), err)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return Envelope{}, fmt.Errorf("sampledb: giving up after %d attempts, next retry in %s is past the deadline: %w",
				attempt, wait.Round(time.Millisecond), err)
		}
		c.log.Debug("retrying SampleDB request",
			zap.String("method", method), zap.String("path", path),
			zap.Int("attempt", attempt), zap.Duration("wait", wait), zap.Error(err))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return Envelope{}, fmt.Errorf("sampledb %s %s: %w (last attempt: %w)", method, path, ctx.Err(), err)
		case <-t.C:
		}
		if before != nil && before(ctx, err) {
			return Envelope{}, err
		}
	}
}

// once sends one attempt and decodes a 2xx body as mode says. Other
// statuses become *Error.
func (c *Client) once(ctx context.Context, method, u, path string, payload []byte, mode bodyMode) (Envelope, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return Envelope{}, fmt.Errorf("sampledb %s %s: build request: %w", method, path, err)
	}
	req.Header.Set("Argus-API-Key", c.key)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if mode == briefJobsBody {
		// A listing's page: nothing decoded keeps the body, whose buffer
		// the next page reuses.
		var env Envelope
		err := c.hc.DoBorrowed(req, func(resp *httpc.Response) (err error) {
			env, err = c.answer(resp, method, path, mode)
			return err
		})
		return env, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Envelope{}, err
	}
	return c.answer(resp, method, path, mode)
}

// answer decodes a 2xx body as mode says. Other statuses become *Error.
// In briefJobsBody mode nothing it returns refers to resp.Body.
func (c *Client) answer(resp *httpc.Response, method, path string, mode bodyMode) (Envelope, error) {
	if resp.Status >= 200 && resp.Status < 300 {
		if mode == briefJobsBody {
			if env, ok := decodeBriefEnvelope(resp.Body); ok {
				return env, nil
			}
		}
		env, err := decodeEnvelope(resp.Body)
		if mode == anyBody {
			t := bytes.TrimSpace(resp.Body)
			switch {
			case err != nil && json.Valid(t):
				return Envelope{Data: t}, nil
			case err != nil:
				return Envelope{}, nil
			case env.Data == nil:
				env.Data = t
			}
			return env, nil
		}
		if err != nil {
			return Envelope{}, c.malformed(method, path, err)
		}
		return env, nil
	}
	e := &Error{
		Status:     resp.Status,
		Method:     method,
		Path:       path,
		RetryAfter: httpc.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	if env, err := decodeEnvelope(resp.Body); err == nil {
		for _, m := range env.Messages {
			m.Message = capText(c.scrub(m.Message))
			m.Field, m.Type = capText(c.scrub(m.Field)), capText(c.scrub(m.Type))
			e.Messages = append(e.Messages, m)
		}
	}
	if len(e.Messages) == 0 {
		e.body = capText(printable(c.scrub(string(resp.Body))))
	}
	return Envelope{}, e
}

// scrub removes the API key from text SampleDB sent back (an error message
// may quote the key it rejected).
func (c *Client) scrub(s string) string {
	if c.key == "" {
		return s
	}
	return strings.ReplaceAll(s, c.key, "[REDACTED]")
}

// printable replaces control characters with spaces.
func printable(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
}

// capText shortens text SampleDB sent for an error message. Cut after
// scrubbing, so a cut can't leave part of the key behind.
func capText(s string) string {
	const maxText = 300
	if len(s) <= maxText {
		return s
	}
	return strings.ToValidUTF8(s[:maxText], "") + "…"
}
