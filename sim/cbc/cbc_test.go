package cbc_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	simcbc "github.com/analysisfleet/analysisfleet/sim/cbc"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	org    = "ORG1"
	id     = "KEYID"
	secret = "KEYSECRET"
	token  = secret + "/" + id
	sha    = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
)

type env struct {
	sim *simcbc.Server
	srv *httptest.Server
	clk *testutil.Clock
}

func setup(t *testing.T, cfg simcbc.Config) *env {
	t.Helper()
	clk := testutil.NewClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	cfg.OrgKey, cfg.APIID, cfg.APISecret = org, id, secret
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	s := simcbc.New(cfg)
	srv := simtest.Serve(t, s)
	return &env{sim: s, srv: srv, clk: clk}
}

type answer struct {
	Status int
	Header http.Header
	Body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(a.Body, &m), string(a.Body))
	return m
}

func (e *env) do(t *testing.T, method, path string, hdr map[string]string, body string) answer {
	t.Helper()
	target := path
	if !strings.HasPrefix(path, "http") {
		target = e.srv.URL + path
	}
	req, err := http.NewRequestWithContext(context.Background(), method, target, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := e.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, b := simtest.Do(t, c, req)
	return answer{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

var auth = map[string]string{"X-Auth-Token": token}

func startBody(query string, rows int) string {
	b, _ := json.Marshal(map[string]any{
		"query":        map[string]any{"query": query, "time_range": map[string]any{"start": "2026-04-01T00:00:00-00:00"}, "rows": rows},
		"api_resource": "enriched_events", "version": "v2",
	})
	return string(b)
}

func (e *env) start(t *testing.T, query string, rows int) string {
	t.Helper()
	a := e.do(t, "POST", "/jobs/v1/orgs/"+org+"/jobs/start/event_export", auth, startBody(query, rows))
	require.Equal(t, http.StatusOK, a.Status, string(a.Body))
	m := a.json(t)
	require.Equal(t, "event_export", m["type"])
	require.Equal(t, "CREATED", m["status"])
	n, ok := m["id"].(float64)
	require.True(t, ok, "the id is a JSON number, as in the document")
	return strconv.FormatInt(int64(n), 10)
}

func jobPath(job, route string) string { return "/jobs/v1/orgs/" + org + "/jobs/" + job + "/" + route }

func TestAuth(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{})
	job := e.start(t, "process_hash:"+sha, 10)
	for _, route := range []struct{ method, path, body string }{
		{"POST", "/jobs/v1/orgs/%s/jobs/start/event_export", startBody("process_hash:"+sha, 10)},
		{"GET", "/jobs/v1/orgs/%s/jobs/" + job + "/progress", ""},
		{"GET", "/jobs/v1/orgs/%s/jobs/" + job + "/download", ""},
		{"GET", "/jobs/v1/orgs/%s/jobs/" + job, ""},
		{"GET", "/jobs/v1/orgs/%s/jobs", ""},
	} {
		p := strings.Replace(route.path, "%s", org, 1)
		for _, tok := range []string{"", secret, id + "/" + secret, secret + "/" + id + "x", "Bearer " + token} {
			a := e.do(t, route.method, p, map[string]string{"X-Auth-Token": tok}, route.body)
			require.Equal(t, http.StatusUnauthorized, a.Status, "%s %q", p, tok)
			require.NotEmpty(t, a.json(t)["message"])
		}
		a := e.do(t, route.method, strings.Replace(route.path, "%s", "OTHER", 1), auth, route.body)
		require.Equal(t, http.StatusForbidden, a.Status)
	}
	require.Equal(t, 1, e.sim.TotalStarts())
}

func TestStartValidation(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{})
	p := "/jobs/v1/orgs/" + org + "/jobs/start/event_export"
	for _, body := range []string{
		`not json`,
		`{"query":{"query":"process_hash:` + sha + `","rows":5},"version":"v2"}`,
		`{"query":{"query":"process_hash:` + sha + `","rows":5},"api_resource":"processes","version":"v2"}`,
		`{"api_resource":"enriched_events"}`,
		`{"query":{"query":" ","rows":5},"api_resource":"enriched_events"}`,
		`{"query":{"query":"process_hash:` + sha + `"},"api_resource":"enriched_events"}`,
		`{"query":{"query":"process_hash:` + sha + `","rows":0},"api_resource":"enriched_events"}`,
		`{"query":{"query":"process_hash:` + sha + `","rows":5,"time_range":{"start":"yesterday"}},"api_resource":"enriched_events"}`,
	} {
		a := e.do(t, "POST", p, auth, body)
		require.Equal(t, http.StatusBadRequest, a.Status, body)
	}
	require.Zero(t, e.sim.TotalStarts())
	// The document's own example body is accepted.
	a := e.do(t, "POST", p, auth, `{"query":{"query":"TTP:INJECT_CODE OR TTP:HAS_INJECTED_CODE","time_range":{"start":"2020-05-01T00:00:00-00:00"},"rows":100000},"api_resource":"enriched_events","version":"v2"}`)
	require.Equal(t, http.StatusOK, a.Status, string(a.Body))
	require.EqualValues(t, 4522, a.json(t)["id"])
	require.Equal(t, 1, e.sim.TotalStarts())
	require.Equal(t, 0, e.sim.Starts(sha))
}

func TestProgressAndDownloadTimeline(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: 20 * time.Second, ReadyAfter: 5 * time.Second, URLTTL: time.Minute,
		Message: simcbc.MessageAlways})
	e.sim.SetHits(sha, "h1", "h2")
	job := e.start(t, "process_hash:"+sha, 100)
	progress := func() map[string]any { return e.do(t, "GET", jobPath(job, "progress"), auth, "").json(t) }
	download := func() answer { return e.do(t, "GET", jobPath(job, "download"), auth, "") }

	require.Equal(t, map[string]any{"num_total": 0.0, "num_completed": 0.0, "message": "QUEUED"}, progress())
	require.Equal(t, http.StatusNotFound, download().Status)
	e.clk.Advance(20 * time.Second)
	require.Equal(t, map[string]any{"num_total": 6.0, "num_completed": 3.0, "message": "IN_PROGRESS"}, progress())
	require.Equal(t, "IN_PROGRESS", e.sim.Jobs()[0].Status)
	e.clk.Advance(10 * time.Second)
	require.Equal(t, map[string]any{"num_total": 6.0, "num_completed": 6.0, "message": "FINISHED"}, progress())
	require.Equal(t, http.StatusNotFound, download().Status, "not ready for ReadyAfter")
	e.clk.Advance(5 * time.Second)
	a := download()
	require.Equal(t, http.StatusFound, a.Status)
	loc, err := url.Parse(a.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, e.srv.URL, loc.Scheme+"://"+loc.Host)
	require.Equal(t, "/presigned/"+job, loc.Path)
	require.Equal(t, "60", loc.Query().Get("X-Amz-Expires"))
	require.Len(t, loc.Query().Get("X-Amz-Signature"), 64)
	require.Equal(t, []string{loc.String()}, e.sim.IssuedURLs())

	got := e.do(t, "GET", loc.String(), nil, "")
	require.Equal(t, http.StatusOK, got.Status)
	require.Equal(t, "text/csv", got.Header.Get("Content-Type"))
	recs, err := csv.NewReader(bytes.NewReader(got.Body)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, simcbc.CSVHeader, recs[0])
	require.Len(t, recs, 1+2*simcbc.RowsPerDevice)
	for _, r := range recs[1:] {
		require.Equal(t, sha, r[3])
		require.Contains(t, []string{"h1", "h2"}, r[2])
	}

	// Unknown jobs and routes.
	require.Equal(t, http.StatusNotFound, e.do(t, "GET", jobPath("999", "progress"), auth, "").Status)
	require.Equal(t, http.StatusNotFound, e.do(t, "GET", jobPath("abc", "download"), auth, "").Status)
	require.Equal(t, http.StatusNotFound, e.do(t, "GET", "/nope", auth, "").Status)
}

func TestPresignedURLRules(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{URLTTL: time.Minute})
	job := e.start(t, "process_hash:"+sha, 100)
	issue := func() string {
		a := e.do(t, "GET", jobPath(job, "download"), auth, "")
		require.Equal(t, http.StatusFound, a.Status)
		return a.Header.Get("Location")
	}
	u := issue()

	for _, h := range []map[string]string{auth, {"Authorization": "AWS4-HMAC-SHA256 Credential=x"}} {
		a := e.do(t, "GET", u, h, "")
		require.Equal(t, http.StatusBadRequest, a.Status, "two auth mechanisms")
		require.Contains(t, string(a.Body), "<Code>InvalidArgument</Code>")
	}

	tampered := strings.Replace(u, "X-Amz-Expires=60", "X-Amz-Expires=6000", 1)
	a := e.do(t, "GET", tampered, nil, "")
	require.Equal(t, http.StatusForbidden, a.Status)
	require.Contains(t, string(a.Body), "<Code>SignatureDoesNotMatch</Code>")
	require.Equal(t, "application/xml", a.Header.Get("Content-Type"))
	otherJob := strings.Replace(u, "/presigned/"+job, "/presigned/1", 1)
	require.Equal(t, http.StatusForbidden, e.do(t, "GET", otherJob, nil, "").Status)

	require.Equal(t, http.StatusOK, e.do(t, "GET", u, nil, "").Status)
	e.clk.Advance(time.Minute + time.Second)
	a = e.do(t, "GET", u, nil, "")
	require.Equal(t, http.StatusForbidden, a.Status)
	require.Contains(t, string(a.Body), "Request has expired")

	u2 := issue()
	require.NotEqual(t, u, u2)
	require.Equal(t, http.StatusOK, e.do(t, "GET", u2, nil, "").Status)
	e.sim.ExpireURLs()
	require.Equal(t, http.StatusForbidden, e.do(t, "GET", u2, nil, "").Status)
	require.Equal(t, http.StatusOK, e.do(t, "GET", issue(), nil, "").Status, "a fresh URL works after ExpireURLs")
}

func TestData(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{Format: simcbc.FormatNDJSON})
	rows := func(job string) []map[string]any {
		a := e.do(t, "GET", jobPath(job, "download"), auth, "")
		require.Equal(t, http.StatusFound, a.Status)
		got := e.do(t, "GET", a.Header.Get("Location"), nil, "")
		require.Equal(t, http.StatusOK, got.Status)
		var out []map[string]any
		sc := bufio.NewScanner(bytes.NewReader(got.Body))
		for sc.Scan() {
			var m map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &m))
			out = append(out, m)
		}
		return out
	}
	e.sim.SetHits(strings.ToUpper(sha), "a", "b", "c")
	require.Len(t, rows(e.start(t, "process_hash:"+sha, 100)), 9)
	require.Len(t, rows(e.start(t, "process_hash:"+sha, 4)), 4, "rows limit")
	require.Len(t, rows(e.start(t, "device_name:a", 100)), 0, "no hash, nothing")
	e.sim.SetHits(sha)
	require.Len(t, rows(e.start(t, "process_hash:"+sha, 100)), 0)
	require.Equal(t, 3, e.sim.Starts(sha))

	// Hashes nobody configured: 0–4 devices, derived from the hash.
	seen := map[int]bool{}
	for _, h := range []string{"00", "01", "02", "03", "04", "05"} {
		other := h + sha[2:]
		n := len(rows(e.start(t, "process_hash:"+other, 100)))
		require.Equal(t, n, len(rows(e.start(t, "process_hash:"+other, 100))), "deterministic")
		require.Zero(t, n%simcbc.RowsPerDevice)
		require.LessOrEqual(t, n, 4*simcbc.RowsPerDevice)
		seen[n] = true
	}
	require.True(t, seen[0], "some hashes are found nowhere")
	require.Greater(t, len(seen), 1)

	// Events older than time_range.start are not exported.
	body := `{"query":{"query":"process_hash:` + "00" + sha[2:] + `","time_range":{"start":"2026-06-01T00:00:00Z"},"rows":5},"api_resource":"enriched_events"}`
	e.sim.SetHits("00"+sha[2:], "x")
	a := e.do(t, "POST", "/jobs/v1/orgs/"+org+"/jobs/start/event_export", auth, body)
	require.Equal(t, http.StatusOK, a.Status)
	require.Len(t, rows(strconv.FormatInt(int64(a.json(t)["id"].(float64)), 10)), 0)

	jobs := e.sim.Jobs()
	require.Equal(t, int64(4522), jobs[0].ID)
	require.Equal(t, "process_hash:"+sha, jobs[0].Query)
	require.Equal(t, 100, jobs[0].Rows)
	require.Equal(t, "FINISHED", jobs[0].Status)
}

func TestFormats(t *testing.T) {
	t.Parallel()
	parse := map[string]func(t *testing.T, b []byte) int{
		simcbc.FormatCSV: csvRows,
		simcbc.FormatCSVGz: func(t *testing.T, b []byte) int {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			require.NoError(t, err)
			raw, err := io.ReadAll(zr)
			require.NoError(t, err)
			return csvRows(t, raw)
		},
		simcbc.FormatZip: func(t *testing.T, b []byte) int {
			zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
			require.NoError(t, err)
			require.Len(t, zr.File, 2)
			n := 0
			for _, f := range zr.File {
				rc, err := f.Open()
				require.NoError(t, err)
				raw, err := io.ReadAll(rc)
				rc.Close()
				require.NoError(t, err)
				n += csvRows(t, raw)
			}
			return n
		},
		simcbc.FormatJSON: func(t *testing.T, b []byte) int {
			var v struct {
				Results []map[string]any `json:"results"`
			}
			require.NoError(t, json.Unmarshal(b, &v))
			for _, r := range v.Results {
				require.NotEmpty(t, r["device_name"])
			}
			return len(v.Results)
		},
		simcbc.FormatNDJSON: func(t *testing.T, b []byte) int {
			return len(strings.Split(strings.TrimSpace(string(b)), "\n"))
		},
	}
	for format, count := range parse {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			e := setup(t, simcbc.Config{Format: format})
			e.sim.SetHits(sha, "a", "b", "c")
			job := e.start(t, "process_hash:"+sha, 100)
			a := e.do(t, "GET", jobPath(job, "download"), auth, "")
			got := e.do(t, "GET", a.Header.Get("Location"), nil, "")
			require.Equal(t, http.StatusOK, got.Status)
			require.Equal(t, 9, count(t, got.Body))
		})
	}
	require.Panics(t, func() { simcbc.New(simcbc.Config{Format: "xml"}) })
}

func csvRows(t *testing.T, b []byte) int {
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, simcbc.CSVHeader, recs[0])
	return len(recs) - 1
}

// A failed job says so in its job object, with a reason; its progress
// freezes (the documented messages have no failure spelling) and its output
// never becomes available.
func TestFail(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: 10 * time.Second, Message: simcbc.MessageAlways})
	e.sim.SetHits(sha, "h1", "h2")
	job := e.start(t, "process_hash:"+sha, 10)
	e.clk.Advance(15 * time.Second)
	require.True(t, e.sim.FailWith(e.sim.Jobs()[0].ID, "disk full"))
	require.False(t, e.sim.Fail(1))
	e.clk.Advance(time.Hour)
	require.Equal(t, map[string]any{"num_total": 6.0, "num_completed": 3.0, "message": "IN_PROGRESS"},
		e.do(t, "GET", jobPath(job, "progress"), auth, "").json(t))
	obj := e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs/"+job, auth, "").json(t)
	require.Equal(t, "FAILED", obj["status"])
	require.Equal(t, "disk full", obj["errors"])
	require.Equal(t, simcbc.StatusFailed, e.sim.Jobs()[0].Status)
	require.Equal(t, http.StatusNotFound, e.do(t, "GET", jobPath(job, "download"), auth, "").Status)
}

// The job object has the fields and types of the SDK's model and fixtures,
// and its status follows the job: CREATED until the output is ready, then
// COMPLETED.
func TestJobObject(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: 10 * time.Second, ReadyAfter: 5 * time.Second, Message: simcbc.MessageNever})
	e.sim.SetHits(sha, "h1")
	body := `{"query":{"query":"process_hash:` + sha + `","time_range":{"start":"2026-04-01T00:00:00.250Z"},"rows":10},"api_resource":"enriched_events","version":"v2"}`
	a := e.do(t, "POST", "/jobs/v1/orgs/"+org+"/jobs/start/event_export", auth, body)
	require.Equal(t, http.StatusOK, a.Status)
	created := a.json(t)
	require.Equal(t, "CREATED", created["status"])
	job := strconv.FormatInt(int64(created["id"].(float64)), 10)
	get := func() map[string]any { return e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs/"+job, auth, "").json(t) }

	obj := get()
	require.EqualValues(t, 4522, obj["id"])
	require.Equal(t, "event_export", obj["type"])
	require.Equal(t, "CREATED", obj["status"])
	require.Equal(t, org, obj["org_key"])
	require.Equal(t, id, obj["connector_id"])
	require.Equal(t, "2026-05-01T00:00:00.000Z", obj["create_time"])
	require.NotContains(t, obj, "errors")
	params, err := json.Marshal(obj["job_parameters"])
	require.NoError(t, err)
	require.JSONEq(t, `{"job_parameters":{"query":{"query":"process_hash:`+sha+`","time_range":{"start":"2026-04-01T00:00:00.250Z"},"rows":10}},
		"api_resource":"enriched_events","version":"v2"}`, string(params))
	require.Equal(t, map[string]any{"num_total": 0.0, "num_completed": 0.0}, obj["progress"])
	require.Equal(t, "2026-04-01T00:00:00.250Z", e.sim.Jobs()[0].TimeStart)

	e.clk.Advance(20 * time.Second)
	require.Equal(t, "CREATED", get()["status"], "finished, output not ready yet")
	e.clk.Advance(5 * time.Second)
	obj = get()
	require.Equal(t, "COMPLETED", obj["status"])
	require.Equal(t, map[string]any{"num_total": 3.0, "num_completed": 3.0}, obj["progress"])
	require.Equal(t, "2026-05-01T00:00:25.000Z", obj["last_update_time"])
	require.Equal(t, http.StatusNotFound, e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs/4600", auth, "").Status)
}

// By default, the message is omitted for even job IDs only.
func TestProgressMessageSometimes(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{})
	even, odd := e.start(t, "process_hash:"+sha, 10), e.start(t, "process_hash:"+sha, 10)
	require.NotContains(t, e.do(t, "GET", jobPath(even, "progress"), auth, "").json(t), "message")
	require.Equal(t, "FINISHED", e.do(t, "GET", jobPath(odd, "progress"), auth, "").json(t)["message"])
}

// The job list answers as the SDK reads it: {"num_found":N,"results":[…]},
// every job, oldest first; with ListPageSize, pages by start/rows.
func TestJobList(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{ListPageSize: 2})
	list := func(query string) (float64, []float64) {
		a := e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs"+query, auth, "")
		require.Equal(t, http.StatusOK, a.Status, string(a.Body))
		var v struct {
			NumFound float64          `json:"num_found"`
			Results  []map[string]any `json:"results"`
		}
		require.NoError(t, json.Unmarshal(a.Body, &v))
		var ids []float64
		for _, r := range v.Results {
			require.Equal(t, "event_export", r["type"])
			ids = append(ids, r["id"].(float64))
		}
		return v.NumFound, ids
	}
	n, ids := list("")
	require.Zero(t, n)
	require.Empty(t, ids)
	for range 5 {
		e.start(t, "process_hash:"+sha, 10)
	}
	n, ids = list("")
	require.EqualValues(t, 5, n)
	require.Equal(t, []float64{4522, 4523}, ids)
	_, ids = list("?start=2&rows=2")
	require.Equal(t, []float64{4524, 4525}, ids)
	_, ids = list("?start=4&rows=10")
	require.Equal(t, []float64{4526}, ids)
	_, ids = list("?start=1&rows=1")
	require.Equal(t, []float64{4523}, ids)
	require.Equal(t, http.StatusBadRequest, e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs?rows=x", auth, "").Status)
	require.Equal(t, http.StatusUnauthorized, e.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs", nil, "").Status)
	require.Equal(t, http.StatusForbidden, e.do(t, "GET", "/jobs/v1/orgs/OTHER/jobs", auth, "").Status)

	whole := setup(t, simcbc.Config{})
	for range 3 {
		whole.start(t, "process_hash:"+sha, 10)
	}
	a := whole.do(t, "GET", "/jobs/v1/orgs/"+org+"/jobs", auth, "").json(t)
	require.EqualValues(t, 3, a["num_found"])
	require.Len(t, a["results"], 3)
}

func TestFaultsOverHTTP(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{})
	job := e.start(t, "process_hash:"+sha, 10)
	f, _ := json.Marshal(simhttp.Fault{Path: "/jobs/v1/", Status: 429, RetryAfter: 2 * time.Second, Count: 1})
	require.Equal(t, http.StatusCreated, e.do(t, "POST", "/_sim/faults", nil, string(f)).Status)
	a := e.do(t, "GET", jobPath(job, "progress"), auth, "")
	require.Equal(t, http.StatusTooManyRequests, a.Status)
	require.Equal(t, "2", a.Header.Get("Retry-After"))
	require.Equal(t, http.StatusOK, e.do(t, "GET", jobPath(job, "progress"), auth, "").Status)
	require.Equal(t, 2, e.sim.Kit().Count("GET", jobPath(job, "progress")))
}

// Close releases a request held by a Hang fault.
func TestCloseReleasesHungRequests(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{})
	e.sim.Kit().Add(simhttp.Fault{Hang: true})
	req, err := http.NewRequestWithContext(context.Background(), "GET", e.srv.URL+jobPath("1", "progress"), nil)
	require.NoError(t, err)
	simtest.CloseReleases(t, e.sim, e.srv.Client(), req, func() bool { return len(e.sim.Kit().Requests()) == 1 })
}

// SetRunFor makes one sample's exports run longer (worker dev --hold);
// the others keep Config.RunFor.
func TestSetRunFor(t *testing.T) {
	t.Parallel()
	e := setup(t, simcbc.Config{QueuedFor: time.Second, RunFor: 2 * time.Second})
	other := strings.Repeat("b", 64)
	e.sim.SetRunFor(strings.ToUpper(sha), time.Minute)
	slow := e.start(t, "process_hash:"+sha, 100)
	fast := e.start(t, "process_hash:"+other, 100)
	status := func(job string) string {
		for _, j := range e.sim.Jobs() {
			if strconv.FormatInt(j.ID, 10) == job {
				return j.Status
			}
		}
		return ""
	}
	e.clk.Advance(3 * time.Second)
	require.Equal(t, "FINISHED", status(fast))
	require.Equal(t, "IN_PROGRESS", status(slow))
	e.clk.Advance(58 * time.Second)
	require.Equal(t, "FINISHED", status(slow))

	e.sim.SetRunFor(sha, 0) // back to Config.RunFor for new exports
	again := e.start(t, "process_hash:"+sha, 100)
	e.clk.Advance(3 * time.Second)
	require.Equal(t, "FINISHED", status(again))
}
