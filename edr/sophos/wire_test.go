package sophos_test

import (
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	simsophos "github.com/analysisfleet/analysisfleet/sim/sophos"
)

// captureOn puts a Recorder in front of b's transport.
func captureOn(b *bundle) *edrtest.Recorder {
	c := &edrtest.Recorder{Next: b.cfg.Transport}
	b.cfg.Transport = c
	return c
}

// The real clients (Sophos's own SHA-256 hunt, its Postman collection, the
// SEKOIA connector) send a time window with every run; a run without one
// may search less than the data lake holds. The window is derived from the
// intent, so the same intent always sends the same request.
func TestStartSendsTimeWindowAndNameFromIntent(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	c := captureOn(b)
	at := time.Date(2025, 3, 1, 12, 0, 0, 123e6, time.UTC)
	in := edr.Intent{Key: "job-1/sophos.xdr_query/7.1", At: at.UnixMilli()}
	for range 2 { // two workers sending the same intent
		_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), in)
		require.NoError(t, err)
	}
	other := in
	other.Key = "job-1/sophos.xdr_query/7.2"
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), other)
	require.NoError(t, err)

	starts := c.Matching(http.MethodPost, sophos.RunsPath)
	require.Len(t, starts, 3)
	require.Equal(t, string(starts[0].Body), string(starts[1].Body), "the same intent sends the same request")

	var body struct {
		AdHocQuery map[string]any `json:"adHocQuery"`
		Name       string         `json:"name"`
		From, To   string
	}
	require.NoError(t, json.Unmarshal(starts[0].Body, &body))
	want, _ := sophos.Query(hitSHA)
	require.Equal(t, map[string]any{"template": want}, body.AdHocQuery, "the name is a field of the run, not of the query")
	require.Equal(t, "2025-01-30T12:00:00.123Z", body.From, "30 days before the intent")
	require.Equal(t, "2025-03-01T12:00:00.123Z", body.To, "the intent's instant")
	require.True(t, strings.HasPrefix(body.Name, "analysisfleet job-1 "), body.Name)

	var otherBody struct{ Name string }
	require.NoError(t, json.Unmarshal(starts[2].Body, &otherBody))
	require.NotEqual(t, body.Name, otherBody.Name, "another intent, another name")
}

// Results are paged with pageSize and pageFromKey (Sophos's Postman
// collection, SEKOIA's connector); the guide's maxSize alone is not the
// documented page size.
func TestResultsAskForPageSize(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	c := captureOn(b)
	b.sim.SetHits(hitSHA, 2500, "h1")
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 2500, res.Rows)
	pages := c.Matching(http.MethodGet, "/results")
	require.Len(t, pages, 3)
	for i, p := range pages {
		require.Equal(t, "1000", p.Query().Get("pageSize"), "page %d", i)
		require.Equal(t, i > 0, p.Query().Has("pageFromKey"), "page %d", i)
	}
}

// replay is a Sophos stand-in that answers from fixed bodies: token,
// start, status, one results page and cancel. Handlers may be swapped per
// test before the first request.
type replay struct {
	*edrtest.Replay
}

func newReplay(t *testing.T) *replay {
	r := &replay{edrtest.NewReplay(t, `{"error":"NotFound","message":"no such route in the replay"}`)}
	r.on("POST "+sophos.TokenPath, 200, readFixture(t, "sekoia-token.200.json"))
	return r
}

func (r *replay) on(key string, status int, body string) {
	r.Answer(key, status, "application/json", []byte(body))
}

func (r *replay) config() sophos.Config {
	return sophos.Config{URL: r.Server.URL, AuthURL: r.Server.URL, ClientID: clientID, ClientSecret: secret, TenantID: tenant,
		PollEvery: 10 * time.Millisecond, Timeout: 5 * time.Second, Transport: r.Server.Client().Transport}
}

// driver is a driver on the replay.
func (r *replay) driver(t *testing.T) *sophos.Driver {
	t.Helper()
	d, err := sophos.New(r.config())
	require.NoError(t, err)
	return d
}

func readFixture(t *testing.T, name string) string {
	t.Helper()
	raw, err := readTestdata(name)
	require.NoError(t, err)
	return raw
}

func readTestdata(name string) (string, error) {
	b, err := testdataFS.ReadFile("testdata/" + name)
	return string(b), err
}

//go:embed testdata
var testdataFS embed.FS

const sekoiaRunID = "7d00cf17-a987-4d07-ac88-93d4df89fa73"

func TestCancelSendsEmptyObject(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	r.Handle("POST /cancel", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if string(body) != "{}" { // Sophos's collection sends {}; an empty body is not JSON
			w.WriteHeader(http.StatusBadRequest)
			_, _ = fmt.Fprintf(w, `{"error":"BadRequest","message":"body %q is not a JSON object"}`, body)
			return
		}
		_, _ = io.WriteString(w, readFixture(t, "postman2026-cancel.200.json"))
	})
	d := r.driver(t)
	require.NoError(t, d.Cancel(edrtest.Ctx(t), edr.Ref(`{"runId":"`+sekoiaRunID+`"}`)))
	require.Equal(t, 1, r.Hits("POST /cancel"))
}

// Sophos errors are {error, message, correlationId, code, createdAt,
// requestId, docUrl}; the correlation ID is what Sophos support asks for.
func TestErrorsCarryCorrelationID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("the query references a column that does not exist; ", 6)
	postmanShape := `{"error":"BadRequest","message":"` + long + `","correlationId":"5b7f6c1e-0d2a-4c55-9a0e-2f1d3c4b5a69",` +
		`"code":"queryInvalid","createdAt":"2026-01-15T10:30:00.000Z","requestId":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",` +
		`"docUrl":"https://developer.sophos.com/"}`
	r := newReplay(t)
	r.on("POST "+sophos.RunsPath, http.StatusBadRequest, postmanShape)
	d := r.driver(t)
	_, err := d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "queryInvalid", e.Code)
	require.Contains(t, err.Error(), "correlationId 5b7f6c1e-0d2a-4c55-9a0e-2f1d3c4b5a69")
	require.Contains(t, err.Error(), "requestId a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
	require.Contains(t, err.Error(), "the query references a column")
}

// SEKOIA recorded Sophos refusing a window whose from is in the future
// (the worker's clock ahead of Sophos's): the same request succeeds once
// Sophos's clock has caught up, so it is retried, not failed.
func TestFromInTheFutureIsRetryable(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	r.on("POST "+sophos.RunsPath, http.StatusBadRequest, readFixture(t, "sekoia-run.400.json"))
	d := r.driver(t)
	_, err := d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.Equal(t, http.StatusBadRequest, e.Status)
	require.Equal(t, "ValidationException", e.Code, "the integer code 400 says less than the error name")
	require.True(t, e.Retryable, "%v", err)
	require.Positive(t, e.RetryAfter)
	require.Contains(t, err.Error(), "correlationId 3f2aa7bc-bbb1-4f93-8d56-acad5f6ad3dc")
}

// finishedRun answers every status request: finished, succeeded.
func finishedRun(t *testing.T, r *replay) {
	r.on("POST "+sophos.RunsPath, http.StatusCreated, readFixture(t, "sekoia-run.201.json"))
	r.on("GET "+sophos.RunsPath+"/"+sekoiaRunID, http.StatusOK, readFixture(t, "sekoia-get.200.json"))
}

// A hostile or broken server that always has another page, one row each,
// with a fresh nextKey (issue 10: 3,145 requests in 60 s without a cap).
func TestEndlessPagesAreCapped(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	var served atomic.Int64
	r.Handle("GET /results", func(w http.ResponseWriter, _ *http.Request) {
		n := served.Add(1)
		if n > 1000 {
			w.WriteHeader(http.StatusServiceUnavailable) // the test's own backstop
			return
		}
		_, _ = fmt.Fprintf(w, `{"items":[{"meta_hostname":"h%d"}],"pages":{"nextKey":"k%d","size":1,"maxSize":2000}}`, n%7, n)
	})
	d := r.driver(t)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	require.NoError(t, err)
	require.Equal(t, int64(sophos.DefaultMaxPages), served.Load(), "paging stops at the page cap")
	require.EqualValues(t, sophos.DefaultMaxPages, res.Rows)
	require.Equal(t, 7, res.HostsTotal)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "truncated")
}

// bigRow is a results body whose only row holds a string of n bytes. It
// counts how much of it was read.
type bigRow struct {
	n, read int64
	r       io.Reader
}

func newBigRow(n int64) *bigRow {
	head := strings.NewReader(`{"items":[{"meta_hostname":"h1","cmdline":"`)
	tail := strings.NewReader(`"}],"pages":{"size":1,"maxSize":2000}}`)
	b := &bigRow{n: n}
	b.r = io.MultiReader(head, io.LimitReader(repeatReader('a'), n), tail)
	return b
}

func (b *bigRow) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	atomic.AddInt64(&b.read, int64(n))
	return n, err
}

func (b *bigRow) Close() error { return nil }

func (b *bigRow) bytesRead() int64 { return atomic.LoadInt64(&b.read) }

type repeatReader byte

func (c repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(c)
	}
	return len(p), nil
}

// bigRowTransport answers results requests with a bigRow body itself.
type bigRowTransport struct {
	next http.RoundTripper
	body *bigRow
}

func (t *bigRowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.URL.Path, "/results") {
		return t.next.RoundTrip(r)
	}
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}}, Body: t.body, ContentLength: -1, Request: r}, nil
}

// One enormous row must fail the task without being read into memory,
// however large the response limit.
func TestHugeRowIsRefusedUnread(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	big := newBigRow(24 << 20)
	cfg := r.config()
	cfg.MaxBody = 64 << 20
	cfg.Transport = &bigRowTransport{next: cfg.Transport, body: big}
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	_, err = edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	edrtest.RequirePermanent(t, err, "result row larger than")
	require.Less(t, big.bytesRead(), int64(2<<20), "the row was read only up to the cap")
}

// The identity service of issue 10 answered a bad request by quoting the
// form it got: the secret, percent-encoded, ended up in the task's error.
// Whatever the token endpoint answers, the error never carries the secret
// in any encoding.
func TestTokenErrorsNeverCarryTheSecret(t *testing.T) {
	t.Parallel()
	const secret = "Zk+9/aQ==tR+x/Yy=P7 q&s%2B"
	var calls atomic.Int32
	echo := func(w http.ResponseWriter, req *http.Request) {
		raw, _ := io.ReadAll(req.Body)
		form, _ := url.ParseQuery(string(raw))
		bid, bsecret, _ := req.BasicAuth()
		status := http.StatusUnauthorized // the first answer asks for HTTP Basic
		if calls.Add(1) > 1 {
			status = http.StatusBadRequest
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		echoed := fmt.Sprintf("rejected %s; Authorization %s; basic %s:%s; decoded %s%s", raw, req.Header.Get("Authorization"),
			bid, bsecret, form.Get("client_secret"), bsecret)
		body, _ := json.Marshal(map[string]string{"errorCode": "oauth.invalid_request", "message": echoed, "trackingId": "t-1"})
		// And once more as a server escaping "/" would write it.
		body = append(body[:len(body)-1], []byte(`,"detail":"`+strings.ReplaceAll(form.Get("client_secret")+bsecret, "/", `\/`)+`"}`)...)
		_, _ = w.Write(body)
	}
	r := newReplay(t)
	r.Handle("POST "+sophos.TokenPath, echo)
	cfg := r.config()
	cfg.ClientSecret = secret
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	_, err = d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.Equal(t, "token", e.Op)
	require.False(t, e.Retryable)
	require.EqualValues(t, 2, calls.Load(), "form first, then HTTP Basic")

	msg := err.Error() + " " + fmt.Sprintf("%+v %#v", err, err)
	basic := func(id, s string) string { return id + ":" + s }
	forms := []string{
		secret, url.QueryEscape(secret), url.PathEscape(secret), strings.ToLower(url.QueryEscape(secret)),
		strings.ReplaceAll(url.QueryEscape(secret), "+", "%20"),
		base64.StdEncoding.EncodeToString([]byte(basic(clientID, secret))),
		base64.StdEncoding.EncodeToString([]byte(basic(url.QueryEscape(clientID), url.QueryEscape(secret)))),
		base64.URLEncoding.EncodeToString([]byte(basic(clientID, url.QueryEscape(secret)))),
		strings.ReplaceAll(secret, "/", `\/`),
		"aQ==tR", "x/Yy=P7", // pieces are enough to rebuild it
	}
	for _, f := range forms {
		require.NotContains(t, msg, f)
	}
	require.Contains(t, err.Error(), "oauth.invalid_request", "what the service said is kept, without the echo")
	require.Contains(t, err.Error(), "trackingId t-1")
}

// endlessPages serves results pages forever, each with a fresh nextKey and
// padded to about pad bytes.
func endlessPages(t *testing.T, r *replay, pad int) *atomic.Int64 {
	var served atomic.Int64
	r.Handle("GET /results", func(w http.ResponseWriter, _ *http.Request) {
		n := served.Add(1)
		if n > 1000 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintf(w, `{"items":[{"meta_hostname":"h","cmdline":"%s"}],"pages":{"nextKey":"k%d","size":1,"maxSize":2000}}`,
			strings.Repeat("x", pad), n)
	})
	return &served
}

func TestResultBytesAreCapped(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	served := endlessPages(t, r, 10<<10)
	cfg := r.config()
	cfg.MaxResultBytes = 50 << 10
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 5, served.Load(), "five pages of a little over 10 KiB reach 50 KiB")
	require.EqualValues(t, 5, res.Rows)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "bytes of results (the limit)")
	require.Contains(t, res.Notes[0], "truncated")
}

func TestPageLimitsAreConfigurable(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	served := endlessPages(t, r, 10)
	cfg := r.config()
	cfg.MaxPages, cfg.PageSize = 3, sophos.MaxPageSize
	tr := &edrtest.Recorder{Next: cfg.Transport}
	cfg.Transport = tr
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 3, served.Load())
	require.Contains(t, res.Notes[0], "stopped after 3 result pages (the limit)")
	for _, p := range tr.Matching(http.MethodGet, "/results") {
		require.Equal(t, "2000", p.Query().Get("pageSize"))
	}
}

func TestHugePageKeyStopsPaging(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	r.on("GET /results", http.StatusOK, `{"items":[{"meta_hostname":"h"}],"pages":{"nextKey":"`+strings.Repeat("k", 9000)+`"}}`)
	d := r.driver(t)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
	require.Contains(t, res.Notes[0], "key for the next page is longer than")
	require.Equal(t, 1, r.Hits("GET /results"), "the key was not sent")
}

// A page larger than the response limit fails clearly, and permanently.
func TestHugePageFails(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	rows := strings.Repeat(`{"meta_hostname":"h"},`, 5000)
	r.on("GET /results", http.StatusOK, `{"items":[`+rows+`{}]}`)
	cfg := r.config()
	cfg.MaxBody = 64 << 10
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	_, err = edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	edrtest.RequirePermanent(t, err, "results page larger than 65536 bytes")
}

// A results page refused for an expired token is fetched again with a new
// one, like every other call.
func TestResultsReauthOn401(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{}, nil)
	b.sim.SetHits(hitSHA, 1500, "h1")
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	b.sim.RevokeTokens()
	res, err := d.Collect(ctx, ref)
	require.NoError(t, err)
	require.EqualValues(t, 1500, res.Rows)
	require.Equal(t, 2, b.sim.TokensIssued())
	require.Equal(t, 1, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized))
}
