package sampledb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	analyzerKey = "analyzer/k3y-S3CRET-0001"
	userKey     = "user/k3y-S3CRET-0002"
	viewerKey   = "viewer/k3y-S3CRET-0003"
	userAgent   = "analysisfleet/test (worker-7)"
	jobRoot     = "/sampledb/v2/job"
	sha         = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"
)

// seen is one request as it reached the simulator.
type seen struct {
	method, path string
	query        url.Values
	header       http.Header
}

type bundle struct {
	srv *sim.Server
	url string
	tr  *http.Transport

	mu   sync.Mutex
	reqs []seen
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := sim.New(sim.Config{Keys: map[string]sim.Role{
		analyzerKey: sim.RoleAnalyzer, userKey: sim.RoleUser, viewerKey: sim.RoleViewer,
	}})
	b := &bundle{srv: srv, tr: http.DefaultTransport.(*http.Transport).Clone()}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.reqs = append(b.reqs, seen{r.Method, r.URL.Path, r.URL.Query(), r.Header.Clone()})
		b.mu.Unlock()
		srv.ServeHTTP(w, r)
	}))
	b.url = hs.URL
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		b.tr.CloseIdleConnections()
	})
	return b
}

func (b *bundle) seen() []seen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seen(nil), b.reqs...)
}

// client returns a client with key; mod adjusts the config.
func (b *bundle) client(t *testing.T, key string, mod ...func(*sampledb.Config)) *sampledb.Client {
	t.Helper()
	cfg := sampledb.Config{
		URL: b.url, APIKey: key, UserAgent: userAgent, Transport: b.tr,
		Timeout: 5 * time.Second, InitialInterval: 5 * time.Millisecond, MaxInterval: 50 * time.Millisecond,
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := sampledb.New(cfg)
	require.NoError(t, err)
	return c
}

func (b *bundle) job(t *testing.T, id string) sampledb.Job {
	t.Helper()
	return b.srv.CreateJob(job.Message{
		JobID: id,
		Submission: job.Submission{
			ID: "sub-" + id, Customer: "acme", Sample: job.Sample{ID: sha},
			MetaData: map[string]any{"sensorIds": []any{"1", "2"}},
		},
		Classification: job.Classification{Sample: sha, Type: "PE", Platform: "win"},
	})
}

func ctx(t *testing.T) context.Context { return testutil.Context(t, 20*time.Second) }

// requireNoKey checks that no error string holds an API key.
func requireNoKey(t *testing.T, errs ...error) {
	t.Helper()
	for _, err := range errs {
		require.Error(t, err)
		for _, k := range []string{analyzerKey, userKey, viewerKey, "k3y-S3CRET"} {
			require.NotContains(t, err.Error(), k)
			require.NotContains(t, fmt.Sprintf("%+v %#v", err, err), k)
		}
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cfg  sampledb.Config
		want string
	}{
		{"no url", sampledb.Config{APIKey: analyzerKey}, "URL is required"},
		{"bad scheme", sampledb.Config{URL: "ftp://h", APIKey: analyzerKey}, "scheme"},
		{"no host", sampledb.Config{URL: "https://", APIKey: analyzerKey}, "no host"},
		{"unparseable", sampledb.Config{URL: "https://h/%zz", APIKey: analyzerKey}, "does not parse"},
		{"query", sampledb.Config{URL: "https://h?token=x", APIKey: analyzerKey}, "query"},
		{"user info", sampledb.Config{URL: "https://u:p@h", APIKey: analyzerKey}, "user info"},
		{"no key", sampledb.Config{URL: "https://h"}, "SAMPLEDB_API_KEY"},
		{"key with newline", sampledb.Config{URL: "https://h", APIKey: analyzerKey + "\n"}, "SAMPLEDB_API_KEY"},
		{"negative timeout", sampledb.Config{URL: "https://h", APIKey: analyzerKey, Timeout: -1}, "Timeout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := sampledb.New(c.cfg)
			require.ErrorContains(t, err, c.want)
			requireNoKey(t, err)
		})
	}
	cfg := sampledb.Config{URL: "https://api.mnemonic.no/", APIKey: analyzerKey}
	c, err := sampledb.New(cfg)
	require.NoError(t, err)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		require.NotContains(t, s, analyzerKey)
		require.Contains(t, s, "api.mnemonic.no")
	}
}

// TestLifecycle runs every write call a worker makes over one job and
// checks what SampleDB saw, headers included.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, analyzerKey)
	created := b.job(t, "J-1")

	j, err := c.UpdateJob(ctx(t), "J-1", sampledb.StateExecuting)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateExecuting, j.State)
	require.Positive(t, j.StartTimestamp)
	require.Zero(t, j.EndTimestamp)
	require.False(t, j.AbortRequested)
	require.Equal(t, created.Message(), j.Message(), "submission and classification survive the round trip")

	got, err := c.GetJob(ctx(t), "J-1")
	require.NoError(t, err)
	require.Equal(t, j, got)

	tk, err := c.CreateTask(ctx(t), "J-1", "cbc.event_export")
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("1"), tk.ID)
	require.Equal(t, "cbc.event_export", tk.Worker)
	require.Equal(t, sampledb.TaskExecuting, tk.State)
	tk2, err := c.CreateTask(ctx(t), "J-1", "sophos.xdr_query")
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("2"), tk2.ID)

	tk, err = c.UpdateTask(ctx(t), "J-1", tk.ID, sampledb.TaskSuccess)
	require.NoError(t, err)
	require.Equal(t, sampledb.TaskSuccess, tk.State)
	require.Positive(t, tk.EndTimestamp)
	_, err = c.UpdateTask(ctx(t), "J-1", tk2.ID, sampledb.TaskCancelled)
	require.NoError(t, err)

	j, err = c.UpdateJob(ctx(t), "J-1", sampledb.StateSuccess)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateSuccess, j.State)
	require.Positive(t, j.EndTimestamp)

	// An abort after the end changes nothing.
	j, err = b.client(t, userKey).AbortJob(ctx(t), "J-1")
	require.NoError(t, err)
	require.Equal(t, sampledb.StateSuccess, j.State)
	require.False(t, j.AbortRequested)

	stored, _ := b.srv.Job("J-1")
	require.Equal(t, *j, stored)
	hist := b.srv.History("J-1")
	require.Len(t, hist, 6)
	for _, tr := range hist {
		require.True(t, tr.Applied())
		require.Equal(t, userAgent, tr.UserAgent)
	}

	reqs := b.seen()
	require.Len(t, reqs, 8)
	for _, r := range reqs {
		require.Equal(t, userAgent, r.header.Get("User-Agent"))
		require.Equal(t, "application/json", r.header.Get("Accept"))
		require.Contains(t, []string{analyzerKey, userKey}, r.header.Get("Argus-API-Key"))
		if r.method == http.MethodPut || r.method == http.MethodPost {
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
		}
	}
	require.Equal(t, jobRoot+"/J-1/task/1", reqs[4].path)
}

func TestRepeatedPutIsHarmless(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, analyzerKey)
	b.job(t, "J")
	for _, st := range []string{sampledb.StateExecuting, sampledb.StateExecuting, sampledb.StateTimeout, sampledb.StateTimeout} {
		j, err := c.UpdateJob(ctx(t), "J", st)
		require.NoError(t, err)
		require.Equal(t, st, j.State)
	}
	tk, err := c.CreateTask(ctx(t), "J", "cytomic.osquery")
	require.Error(t, err, "no task on a finished job")
	require.Nil(t, tk)
	require.ErrorIs(t, err, sampledb.ErrPrecondition)
	hist := b.srv.History("J")
	require.Len(t, hist, 2, "repeats are no transitions")
	require.Equal(t, sampledb.StateTimeout, hist[1].To)
}

func TestPrecondition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, analyzerKey)
	b.job(t, "J")
	_, err := c.UpdateJob(ctx(t), "J", sampledb.StateSuccess)
	require.ErrorIs(t, err, sampledb.ErrPrecondition, "enqueued → success is refused")

	_, err = c.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	tk, err := c.CreateTask(ctx(t), "J", "cbc.event_export")
	require.NoError(t, err)
	_, err = c.UpdateJob(ctx(t), "J", sampledb.StateSuccess)
	require.NoError(t, err)

	before := b.srv.Kit().Count(http.MethodPut, jobRoot)
	_, err = c.UpdateJob(ctx(t), "J", sampledb.StateFailed)
	require.ErrorIs(t, err, sampledb.ErrPrecondition)
	require.False(t, errors.Is(err, sampledb.ErrNotFound))
	var se *sampledb.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusPreconditionFailed, se.Status)
	require.Equal(t, http.MethodPut, se.Method)
	require.Equal(t, jobRoot+"/J", se.Path)
	require.NotEmpty(t, se.Messages)
	require.Contains(t, se.Messages[0].Message, "from success to failed")
	require.Contains(t, err.Error(), "from success to failed", "SampleDB's message is in the error text")
	require.False(t, httpc.IsRetryable(err))
	require.Equal(t, before+1, b.srv.Kit().Count(http.MethodPut, jobRoot), "a 412 is not retried")

	_, err = c.UpdateJob(ctx(t), "J", sampledb.StateEnqueued)
	require.ErrorIs(t, err, sampledb.ErrPrecondition)
	_, err = c.UpdateTask(ctx(t), "J", tk.ID, sampledb.TaskSuccess)
	require.NoError(t, err)
	_, err = c.UpdateTask(ctx(t), "J", tk.ID, sampledb.TaskFailed)
	require.ErrorIs(t, err, sampledb.ErrPrecondition)

	j, _ := b.srv.Job("J")
	require.Equal(t, sampledb.StateSuccess, j.State)
}

func TestStatusMapping(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	analyzer := b.client(t, analyzerKey)
	var errs []error
	check := func(err, sentinel error, status int, text string) {
		t.Helper()
		require.ErrorIs(t, err, sentinel)
		var se *sampledb.Error
		require.ErrorAs(t, err, &se)
		require.Equal(t, status, se.Status)
		require.Contains(t, err.Error(), text)
		require.False(t, httpc.IsRetryable(err))
		errs = append(errs, err)
	}
	n := b.srv.Kit().Count("", "")

	_, err := analyzer.GetJob(ctx(t), "nope")
	check(err, sampledb.ErrNotFound, http.StatusNotFound, "nope")
	_, err = analyzer.UpdateJob(ctx(t), "nope", sampledb.StateExecuting)
	check(err, sampledb.ErrNotFound, http.StatusNotFound, "404")
	_, err = analyzer.UpdateTask(ctx(t), "J", "77", sampledb.TaskSuccess)
	check(err, sampledb.ErrNotFound, http.StatusNotFound, "77")
	_, err = analyzer.CreateTask(ctx(t), "nope", "cbc.event_export")
	check(err, sampledb.ErrNotFound, http.StatusNotFound, "404")

	_, err = b.client(t, "wrong/k3y-S3CRET-9999").UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	check(err, sampledb.ErrUnauthorized, http.StatusUnauthorized, "check SAMPLEDB_API_KEY / role")
	require.True(t, sampledb.IsConfigError(err))
	require.NotContains(t, err.Error(), "wrong/k3y")

	viewer := b.client(t, viewerKey)
	_, err = viewer.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	check(err, sampledb.ErrForbidden, http.StatusForbidden, "check SAMPLEDB_API_KEY / role")
	require.True(t, sampledb.IsConfigError(err))
	_, err = viewer.AbortJob(ctx(t), "J")
	check(err, sampledb.ErrForbidden, http.StatusForbidden, "SAMPLEDB-USER")
	_, err = b.client(t, userKey).CreateTask(ctx(t), "J", "cbc.event_export")
	check(err, sampledb.ErrForbidden, http.StatusForbidden, "403")

	require.Equal(t, n+len(errs), b.srv.Kit().Count("", ""), "none of these is retried")
	requireNoKey(t, errs...)

	// The viewer may read.
	_, err = viewer.GetJob(ctx(t), "J")
	require.NoError(t, err)
	require.NoError(t, viewer.ListJobs(ctx(t), sampledb.ListOptions{}, func([]sampledb.Job) error { return nil }))

	// Bad arguments never reach the wire.
	_, err = analyzer.UpdateJob(ctx(t), "", sampledb.StateExecuting)
	require.Error(t, err)
	_, err = analyzer.UpdateTask(ctx(t), "J", "", sampledb.TaskSuccess)
	require.Error(t, err)
	_, err = analyzer.UpdateJob(ctx(t), "..", sampledb.StateExecuting)
	require.Error(t, err)
	require.Equal(t, n+len(errs)+2, b.srv.Kit().Count("", ""))
}

func TestAbortJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	c := b.client(t, analyzerKey)
	_, err := c.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)

	j, err := b.client(t, userKey).AbortJob(ctx(t), "J")
	require.NoError(t, err)
	require.True(t, j.AbortRequested)
	require.Equal(t, sampledb.StateExecuting, j.State, "abort only requests")

	j, err = c.GetJob(ctx(t), "J")
	require.NoError(t, err)
	require.True(t, j.AbortRequested)
	j, err = c.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	require.True(t, j.AbortRequested, "a PUT answer shows the flag")
	j, err = c.UpdateJob(ctx(t), "J", sampledb.StateAborted)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateAborted, j.State)

	_, err = c.AbortJob(ctx(t), "nope")
	require.ErrorIs(t, err, sampledb.ErrNotFound)
}

func TestListJobsPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, viewerKey)
	w := b.client(t, analyzerKey)
	var want []string
	for i := range 26 {
		id := fmt.Sprintf("job-%02d", i)
		b.job(t, id)
		if i%8 == 7 { // 3 finished jobs
			_, err := w.UpdateJob(ctx(t), id, sampledb.StateExecuting)
			require.NoError(t, err)
			_, err = w.UpdateJob(ctx(t), id, sampledb.StateFailed)
			require.NoError(t, err)
			continue
		}
		want = append(want, id)
	}
	before := len(b.seen())

	var got []string
	var sizes []int
	err := c.ListJobs(ctx(t), sampledb.ListOptions{PageSize: 5}, func(page []sampledb.Job) error {
		sizes = append(sizes, len(page))
		for _, j := range page {
			require.NotEqual(t, sampledb.StateFailed, j.State)
			got = append(got, j.ID)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, want, got, "23 active jobs, in order, each once")
	require.Equal(t, []int{5, 5, 5, 5, 3}, sizes)
	reqs := b.seen()[before:]
	require.Len(t, reqs, 5, "stops when offset+size reaches count")
	for i, r := range reqs {
		require.Equal(t, jobRoot, r.path)
		require.Equal(t, "5", r.query.Get("limit"))
		require.Equal(t, fmt.Sprint(5*i), r.query.Get("offset"))
		require.Empty(t, r.query["state"], "no state: the API's default")
	}

	// An explicit state filter: one listing per state, the parameter once.
	got = nil
	before = len(b.seen())
	err = c.ListJobs(ctx(t), sampledb.ListOptions{States: []string{sampledb.StateFailed, sampledb.StateSuccess, sampledb.StateFailed}}, func(page []sampledb.Job) error {
		for _, j := range page {
			got = append(got, j.ID)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, []string{"job-07", "job-15", "job-23"}, got)
	reqs = b.seen()[before:]
	require.Len(t, reqs, 2, "one request per distinct state")
	require.Equal(t, []string{"failed"}, reqs[0].query["state"])
	require.Equal(t, []string{"success"}, reqs[1].query["state"])
	require.Equal(t, "500", reqs[1].query.Get("limit"), "default page size")

	// An error from fn stops the listing.
	stop := errors.New("enough")
	before = len(b.seen())
	err = c.ListJobs(ctx(t), sampledb.ListOptions{PageSize: 2}, func([]sampledb.Job) error { return stop })
	require.ErrorIs(t, err, stop)
	require.Len(t, b.seen()[before:], 1)

	// Nothing matches: fn is never called.
	err = c.ListJobs(ctx(t), sampledb.ListOptions{States: []string{sampledb.StateTimeout}}, func([]sampledb.Job) error {
		t.Fatal("called with an empty page")
		return nil
	})
	require.NoError(t, err)
}

func TestSearchJobsPaging(t *testing.T) {
	t.Parallel()
	b := setup(t)
	w := b.client(t, analyzerKey)
	var want []string
	for i := range 20 {
		id := fmt.Sprintf("job-%02d", i)
		b.job(t, id)
		_, err := w.UpdateJob(ctx(t), id, sampledb.StateExecuting)
		require.NoError(t, err)
		if i%5 != 0 {
			_, err = w.UpdateJob(ctx(t), id, sampledb.StateAborted)
			require.NoError(t, err)
			want = append(want, id)
		}
	}
	before := len(b.seen())
	var got []string
	err := b.client(t, viewerKey).SearchJobs(ctx(t), sampledb.SearchCriteria{
		State:             []string{sampledb.StateAborted, sampledb.StateTimeout},
		SampleSha256:      []string{sha},
		Customer:          []string{"acme"},
		StartTimestamp:    time.Now().Add(-time.Hour).UnixMilli(),
		EndTimestamp:      time.Now().Add(time.Hour).UnixMilli(),
		TimeFieldStrategy: []string{"endTimestamp"},
		TimeMatchStrategy: "all",
		PageSize:          4,
	}, func(page []sampledb.Job) error {
		for _, j := range page {
			got = append(got, j.ID)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, want, got, "16 aborted jobs over 4 pages")
	reqs := b.seen()[before:]
	require.Len(t, reqs, 5, "the last page was full: one more request finds the end")
	for i, r := range reqs {
		require.Equal(t, http.MethodPost, r.method)
		require.Equal(t, jobRoot+"/search", r.path)
		require.Equal(t, fmt.Sprint(4*i), r.query.Get("offset"))
	}

	// Criteria that match nothing.
	err = b.client(t, viewerKey).SearchJobs(ctx(t), sampledb.SearchCriteria{State: []string{sampledb.StateAborted}, Customer: []string{"other"}},
		func([]sampledb.Job) error { t.Fatal("called"); return nil })
	require.NoError(t, err)
}

func TestRetryThrough503Window(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Name: "storm", Path: jobRoot, Status: http.StatusServiceUnavailable, For: 150 * time.Millisecond})
	j, err := b.client(t, analyzerKey).UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateExecuting, j.State)
	reqs := b.srv.Kit().Requests()
	require.GreaterOrEqual(t, len(reqs), 2)
	for _, r := range reqs[:len(reqs)-1] {
		require.Equal(t, http.StatusServiceUnavailable, r.Status)
	}
	require.Equal(t, http.StatusOK, reqs[len(reqs)-1].Status)
	require.Len(t, b.srv.History("J"), 1)
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second, Count: 1})
	_, err := b.client(t, analyzerKey).UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	reqs := b.srv.Kit().Requests()
	require.Len(t, reqs, 2)
	require.Equal(t, http.StatusTooManyRequests, reqs[0].Status)
	require.Equal(t, http.StatusOK, reqs[1].Status)
	require.GreaterOrEqual(t, reqs[1].Time.Sub(reqs[0].Time), time.Second, "waited Retry-After, not the 5ms backoff")
}

func TestRetryGivesUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Status: http.StatusBadGateway})

	// MaxElapsed bounds the retries.
	start := time.Now()
	_, err := b.client(t, analyzerKey, func(c *sampledb.Config) { c.MaxElapsed = 300 * time.Millisecond }).
		UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.ErrorContains(t, err, "giving up")
	var se *sampledb.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusBadGateway, se.Status)
	require.True(t, httpc.IsRetryable(err), "the caller may try again later")
	require.Less(t, time.Since(start), 3*time.Second)
	require.GreaterOrEqual(t, b.srv.Kit().Count(http.MethodPut, jobRoot), 2)

	// So does the context's deadline.
	c, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = b.client(t, analyzerKey).GetJob(c, "J")
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusBadGateway, se.Status)
	require.Less(t, time.Since(start), 5*time.Second)
	requireNoKey(t, err)
}

func TestRetryStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Status: http.StatusTooManyRequests, RetryAfter: 30 * time.Second})
	core, logs := observer.New(zap.DebugLevel)
	client := b.client(t, analyzerKey, func(c *sampledb.Config) { c.Logger = zap.New(core) })
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := client.UpdateJob(c, "J", sampledb.StateExecuting)
		done <- err
	}()
	// Cancel while the client waits out the Retry-After.
	require.Eventually(t, func() bool { return logs.FilterMessage("retrying SampleDB request").Len() == 1 }, 5*time.Second, time.Millisecond)
	entry := logs.All()[0]
	require.Equal(t, 30*time.Second, entry.ContextMap()["wait"])
	require.NotContains(t, fmt.Sprint(entry.ContextMap()), "k3y-S3CRET")
	cancel()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("UpdateJob did not return after cancel")
	}
	require.ErrorIs(t, err, context.Canceled)
	var se *sampledb.Error
	require.ErrorAs(t, err, &se, "the last answer travels with the context error")
	require.Equal(t, 30*time.Second, se.RetryAfter)
	require.Equal(t, 1, b.srv.Kit().Count("", ""))
}

func TestMalformedIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Malformed: true, Count: 1})
	_, err := b.client(t, analyzerKey).UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.ErrorIs(t, err, sampledb.ErrMalformed)
	require.ErrorContains(t, err, "malformed SampleDB response")
	require.False(t, httpc.IsRetryable(err))
	require.Equal(t, 1, b.srv.Kit().Count("", ""), "not retried")
	requireNoKey(t, err)
}

// TestTimeoutAfterApply: the PUT applies, its answer never comes; the
// client times out, asks again, and the repeat is a harmless 200.
func TestTimeoutAfterApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPut, AfterApply: true, Count: 1})
	j, err := b.client(t, analyzerKey, func(c *sampledb.Config) { c.Timeout = 200 * time.Millisecond }).
		UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	require.Equal(t, sampledb.StateExecuting, j.State)
	require.Equal(t, 2, b.srv.Kit().Count(http.MethodPut, jobRoot))
	require.Len(t, b.srv.History("J"), 1, "applied once")
}

// TestCreateTaskAdoptsUnansweredTask: a POST that created the task but got
// no answer is not repeated blindly: the client finds the task.
func TestCreateTaskAdoptsUnansweredTask(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	c := b.client(t, analyzerKey, func(c *sampledb.Config) { c.Timeout = 200 * time.Millisecond })
	_, err := c.UpdateJob(ctx(t), "J", sampledb.StateExecuting)
	require.NoError(t, err)
	other, err := c.CreateTask(ctx(t), "J", "sophos.xdr_query")
	require.NoError(t, err)

	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPost, AfterApply: true, Count: 1})
	tk, err := c.CreateTask(ctx(t), "J", "cbc.event_export")
	require.NoError(t, err)
	tasks := b.srv.Tasks("J")
	require.Len(t, tasks, 2, "exactly one task created for the call")
	require.Equal(t, tasks[1], *tk)
	require.NotEqual(t, other.ID, tk.ID)
	require.Equal(t, 2, b.srv.Kit().Count(http.MethodPost, jobRoot), "one unanswered POST, no second one")
	require.Equal(t, 1, b.srv.Kit().Count(http.MethodGet, jobRoot+"/J/task"))

	// A 503 certainly did not apply: plain retry, no listing.
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPost, Status: http.StatusServiceUnavailable, Count: 1})
	tk, err = c.CreateTask(ctx(t), "J", "cytomic.osquery")
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("3"), tk.ID)
	require.Equal(t, 1, b.srv.Kit().Count(http.MethodGet, jobRoot+"/J/task"))
	require.Len(t, b.srv.Tasks("J"), 3)

	// Unanswered POST, failed look-up, a 503 POST: the client still looks
	// before posting again.
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPost, AfterApply: true, Count: 1})
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodGet, Status: http.StatusServiceUnavailable, Count: 1})
	b.srv.Kit().Add(simhttp.Fault{Method: http.MethodPost, Status: http.StatusServiceUnavailable, Count: 1})
	tk, err = c.CreateTask(ctx(t), "J", "cblr.triage")
	require.NoError(t, err)
	require.Len(t, b.srv.Tasks("J"), 4, "no duplicate")
	require.Equal(t, b.srv.Tasks("J")[3], *tk)
	require.Equal(t, 3, b.srv.Kit().Count(http.MethodGet, jobRoot+"/J/task"))
}

// TestForeignServer talks to a SampleDB written by someone else: loose
// types and extra fields are accepted, a body that is not an envelope is
// not, and the key never leaks even when the server echoes it.
func TestForeignServer(t *testing.T) {
	t.Parallel()
	routes := map[string]struct {
		status int
		body   string
	}{
		"GET /sampledb/v2/job/12345": {200, `{"responseCode":200,"limit":0,"offset":0,"count":1,"size":1,"metaData":null,"messages":null,
			"currentUser":{"id":1},"data":{"id":12345,"state":"executing","abortRequested":true,"flags":["x"],
			"submission":{"id":"s","customer":"acme","sample":{"id":"` + sha + `"},"createdByUser":{"id":"not-a-number","name":"n"},"metaData":{"sensorId":7}},
			"classification":{"platform":"win","type":"PE","meta":null,"version":2},
			"enqueuedTimestamp":1.7e12,"startTimestamp":"1700000000123","endTimestamp":null,"tasks":[]}}`},
		"POST /sampledb/v2/job/J/task":    {200, `{"data":{"id":"t-9","worker":"cbc.event_export","state":"executing","startTimestamp":5}}`},
		"PUT /sampledb/v2/job/J/task/t-9": {200, `{"data":{"id":9,"worker":"cbc.event_export","state":"success"}}`},
		"GET /sampledb/v2/job":            {200, `{"count":"3","data":[{"id":"a","state":"enqueued"},{"id":"b","state":"executing"},{"id":"c","state":"executing"}]}`},
		"PUT /sampledb/v2/job/J":          {200, `{"responseCode":200,"data":{"state":"executing"}}`},
		"PUT /sampledb/v2/job/K":          {200, `[]`},
		"PUT /sampledb/v2/job/L":          {200, `{"responseCode":200,"data":null}`},
		"PUT /sampledb/v2/job/M":          {200, `{"responseCode":200,"data":{"id":"M","state":{"name":"executing"}}}`},
		"PUT /sampledb/v2/job/N":          {200, ``},
		"DELETE /sampledb/v2/job/J":       {401, `{"responseCode":401,"messages":[{"type":"ERROR","message":"Invalid API key ` + analyzerKey + `","messageTemplate":"x","parameter":{"a":1}}],"data":null}`},
		"DELETE /sampledb/v2/job/K":       {404, `<html>no such job; you sent Argus-API-Key: ` + analyzerKey + `</html>`},
		"DELETE /sampledb/v2/job/L":       {412, `{"messages":["plain string message"]}`},
		"POST /sampledb/v2/job/search":    {200, `{"count":0,"data":null}`},
	}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, ok := routes[r.Method+" "+r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rt.status)
		_, _ = w.Write([]byte(rt.body))
	}))
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(func() { hs.Close(); tr.CloseIdleConnections() })
	c, err := sampledb.New(sampledb.Config{URL: hs.URL + "/", APIKey: analyzerKey, Transport: tr, InitialInterval: time.Millisecond})
	require.NoError(t, err)

	j, err := c.GetJob(ctx(t), "12345")
	require.NoError(t, err)
	require.Equal(t, "12345", j.ID, "numeric id")
	require.True(t, j.AbortRequested)
	require.Equal(t, int64(1_700_000_000_000), j.EnqueuedTimestamp)
	require.Equal(t, int64(1_700_000_000_123), j.StartTimestamp)
	require.Zero(t, j.EndTimestamp)
	require.Equal(t, sha, j.Submission.Sample.ID)
	require.Equal(t, "n", j.Submission.CreatedByUser.Name, "a field of the wrong type does not lose the rest")
	require.Equal(t, json.Number("7"), j.Submission.MetaData["sensorId"], "metaData numbers keep every digit")
	require.Equal(t, "win", j.Classification.Platform)

	tk, err := c.CreateTask(ctx(t), "J", "cbc.event_export")
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("t-9"), tk.ID, "string task id")
	tk, err = c.UpdateTask(ctx(t), "J", tk.ID, sampledb.TaskSuccess)
	require.NoError(t, err)
	require.Equal(t, sampledb.ID("t-9"), tk.ID, "an answer about another task is not taken for ours")
	require.Equal(t, sampledb.TaskSuccess, tk.State)

	var ids []string
	require.NoError(t, c.ListJobs(ctx(t), sampledb.ListOptions{}, func(p []sampledb.Job) error {
		for _, j := range p {
			ids = append(ids, j.ID)
		}
		return nil
	}))
	require.Equal(t, []string{"a", "b", "c"}, ids, "count as a string; one page")
	require.NoError(t, c.SearchJobs(ctx(t), sampledb.SearchCriteria{}, func([]sampledb.Job) error { t.Fatal("called"); return nil }))

	var errs []error
	for _, id := range []string{"J", "K", "L", "M", "N"} {
		_, err := c.UpdateJob(ctx(t), id, sampledb.StateExecuting)
		require.ErrorIs(t, err, sampledb.ErrMalformed, id)
		errs = append(errs, err)
	}
	_, err = c.AbortJob(ctx(t), "J")
	require.ErrorIs(t, err, sampledb.ErrUnauthorized)
	require.ErrorContains(t, err, "Invalid API key [REDACTED]")
	errs = append(errs, err)
	_, err = c.AbortJob(ctx(t), "K")
	require.ErrorIs(t, err, sampledb.ErrNotFound)
	require.ErrorContains(t, err, "[REDACTED]")
	errs = append(errs, err)
	_, err = c.AbortJob(ctx(t), "L")
	require.ErrorIs(t, err, sampledb.ErrPrecondition)
	require.ErrorContains(t, err, "plain string message")
	errs = append(errs, err)
	_, err = c.AbortJob(ctx(t), "teapot")
	require.ErrorContains(t, err, "418")
	errs = append(errs, err)
	requireNoKey(t, errs...)
}

// TestKeyNeverInErrors collects the error of every failing call against
// the simulator.
func TestKeyNeverInErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	var errs []error
	keep := func(_ any, err error) { errs = append(errs, err) }
	bad := b.client(t, "nope/k3y-S3CRET-bad", func(c *sampledb.Config) { c.MaxElapsed = 50 * time.Millisecond })
	keep(bad.GetJob(ctx(t), "J"))
	keep(bad.UpdateJob(ctx(t), "J", sampledb.StateExecuting))
	keep(bad.AbortJob(ctx(t), "J"))
	keep(bad.CreateTask(ctx(t), "J", "x"))
	keep(bad.UpdateTask(ctx(t), "J", "1", "success"))
	keep(nil, bad.ListJobs(ctx(t), sampledb.ListOptions{}, func([]sampledb.Job) error { return nil }))
	keep(nil, bad.SearchJobs(ctx(t), sampledb.SearchCriteria{}, func([]sampledb.Job) error { return nil }))
	for _, err := range errs {
		require.NotContains(t, err.Error(), "nope/k3y")
	}
	c := b.client(t, analyzerKey, func(c *sampledb.Config) {
		c.MaxElapsed = 50 * time.Millisecond
		c.Timeout = 50 * time.Millisecond
	})
	keep(c.UpdateJob(ctx(t), "J", sampledb.StateSuccess))
	b.srv.Kit().Add(simhttp.Fault{Name: "s", Status: http.StatusInternalServerError})
	keep(c.GetJob(ctx(t), "J"))
	b.srv.Kit().Remove("s")
	b.srv.Kit().Add(simhttp.Fault{Name: "h", Hang: true})
	keep(c.GetJob(ctx(t), "J"))
	b.srv.Kit().Remove("h")
	b.srv.Kit().Add(simhttp.Fault{Name: "m", Malformed: true})
	keep(nil, c.ListJobs(ctx(t), sampledb.ListOptions{}, func([]sampledb.Job) error { return nil }))
	require.Len(t, errs, 11)
	requireNoKey(t, errs...)
}

func TestTransportErrorsAreRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.job(t, "J")
	// Hung for two attempts (each cut by the 100ms timeout), then fine.
	b.srv.Kit().Add(simhttp.Fault{Hang: true, Count: 2})
	j, err := b.client(t, analyzerKey, func(c *sampledb.Config) { c.Timeout = 100 * time.Millisecond }).GetJob(ctx(t), "J")
	require.NoError(t, err)
	require.Equal(t, "J", j.ID)
	require.Equal(t, 3, b.srv.Kit().Count(http.MethodGet, jobRoot))
	require.True(t, strings.HasPrefix(b.srv.Kit().Requests()[2].Path, jobRoot))
}
