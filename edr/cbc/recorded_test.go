package cbc_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// replay answers each route with recorded bodies, in turn (the last one
// repeats): a file of testdata/, "status:file", or "redirect=path" (a 302
// to path on the replay).
type replay struct {
	*edrtest.Replay
}

func newReplay(t *testing.T, routes map[string][]string) *replay {
	r := &replay{edrtest.NewReplay(t, `{"error_code":"NOT_FOUND","message":"no such route"}`)}
	for route, files := range routes {
		var mu sync.Mutex
		n := 0
		r.Handle(route, func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			f := files[min(n, len(files)-1)]
			n++
			mu.Unlock()
			status := http.StatusOK
			if i := strings.IndexByte(f, ':'); i > 0 {
				_, _ = fmt.Sscanf(f[:i], "%d", &status)
				f = f[i+1:]
			}
			if strings.HasPrefix(f, "redirect=") {
				w.Header().Set("Location", r.Server.URL+strings.TrimPrefix(f, "redirect="))
				w.WriteHeader(http.StatusFound)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write(edrtest.Testdata(t, f))
		})
	}
	return r
}

// count returns how many requests "METHOD /path" took.
func (r *replay) count(route string) int { return r.Hits(route) }

func (r *replay) driver(t *testing.T, mod func(*cbc.Config)) *cbc.Driver {
	cfg := cbc.Config{URL: r.Server.URL, OrgKey: orgKey, APIID: apiID, APISecret: apiSecret, UserAgent: "analysisfleet/test (cbc)",
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true})}
	if mod != nil {
		mod(&cfg)
	}
	d, err := cbc.New(cfg)
	require.NoError(t, err)
	return d
}

const orgPath = "/jobs/v1/orgs/" + orgKey

// The driver against the vendor's own recorded answers, Start → Poll →
// Collect → Cancel, and Find: the documented start answer (a numeric id),
// a progress with a free-text message (the job object, CREATED, says "not
// yet"), the SDK's progress of a completed job (counters, no message), a
// redirect to enriched_events rows, and the SDK's job list.
func TestRecordedAnswers(t *testing.T) {
	t.Parallel()
	r := newReplay(t, map[string][]string{
		"POST " + orgPath + "/jobs/start/event_export": {"doc_start_response.json"},
		"GET " + orgPath + "/jobs/4522/progress":       {"sdk_progress_foo.json", "sdk_progress_completed.json"},
		"GET " + orgPath + "/jobs/4522":                {"sdk_job_created.json"},
		"GET " + orgPath + "/jobs/4522/download":       {"redirect=/bucket/4522.json?X-Amz-Signature=abc"},
		"GET /bucket/4522.json":                        {"sdk_enriched_events_results.json"},
		"GET " + orgPath + "/jobs":                     {"sdk_jobs_list.json"},
	})
	d := r.driver(t, nil)
	c := edrtest.Ctx(t)
	// Decided a minute after the listed jobs were created.
	in := edr.Intent{Key: "job-1/cbc.event_export/1.1", At: time.Date(2022, 1, 4, 19, 20, 0, 0, time.UTC).UnixMilli()}

	ref, err := d.Start(c, edr.Target{SHA256: hitSHA}, in)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"4522"}`, string(ref))

	st, err := d.Poll(c, ref)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Progress: "FOO 16/34"}, st, "an unknown message: the job object (CREATED) says not yet")
	require.Equal(t, 1, r.count("GET "+orgPath+"/jobs/4522"))
	st, err = d.Poll(c, ref)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Done: true, Progress: "18/18"}, st)

	res, err := d.Collect(c, ref)
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 1, Hosts: []string{"scarpaci-win10-eap01"}, HostsTotal: 1}, res)
	require.ErrorIs(t, d.Cancel(c, ref), edr.ErrCancelUnsupported)

	// The recorded list holds two livequery_export jobs from the window:
	// not event exports, so not this start's.
	_, err = d.Find(c, edr.Target{SHA256: hitSHA}, in)
	require.ErrorIs(t, err, edr.ErrNotStarted)

	for _, q := range r.Requests() {
		if strings.HasPrefix(q.Path, "/bucket/") {
			require.Empty(t, q.Header.Get("X-Auth-Token"), "no credentials to the object store")
			continue
		}
		require.Equal(t, apiSecret+"/"+apiID, q.Header.Get("X-Auth-Token"))
		require.Equal(t, "analysisfleet/test (cbc)", q.Header.Get("User-Agent"))
		if q.Method == http.MethodPost {
			require.Equal(t, "application/json", q.Header.Get("Content-Type"))
		}
		if q.Path == orgPath+"/jobs" {
			require.Empty(t, q.RawQuery, "the first list request has no parameters, as the SDK's")
		}
	}
}

// The documented progress (FINISHED) and the job objects the SDK's
// fixtures hold: COMPLETED is done, FAILED fails with "errors".
func TestRecordedProgressAndJobs(t *testing.T) {
	t.Parallel()
	r := newReplay(t, map[string][]string{
		"GET " + orgPath + "/jobs/1/progress": {"doc_progress_finished.json"},
		// Ambiguous progress (0/0, a free-text message): the job decides.
		"GET " + orgPath + "/jobs/2/progress": {"sdk_progress_foo.json"},
		"GET " + orgPath + "/jobs/2":          {"sdk_job_workflow_completed.json"},
		"GET " + orgPath + "/jobs/3/progress": {"sdk_progress_foo.json"},
		"GET " + orgPath + "/jobs/3":          {"sdk_job_devices_export.json"},
		"GET " + orgPath + "/jobs/4/progress": {"sdk_progress_foo.json"},
		"GET " + orgPath + "/jobs/4":          {"sdk_job_download_blank.json"},
	})
	d := r.driver(t, nil)
	poll := func(id string) (edr.Status, error) { return d.Poll(edrtest.Ctx(t), edr.Ref(`{"id":"`+id+`"}`)) }
	st, err := poll("1")
	require.NoError(t, err)
	require.Equal(t, edr.Status{Done: true, Progress: "FINISHED 100000/100000"}, st)
	st, err = poll("2")
	require.NoError(t, err)
	require.Equal(t, edr.Status{Done: true, Progress: "COMPLETED 16/34"}, st)
	for _, id := range []string{"3", "4"} { // IN_PROGRESS and "": not yet
		st, err = poll(id)
		require.NoError(t, err)
		require.Equal(t, edr.Status{Progress: "FOO 16/34"}, st)
	}
}

// Error bodies as the SDK's tests record them: the vendor's code and text
// reach the error; a 200 carrying "errorMessage" is an error.
func TestRecordedErrors(t *testing.T) {
	t.Parallel()
	r := newReplay(t, map[string][]string{
		"POST " + orgPath + "/jobs/start/event_export": {"400:sdk_error_query_malformed.json"},
		"GET " + orgPath + "/jobs/7/progress":          {"400:sdk_error_invalid_enum.json"},
		"GET " + orgPath + "/jobs/8/progress":          {"sdk_error_message.json"},
	})
	d := r.driver(t, nil)
	_, err := d.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, edr.Intent{Key: "k", At: time.Now().UnixMilli()})
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "query_malformed_syntax", e.Code)
	require.Contains(t, err.Error(), "query was refused as malformed")

	_, err = d.Poll(edrtest.Ctx(t), edr.Ref(`{"id":"7"}`))
	e = asEdrErr(t, err)
	require.Equal(t, "INVALID_ENUM_VALUE", e.Code)
	require.Contains(t, e.Msg, "Malformed JSON input: terms.fields[0]")

	_, err = d.Poll(edrtest.Ctx(t), edr.Ref(`{"id":"8"}`))
	e = asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, http.StatusOK, e.Status)
	require.Contains(t, e.Msg, "Test Alpha Message")
}

// listServer answers the job list with pages built by the test.
func listServer(t *testing.T, page func(r *http.Request) string) (*cbc.Driver, *[]string) {
	var mu sync.Mutex
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != orgPath+"/jobs" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		_, _ = io.WriteString(w, page(r))
	}))
	t.Cleanup(srv.Close)
	d, err := cbc.New(cbc.Config{URL: srv.URL, OrgKey: orgKey, APIID: apiID, APISecret: apiSecret,
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true})})
	require.NoError(t, err)
	return d, &queries
}

// exportJob renders a listed event export job. params is the raw
// job_parameters.
func exportJob(id int, created time.Time, params string) string {
	return fmt.Sprintf(`{"id":%d,"type":"event_export","job_parameters":%s,"connector_id":"%s","org_key":"%s","status":"CREATED",`+
		`"create_time":"%s","last_update_time":"%s"}`, id, params, apiID, orgKey,
		created.UTC().Format("2006-01-02T15:04:05.000Z"), created.UTC().Format("2006-01-02T15:04:05.000Z"))
}

// Find against lists the simulator does not produce: other shapes of
// job_parameters, jobs that hide them, a service that ignores paging, a
// list newest first.
func TestFindOnOtherLists(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	in := edr.Intent{Key: "job-1/cbc.event_export/1.1", At: at.UnixMilli()}
	start := at.Add(-cbc.DefaultWindow).Format("2006-01-02T15:04:05.000Z")
	query := `{"query":"process_hash:` + hitSHA + `","time_range":{"start":"` + start + `"},"rows":10000}`
	find := func(d *cbc.Driver) (edr.Ref, error) { return d.Find(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, in) }

	// The parameters as the start request was sent, as a bare array, and
	// the time range re-rendered with an offset.
	for name, params := range map[string]string{
		"usbdevice shape": `{"job_parameters":{"query":` + query + `},"api_resource":"enriched_events","version":"v2"}`,
		"request shape":   `{"query":` + query + `,"api_resource":"enriched_events","version":"v2"}`,
		"one level down":  `{"job_parameters":` + query + `}`,
		"offset time": `{"job_parameters":{"query":` + strings.Replace(query, start,
			at.Add(-cbc.DefaultWindow).In(time.FixedZone("", 3600)).Format(time.RFC3339Nano), 1) + `}}`,
	} {
		d, _ := listServer(t, func(*http.Request) string {
			return `[` + exportJob(7, at.Add(time.Second), params) + `]`
		})
		ref, err := find(d)
		require.NoError(t, err, name)
		require.JSONEq(t, `{"id":"7"}`, string(ref), name)
	}

	// A recent event export that does not show its parameters (the SDK's
	// fixtures have "job_parameters":{"job_parameters":null}) could be
	// this one: Find cannot tell. An old one does not matter.
	hidden := `{"job_parameters":null}`
	d, _ := listServer(t, func(*http.Request) string {
		return `{"num_found":1,"results":[` + exportJob(8, at.Add(-time.Minute), hidden) + `]}`
	})
	_, err := find(d)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.NotErrorIs(t, err, edr.ErrNotStarted)
	require.Contains(t, err.Error(), "do not show their parameters")
	d, _ = listServer(t, func(*http.Request) string {
		return `{"num_found":1,"results":[` + exportJob(8, at.Add(-time.Hour), hidden) + `]}`
	})
	_, err = find(d)
	require.ErrorIs(t, err, edr.ErrNotStarted)

	// A service that says there are more but answers the same page again.
	other := `{"job_parameters":{"query":{"query":"process_hash:` + emptySHA + `","time_range":{"start":"` + start + `"},"rows":10000}}}`
	d, queries := listServer(t, func(*http.Request) string {
		return `{"num_found":5,"results":[` + exportJob(1, at, other) + `,` + exportJob(2, at, other) + `]}`
	})
	_, err = find(d)
	e = asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Contains(t, err.Error(), "did not page it")
	require.Equal(t, []string{"", "rows=2&start=2"}, *queries)

	// Newest first and already older than the cut-off: the rest of a long
	// list need not be read.
	d, queries = listServer(t, func(*http.Request) string {
		return `{"num_found":1000,"results":[` + exportJob(900, at.Add(-10*time.Minute), other) + `,` +
			exportJob(899, at.Add(-11*time.Minute), other) + `]}`
	})
	_, err = find(d)
	require.ErrorIs(t, err, edr.ErrNotStarted)
	require.Len(t, *queries, 1)

	// A list element without a usable id is skipped, not fatal; a list
	// that is not JSON is.
	d, _ = listServer(t, func(*http.Request) string { return `{"results":[{"id":"../x"},{"id":null}]}` })
	_, err = find(d)
	require.Error(t, err, "unreadable elements may be this start's")
	d, _ = listServer(t, func(*http.Request) string { return `<html>` })
	_, err = find(d)
	e = asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Contains(t, err.Error(), "malformed response")
}

// The incident of issue 10 through the driver: /download redirects to a
// small gzip holding a header and one endless line. The task fails,
// permanently, saying why; it does not succeed with one row.
func TestCollectRefusesEndlessLine(t *testing.T) {
	t.Parallel()
	export := edrtest.Gzip([]byte("event_id,device_name,process_hash\n"), bytes.Repeat([]byte("A"), 4<<20))
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("GET "+orgPath+"/jobs/1/download", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+"/bucket/1.csv.gz?X-Amz-Signature=abc", http.StatusFound)
	})
	mux.HandleFunc("GET /bucket/1.csv.gz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(export) })
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	d, err := cbc.New(cbc.Config{URL: srv.URL, OrgKey: orgKey, APIID: apiID, APISecret: apiSecret, MaxLine: 1 << 20,
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true})})
	require.NoError(t, err)
	_, err = d.Collect(edrtest.Ctx(t), edr.Ref(`{"id":"1"}`))
	e := asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Contains(t, err.Error(), "export line longer than 1048576 bytes")
	require.NotContains(t, err.Error(), "X-Amz-Signature")
}
