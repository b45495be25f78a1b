package cbc_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	simcbc "github.com/analysisfleet/analysisfleet/sim/cbc"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	orgKey    = "7DESJ9GN"
	apiID     = "ZBN1FZ4IVJ"
	apiSecret = "S3CRETKEYVALUE0123456789"
	hitSHA    = "5e2c7a6b0f0a4a3d9f3e0c1b2a394857a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1"
	emptySHA  = "0000000000000000000000000000000000000000000000000000000000000000"
)

var (
	hitDevices = []string{"WIN-ALPHA", "WIN-BRAVO", "mac-charlie"}
	// wantHit is what an export for hitSHA summarises to.
	wantHit = edr.Result{Rows: 9, Hosts: []string{"WIN-ALPHA", "WIN-BRAVO", "mac-charlie"}, HostsTotal: 3}
	// secrets must never appear in an error.
	secrets = []string{apiSecret, apiSecret + "/" + apiID}
)

// newClock is a manual clock shared by the simulator and the driver.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

type bundle struct {
	sim *simcbc.Server
	srv *httptest.Server
	cfg cbc.Config
	drv *cbc.Driver
	rec *edrtest.Recorder // API requests; the pre-signed download does not go through it
}

// setup starts a simulator with hits for hitSHA and none for emptySHA, and
// a driver on it. mod may change the driver config before New.
func setup(t *testing.T, sc simcbc.Config, mod func(*cbc.Config)) *bundle {
	t.Helper()
	sc.OrgKey, sc.APIID, sc.APISecret = orgKey, apiID, apiSecret
	sim := simcbc.New(sc)
	sim.SetHits(hitSHA, hitDevices...)
	sim.SetHits(emptySHA)
	srv := simtest.Serve(t, sim)
	rec := &edrtest.Recorder{}
	cfg := cbc.Config{
		URL: srv.URL, OrgKey: orgKey, APIID: apiID, APISecret: apiSecret,
		UserAgent:  "analysisfleet/test (cbc)",
		Timeout:    5 * time.Second,
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true, UserAgent: "analysisfleet/test (cbc)", Timeout: 5 * time.Second, MaxBody: 64 << 20}),
		Transport:  rec,
	}
	if mod != nil {
		mod(&cfg)
	}
	drv, err := cbc.New(cfg)
	require.NoError(t, err)
	return &bundle{sim: sim, srv: srv, cfg: cfg, drv: drv, rec: rec}
}

// start starts an export for hitSHA under a fresh intent.
func (b *bundle) start(t *testing.T) edr.Ref {
	t.Helper()
	ref, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, edrtest.NewIntent("t"))
	require.NoError(t, err)
	return ref
}

func (b *bundle) newDriver(t *testing.T) *cbc.Driver {
	cfg := b.cfg
	cfg.Transport = nil // a different worker: its own client and connections
	d, err := cbc.New(cfg)
	require.NoError(t, err)
	return d
}

func fast() simcbc.Config {
	return simcbc.Config{QueuedFor: 20 * time.Millisecond, RunFor: 30 * time.Millisecond}
}

func startPath() string { return "/jobs/v1/orgs/" + orgKey + "/jobs/start/event_export" }
func jobsPath() string  { return "/jobs/v1/orgs/" + orgKey + "/jobs/" }

func asEdrErr(t *testing.T, err error) *edr.Error {
	t.Helper()
	var e *edr.Error
	require.ErrorAs(t, err, &e)
	return e
}

func refID(t *testing.T, ref edr.Ref) string {
	var r struct {
		ID string `json:"id"`
	}
	require.NoError(t, json.Unmarshal(ref, &r))
	return r.ID
}

// assertClean fails if an error text carries a secret, a pre-signed URL or
// its signature.
func assertClean(t *testing.T, sim *simcbc.Server, errs ...error) {
	t.Helper()
	banned := append([]string(nil), secrets...)
	for _, raw := range sim.IssuedURLs() {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		banned = append(banned, raw, u.RawQuery, u.Query().Get("X-Amz-Signature"), u.Query().Get("X-Amz-Security-Token"))
	}
	edrtest.AssertNoSecrets(t, banned, errs...)
}

func TestContract(t *testing.T) {
	t.Parallel()
	edrtest.Run(t, edrtest.Harness{
		New: func(t *testing.T, o edrtest.Options) edrtest.Env {
			b := setup(t, fast(), func(c *cbc.Config) {
				if o.Timeout > 0 {
					c.Timeout = o.Timeout
				}
			})
			return edrtest.Env{Driver: b.drv, Kit: b.sim.Kit(), NewDriver: func() edr.Driver { return b.newDriver(t) }}
		},
		Target:      edr.Target{JobID: "job-1", SHA256: hitSHA, Platform: "win"},
		EmptyTarget: edr.Target{JobID: "job-2", SHA256: emptySHA, Platform: "win"},
		StartPath:   startPath(),
		PollPath:    jobsPath(),
		Secrets:     secrets,
		Findable:    true,
	})
}

// The request is exactly the document's, with the hash query, the retention
// window and the credentials header.
func TestStartRequestAsDocumented(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, fast(), func(c *cbc.Config) { c.Now = clk.Now })
	in := edr.Intent{Key: "job-1/cbc.event_export/7.1", At: clk.Now().UnixMilli()}
	ref, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: strings.ToUpper(hitSHA)}, in)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"4522"}`, string(ref))

	reqs := b.rec.Requests()
	require.Len(t, reqs, 1)
	r := reqs[0]
	require.Equal(t, http.MethodPost, r.Method)
	require.Equal(t, startPath(), r.Path)
	require.Equal(t, apiSecret+"/"+apiID, r.Header.Get("X-Auth-Token"))
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "analysisfleet/test (cbc)", r.Header.Get("User-Agent"))
	require.JSONEq(t, `{"query":{"query":"process_hash:`+hitSHA+`","time_range":{"start":"2026-01-30T12:00:00.000Z"},"rows":10000},
		"api_resource":"enriched_events","version":"v2"}`, string(r.Body))

	jobs := b.sim.Jobs()
	require.Len(t, jobs, 1)
	require.Equal(t, hitSHA, jobs[0].SHA256)
	require.Equal(t, 1, b.sim.Starts(hitSHA))
}

// The whole life of an export on a driven clock: QUEUED, IN_PROGRESS with
// counters, FINISHED, /download 404 while the output is not ready (retryable
// after ~2s), then the redirect, the credential-free download and the
// summary.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simcbc.Config{QueuedFor: 10 * time.Second, RunFor: 10 * time.Second, ReadyAfter: 5 * time.Second, Now: clk.Now,
		Message: simcbc.MessageAlways}, func(c *cbc.Config) { c.Now = clk.Now })
	c := edrtest.Ctx(t)
	ref, err := b.drv.Start(c, edr.Target{SHA256: hitSHA}, edrtest.IntentAt("t", clk.Now()))
	require.NoError(t, err)

	st, err := b.drv.Poll(c, ref)
	require.NoError(t, err)
	require.Equal(t, edr.Status{Progress: "QUEUED"}, st)

	clk.Advance(15 * time.Second)
	st, err = b.drv.Poll(c, ref)
	require.NoError(t, err)
	require.False(t, st.Done)
	require.Equal(t, "IN_PROGRESS 4/9", st.Progress)

	clk.Advance(5 * time.Second)
	st, err = b.drv.Poll(c, ref)
	require.NoError(t, err)
	require.True(t, st.Done)
	require.Equal(t, "FINISHED 9/9", st.Progress)

	_, err = b.drv.Collect(c, ref)
	require.Error(t, err)
	e := asEdrErr(t, err)
	require.True(t, e.Retryable, "404 from /download means not ready yet: %v", err)
	require.Equal(t, http.StatusNotFound, e.Status)
	require.Equal(t, cbc.NotReadyRetryAfter, edr.RetryAfter(err))
	require.Zero(t, b.sim.Kit().Count("", "/presigned/"))

	clk.Advance(5 * time.Second)
	res, err := b.drv.Collect(c, ref)
	require.NoError(t, err)
	require.Equal(t, wantHit, res)

	// The pre-signed URL was fetched once, without credentials: the
	// simulator answers 400 to a request carrying X-Auth-Token.
	var presigned []simhttp.Request
	for _, r := range b.sim.Kit().Requests() {
		if strings.HasPrefix(r.Path, "/presigned/") {
			presigned = append(presigned, r)
		}
	}
	require.Len(t, presigned, 1)
	require.Equal(t, http.StatusOK, presigned[0].Status)
	require.Equal(t, "analysisfleet/test (cbc)", presigned[0].UserAgent)
	// Only API requests went through the credentialed transport.
	for _, r := range b.rec.Requests() {
		require.True(t, strings.HasPrefix(r.Path, "/jobs/v1/orgs/"), "credentialed request to %s", r.Path)
	}
}

// The negative control for the credential check above: the simulator does
// refuse a pre-signed request that carries the API token.
func TestPresignedRefusesCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, simcbc.Config{}, nil)
	ref := b.start(t)
	_, err := b.drv.Collect(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	urls := b.sim.IssuedURLs()
	require.Len(t, urls, 1)
	req, err := http.NewRequestWithContext(edrtest.Ctx(t), http.MethodGet, urls[0], nil)
	require.NoError(t, err)
	req.Header.Set("X-Auth-Token", apiSecret+"/"+apiID)
	resp, err := b.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestFormatsSummariseAlike(t *testing.T) {
	t.Parallel()
	for _, f := range []string{simcbc.FormatCSV, simcbc.FormatJSON, simcbc.FormatNDJSON, simcbc.FormatCSVGz, simcbc.FormatZip} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			sc := fast()
			sc.Format = f
			b := setup(t, sc, nil)
			res, err := edrtest.Drive(edrtest.Ctx(t), b.drv, edr.Target{SHA256: hitSHA}, nil)
			require.NoError(t, err)
			require.Equal(t, wantHit, res)
			res, err = edrtest.Drive(edrtest.Ctx(t), b.drv, edr.Target{SHA256: emptySHA}, nil)
			require.NoError(t, err)
			require.Equal(t, edr.Result{}, res)
		})
	}
}

// A second driver given only the checkpointed reference collects the same
// result, without starting the export again.
func TestReattachCollectsSameResult(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref := b.start(t)
	raw, err := json.Marshal(map[string]any{"task": "cbc", "ref": ref})
	require.NoError(t, err)
	var back struct {
		Ref json.RawMessage `json:"ref"`
	}
	require.NoError(t, json.Unmarshal(raw, &back))

	res, err := edrtest.Drive(edrtest.Ctx(t), b.newDriver(t), edr.Target{}, edr.Ref(back.Ref))
	require.NoError(t, err)
	require.Equal(t, wantHit, res)
	require.Equal(t, 1, b.sim.TotalStarts())
}

func TestRateLimitOnProgress(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref := b.start(t)
	b.sim.Kit().Add(simhttp.Fault{Name: "storm", Path: jobsPath() + refID(t, ref) + "/progress", Status: 429, RetryAfter: time.Second, Count: 2})

	// A runner that honours Retry-After gets through without sending
	// anything inside the window.
	var throttled []error
	for done := false; !done; {
		st, err := b.drv.Poll(edrtest.Ctx(t), ref)
		if err != nil {
			e := asEdrErr(t, err)
			require.True(t, e.Retryable)
			require.Equal(t, http.StatusTooManyRequests, e.Status)
			require.Equal(t, time.Second, edr.RetryAfter(err))
			throttled = append(throttled, err)
			wait(t, edr.RetryAfter(err)) // the behaviour under test, not a condition
			continue
		}
		if done = st.Done; !done {
			wait(t, 5*time.Millisecond)
		}
	}
	require.Len(t, throttled, 2)
	assertClean(t, b.sim, throttled...)
	res, err := b.drv.Collect(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.Equal(t, wantHit, res)
	edrtest.AssertRetryAfterHonoured(t, b.sim.Kit().Requests(), time.Second)
	require.Equal(t, 2, edrtest.CountStatus(b.sim.Kit(), "", http.StatusTooManyRequests))
}

func wait(t *testing.T, d time.Duration) {
	select {
	case <-time.After(d):
	case <-edrtest.Ctx(t).Done():
		t.Fatal("test deadline")
	}
}

func TestServerErrorsAreRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref := b.start(t)
	id := refID(t, ref)
	for _, st := range []int{500, 502, 503, 504} {
		b.sim.Kit().Add(simhttp.Fault{Path: jobsPath() + id + "/progress", Status: st, Count: 1})
		_, err := b.drv.Poll(edrtest.Ctx(t), ref)
		e := asEdrErr(t, err)
		require.True(t, e.Retryable, "%d: %v", st, err)
		require.Equal(t, st, e.Status)
		require.Zero(t, e.RetryAfter)
	}
	b.sim.Kit().Add(simhttp.Fault{Path: jobsPath() + id + "/download", Status: 503, Count: 1})
	res, err := edrtest.Drive(edrtest.Ctx(t), b.drv, edr.Target{}, ref)
	require.NoError(t, err)
	require.Equal(t, wantHit, res)
	n := 0
	for _, r := range b.sim.Kit().Requests() {
		if strings.HasSuffix(r.Path, "/download") && r.Status == 503 {
			n++
		}
	}
	require.Equal(t, 1, n, "the download's 503 was answered and retried")
}

func TestHungProgressTimesOut(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	b := setup(t, fast(), func(c *cbc.Config) { c.Timeout = timeout })
	ref := b.start(t)
	b.sim.Kit().Add(simhttp.Fault{Path: jobsPath() + refID(t, ref) + "/progress", Hang: true, Count: 1})
	began := time.Now()
	_, err := b.drv.Poll(edrtest.Ctx(t), ref)
	took := time.Since(began)
	e := asEdrErr(t, err)
	require.True(t, e.Retryable, "a timeout is retryable: %v", err)
	require.Zero(t, e.RetryAfter)
	require.GreaterOrEqual(t, took, timeout)
	require.Less(t, took, timeout+2*time.Second)

	st, err := b.drv.Poll(edrtest.Ctx(t), ref) // the next poll is answered
	require.NoError(t, err)
	require.NotEmpty(t, st.Progress)
}

func TestCallerCancellationIsNotAVendorFailure(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref := b.start(t)
	b.sim.Kit().Add(simhttp.Fault{Path: jobsPath(), Hang: true})
	c, cancel := context.WithTimeout(edrtest.Ctx(t), 100*time.Millisecond)
	defer cancel()
	_, err := b.drv.Poll(c, ref)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var e *edr.Error
	require.False(t, errors.As(err, &e), "the caller's deadline is not a vendor error: %v", err)
}

func TestMalformedResponses(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref := b.start(t)
	id := refID(t, ref)

	remove := b.sim.Kit().Add(simhttp.Fault{Path: jobsPath() + id + "/progress", Malformed: true})
	_, err := b.drv.Poll(edrtest.Ctx(t), ref)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Contains(t, err.Error(), "malformed response")
	remove()

	// The export itself is garbage.
	b.sim.Kit().Add(simhttp.Fault{Path: "/presigned/", Malformed: true})
	require.Eventually(t, func() bool {
		st, err := b.drv.Poll(edrtest.Ctx(t), ref)
		return err == nil && st.Done
	}, 10*time.Second, 5*time.Millisecond)
	_, err = b.drv.Collect(edrtest.Ctx(t), ref)
	e = asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Contains(t, err.Error(), "malformed export")
	assertClean(t, b.sim, err)
}

func TestCredentialsRejected(t *testing.T) {
	t.Parallel()
	for name, mod := range map[string]func(*cbc.Config){
		"wrong secret":  func(c *cbc.Config) { c.APISecret = "WRONGSECRETVALUE" },
		"wrong api id":  func(c *cbc.Config) { c.APIID = "WRONGID" },
		"wrong org key": func(c *cbc.Config) { c.OrgKey = "OTHERORG" },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), mod)
			_, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, edrtest.NewIntent("t"))
			e := asEdrErr(t, err)
			require.False(t, e.Retryable)
			require.Contains(t, []int{401, 403}, e.Status)
			for _, v := range []string{"CBC_API_ID", "CBC_API_SECRET", "CBC_ORG_KEY"} {
				require.Contains(t, err.Error(), v)
			}
			edrtest.AssertNoSecrets(t, append(secrets, "WRONGSECRETVALUE"), err)
			require.Zero(t, b.sim.TotalStarts())
		})
	}
}

// The pre-signed URL expires between /download and the fetch: the error is
// retryable (a fresh /download issues a new URL), the next Collect
// succeeds, and no error mentions the URL or its signature.
func TestExpiredPresignedURL(t *testing.T) {
	t.Parallel()
	var expireOnce atomic.Bool
	var sim *simcbc.Server
	b := setup(t, simcbc.Config{}, func(c *cbc.Config) {
		c.Transport = &edrtest.Recorder{After: func(req *http.Request, resp *http.Response) {
			if strings.HasSuffix(req.URL.Path, "/download") && resp.StatusCode == http.StatusFound && expireOnce.CompareAndSwap(false, true) {
				sim.ExpireURLs()
			}
		}}
	})
	sim = b.sim
	ref := b.start(t)

	_, err := b.drv.Collect(edrtest.Ctx(t), ref)
	e := asEdrErr(t, err)
	require.True(t, e.Retryable, "an expired pre-signed URL is retryable: %v", err)
	require.Equal(t, http.StatusForbidden, e.Status)
	assertClean(t, b.sim, err)

	res, err := b.drv.Collect(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.Equal(t, wantHit, res)
	require.Len(t, b.sim.IssuedURLs(), 2, "the second Collect used a fresh URL")
	var statuses []int
	for _, r := range b.sim.Kit().Requests() {
		if strings.HasPrefix(r.Path, "/presigned/") {
			statuses = append(statuses, r.Status)
		}
	}
	require.Equal(t, []int{403, 200}, statuses)
}

// Object stores other than S3 answer an expired pre-signed URL with 400 or
// 410: like S3's 403, the error is retryable and the next Collect asks
// /download for a fresh URL.
func TestPresignedURLRefusedWith400Or410(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusBadRequest, http.StatusGone} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, simcbc.Config{}, nil)
			ref := b.start(t)
			b.sim.Kit().Add(simhttp.Fault{Path: "/presigned/", Status: status, Count: 1})

			_, err := b.drv.Collect(edrtest.Ctx(t), ref)
			e := asEdrErr(t, err)
			require.True(t, e.Retryable, "a refused pre-signed URL is retryable: %v", err)
			require.Equal(t, status, e.Status)
			require.Contains(t, err.Error(), "a fresh URL will be requested")
			assertClean(t, b.sim, err)

			res, err := b.drv.Collect(edrtest.Ctx(t), ref)
			require.NoError(t, err)
			require.Equal(t, wantHit, res)
			require.Len(t, b.sim.IssuedURLs(), 2, "the second Collect used a fresh URL")
		})
	}
}

// A redirect to a host outside DOWNLOAD_HOSTS is refused before dialling.
func TestDownloadPolicyRefusal(t *testing.T) {
	t.Parallel()
	b := setup(t, simcbc.Config{}, func(c *cbc.Config) {
		c.Downloader = httpc.NewDownloader(httpc.DownloadConfig{Hosts: []string{".amazonaws.com"}})
	})
	ref := b.start(t)
	_, err := b.drv.Collect(edrtest.Ctx(t), ref)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.ErrorIs(t, err, httpc.ErrDownloadRefused)
	require.Contains(t, err.Error(), "DOWNLOAD_HOSTS")
	require.Zero(t, b.sim.Kit().Count("", "/presigned/"))
	assertClean(t, b.sim, err)
}

func TestBadHashRefusedBeforeAnyRequest(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	for _, bad := range []string{"x' OR 1=1--", hitSHA + " OR process_name:*", "", hitSHA[:63]} {
		_, err := b.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: bad}, edrtest.NewIntent("t"))
		require.ErrorIs(t, err, edr.ErrBadHash)
		require.False(t, edr.IsRetryable(err))
	}
	require.Empty(t, b.sim.Kit().Requests())
	require.Empty(t, b.rec.Requests())
}

func TestJobFailedAtVendor(t *testing.T) {
	t.Parallel()
	b := setup(t, simcbc.Config{QueuedFor: time.Hour}, nil)
	ref := b.start(t)
	require.True(t, b.sim.Fail(b.sim.Jobs()[0].ID))
	_, err := b.drv.Poll(edrtest.Ctx(t), ref)
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "FAILED", e.Code)

	// Collect on the failed job does not wait for output that never comes.
	_, err = b.drv.Collect(edrtest.Ctx(t), ref)
	e = asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Equal(t, "FAILED", e.Code)
}

func TestPollUnknownJob(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	_, err := b.drv.Poll(edrtest.Ctx(t), edr.Ref(`{"id":999999}`)) // a numeric id is accepted too
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, http.StatusNotFound, e.Status)
	require.Contains(t, err.Error(), "not found")

	// /download answers 404 for a job that is gone too; Collect tells it
	// from "not ready yet" by asking for the job's progress.
	_, err = b.drv.Collect(edrtest.Ctx(t), edr.Ref(`{"id":"999999"}`))
	e = asEdrErr(t, err)
	require.False(t, e.Retryable, "%v", err)
	require.Contains(t, err.Error(), "not found")

	for _, bad := range []string{`{}`, `{"id":"../../x"}`, `[]`, `nonsense`, `{"id":1.5}`} {
		_, err := b.drv.Poll(edrtest.Ctx(t), edr.Ref(bad))
		e := asEdrErr(t, err)
		require.False(t, e.Retryable)
		require.Contains(t, err.Error(), "invalid operation reference")
	}
	require.Equal(t, 3, len(b.sim.Kit().Requests()), "invalid references are refused without a request")
}

func TestHostsCappedAndRowLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	devices := make([]string, 150)
	for i := range devices {
		devices[i] = "host-" + string(rune('A'+i/26)) + string(rune('a'+i%26))
	}
	b.sim.SetHits(hitSHA, devices...)
	res, err := edrtest.Drive(edrtest.Ctx(t), b.drv, edr.Target{SHA256: hitSHA}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 450, res.Rows)
	require.Equal(t, 150, res.HostsTotal)
	require.Len(t, res.Hosts, edr.MaxListed)
	require.Equal(t, devices[:edr.MaxListed], res.Hosts, "sorted, first MaxListed")
	require.Empty(t, res.Notes)

	limited := b.newDriverWith(t, func(c *cbc.Config) { c.Rows = 4 })
	res, err = edrtest.Drive(edrtest.Ctx(t), limited, edr.Target{SHA256: hitSHA}, nil)
	require.NoError(t, err)
	require.EqualValues(t, 4, res.Rows)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "row limit (4)")
}

func (b *bundle) newDriverWith(t *testing.T, mod func(*cbc.Config)) *cbc.Driver {
	cfg := b.cfg
	mod(&cfg)
	d, err := cbc.New(cfg)
	require.NoError(t, err)
	return d
}

func TestCancelUnsupported(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	err := b.drv.Cancel(edrtest.Ctx(t), edr.Ref(`{"id":"4522"}`))
	require.ErrorIs(t, err, edr.ErrCancelUnsupported)
	require.Empty(t, b.sim.Kit().Requests())
	require.Equal(t, edr.KindCBCEventExport, b.drv.Kind())
}

// A hand-written server for answers the simulator never gives: the output
// inline with 200, a redirect without Location, an unknown progress message.
func TestUnusualAnswers(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/1/download", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "device_name,process_hash\nh1,x\nh2,x\nh1,x\n")
	})
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/2/download", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/3/progress", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"num_total":"10","num_completed":3,"message":"rescheduled","extra":{"a":1}}`)
	})
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/3", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":3,"type":"event_export","status":"CREATED"}`)
	})
	mux.HandleFunc("POST /jobs/v1/orgs/{org}/jobs/start/event_export", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"ab-77","type":"event_export","status":"CREATED","unknown":[1,2]}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	d, err := cbc.New(cbc.Config{URL: srv.URL + "/", OrgKey: orgKey, APIID: apiID, APISecret: apiSecret,
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true})})
	require.NoError(t, err)

	ref, err := d.Start(edrtest.Ctx(t), edr.Target{SHA256: hitSHA}, edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"ab-77"}`, string(ref))

	res, err := d.Collect(edrtest.Ctx(t), edr.Ref(`{"id":"1"}`))
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 3, Hosts: []string{"h1", "h2"}, HostsTotal: 2}, res)

	_, err = d.Collect(edrtest.Ctx(t), edr.Ref(`{"id":"2"}`))
	e := asEdrErr(t, err)
	require.False(t, e.Retryable)
	require.Contains(t, err.Error(), "malformed response")

	st, err := d.Poll(edrtest.Ctx(t), edr.Ref(`{"id":"3"}`))
	require.NoError(t, err)
	require.Equal(t, edr.Status{Progress: "RESCHEDULED 3/10"}, st)
}

// A server written from the same document may spell "finished" and "failed"
// differently, and may hand the export (or something else) back inline
// with 200 instead of redirecting.
func TestOtherServersAnswers(t *testing.T) {
	t.Parallel()
	progress := map[string]string{
		"10": "COMPLETED", "11": "complete", "12": "Done", "13": "SUCCESS",
		"20": "FAILED", "21": "error", "22": "CANCELLED", "23": "Canceled",
		"30": "RESCHEDULED", "31": "WAITING",
	}
	inline := map[string]string{
		"40": `{"events":[{"device_name":"h1","process_hash":["x"]},{"device_name":"h2"},{"device_id":7}]}`,
		"41": `{"num_found":2,"data":[{"device_name":"h1"},{"device_name":"h1"}]}`,
		"50": `{"url":"https://bucket.s3.amazonaws.com/4522.csv?X-Amz-Signature=abc"}`,
		"51": `{"id":4522,"type":"event_export","status":"FINISHED"}`,
		"52": `{"data":[]}`,
		"53": "",
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}/progress", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"num_total":5,"num_completed":5,"message":"`+progress[r.PathValue("id")]+`"}`)
	})
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":`+r.PathValue("id")+`,"type":"event_export","status":"CREATED"}`)
	})
	mux.HandleFunc("GET /jobs/v1/orgs/{org}/jobs/{id}/download", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, inline[r.PathValue("id")])
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	core, logs := observer.New(zap.WarnLevel)
	d, err := cbc.New(cbc.Config{URL: srv.URL, OrgKey: orgKey, APIID: apiID, APISecret: apiSecret,
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{Insecure: true}), Logger: zap.New(core)})
	require.NoError(t, err)
	poll := func(id string) (edr.Status, error) { return d.Poll(edrtest.Ctx(t), edr.Ref(`{"id":"`+id+`"}`)) }

	for _, id := range []string{"10", "11", "12", "13"} {
		st, err := poll(id)
		require.NoError(t, err, progress[id])
		require.True(t, st.Done, progress[id])
	}
	for _, id := range []string{"20", "21", "22", "23"} {
		_, err := poll(id)
		e := asEdrErr(t, err)
		require.False(t, e.Retryable, progress[id])
		require.Contains(t, err.Error(), "ended without output ("+strings.ToUpper(progress[id])+")")
	}
	// Unknown messages: keep polling, and say so in the log once per
	// message, not once per poll.
	for range 3 {
		for _, id := range []string{"30", "31"} {
			st, err := poll(id)
			require.NoError(t, err)
			require.Equal(t, edr.Status{Progress: progress[id] + " 5/5"}, st)
		}
	}
	warned := logs.FilterMessageSnippet("unknown export progress message").AllUntimed()
	require.Len(t, warned, 2)
	require.Equal(t, "RESCHEDULED", warned[0].ContextMap()["message"])
	require.Equal(t, "WAITING", warned[1].ContextMap()["message"])
	st, err := poll("10")
	require.NoError(t, err)
	require.True(t, st.Done)
	require.Equal(t, 2, logs.Len(), "known messages are not logged")

	collect := func(id string) (edr.Result, error) { return d.Collect(edrtest.Ctx(t), edr.Ref(`{"id":"`+id+`"}`)) }
	res, err := collect("40")
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 3, Hosts: []string{"7", "h1", "h2"}, HostsTotal: 3}, res)
	res, err = collect("41")
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 2, Hosts: []string{"h1"}, HostsTotal: 1}, res)
	res, err = collect("52")
	require.NoError(t, err)
	require.Equal(t, edr.Result{}, res)

	// Not export data: malformed, never "one event found" or "nothing
	// found".
	for _, id := range []string{"50", "51", "53"} {
		_, err := collect(id)
		e := asEdrErr(t, err)
		require.False(t, e.Retryable, "%s: %v", id, err)
		require.Contains(t, err.Error(), "malformed response: /download answered HTTP 200", id)
		require.NotContains(t, err.Error(), "X-Amz-Signature")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	dl := httpc.NewDownloader(httpc.DownloadConfig{})
	good := cbc.Config{URL: "https://defense.conferdeploy.net", OrgKey: orgKey, APIID: apiID, APISecret: apiSecret, Downloader: dl}
	_, err := cbc.New(good)
	require.NoError(t, err)
	for field, mod := range map[string]func(*cbc.Config){
		"URL":        func(c *cbc.Config) { c.URL = "" },
		"OrgKey":     func(c *cbc.Config) { c.OrgKey = "" },
		"APIID":      func(c *cbc.Config) { c.APIID = "" },
		"APISecret":  func(c *cbc.Config) { c.APISecret = "" },
		"Downloader": func(c *cbc.Config) { c.Downloader = nil },
	} {
		c := good
		mod(&c)
		_, err := cbc.New(c)
		require.EqualError(t, err, "cbc: "+field+" is required")
	}
	for _, mod := range []func(*cbc.Config){
		func(c *cbc.Config) { c.URL = "ftp://x" },
		func(c *cbc.Config) { c.URL = "https://user:pw@host" },
		func(c *cbc.Config) { c.OrgKey = "a/b" },
		func(c *cbc.Config) { c.APIID = "a/b" },
		func(c *cbc.Config) { c.APISecret = "bad secret\n" },
		func(c *cbc.Config) { c.Rows = -1 },
		func(c *cbc.Config) { c.MaxLine = -1 },
		func(c *cbc.Config) { c.MaxSpool = -1 },
		func(c *cbc.Config) { c.JobCheckAfter = -time.Second },
		func(c *cbc.Config) { c.FindMaxPages = -1 },
		func(c *cbc.Config) { c.FindMaxBytes = -1 },
	} {
		c := good
		mod(&c)
		_, err := cbc.New(c)
		require.Error(t, err)
		require.NotContains(t, err.Error(), "bad secret")
	}
	d, err := cbc.New(good)
	require.NoError(t, err)
	for _, s := range []string{good.String(), good.GoString(), d.String()} {
		require.NotContains(t, s, apiSecret)
	}
}
