package sophos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
	simsophos "github.com/analysisfleet/analysisfleet/sim/sophos"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	hitSHA   = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	emptySHA = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	secret   = "s3cr3t-Client-Secret-do-not-leak"
	tenant   = "9f8e7d6c-0000-4000-8000-123456789abc"
	clientID = "analysisfleet-test-client"
)

// bundle is one simulator and the driver configuration pointing at it.
type bundle struct {
	sim *simsophos.Server
	srv *httptest.Server
	cfg sophos.Config
}

func (b *bundle) kit() *simhttp.Kit { return b.sim.Kit() }

func (b *bundle) driver(t *testing.T) *sophos.Driver {
	t.Helper()
	d, err := sophos.New(b.cfg)
	require.NoError(t, err)
	return d
}

// startHit starts a query for hitSHA through d.
func startHit(t *testing.T, d *sophos.Driver) edr.Ref {
	t.Helper()
	ref, err := d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	return ref
}

// setup starts a simulator for sc (credentials filled in) behind a test
// server (wrapped by wrap when non-nil) and a driver config for it.
func setup(t *testing.T, sc simsophos.Config, wrap func(http.Handler) http.Handler) *bundle {
	t.Helper()
	sc.ClientID, sc.ClientSecret, sc.TenantID = clientID, secret, tenant
	sim := simsophos.New(sc)
	var h http.Handler = sim
	if wrap != nil {
		h = wrap(sim)
	}
	srv := simtest.ServeHandler(t, sim, h)
	return &bundle{sim: sim, srv: srv, cfg: sophos.Config{
		URL: srv.URL, AuthURL: srv.URL, ClientID: clientID, ClientSecret: secret, TenantID: tenant,
		PollEvery: 10 * time.Millisecond, UserAgent: "analysisfleet/test (sophos)",
		Timeout: 5 * time.Second, Transport: srv.Client().Transport, Now: sc.Now,
	}}
}

func fast() simsophos.Config {
	return simsophos.Config{PendingFor: 20 * time.Millisecond, RunFor: 30 * time.Millisecond}
}

func target(sha string) edr.Target {
	return edr.Target{JobID: "job-1", SHA256: sha, Platform: "win", FileName: "sample.exe"}
}

func asEdrError(t *testing.T, err error) *edr.Error {
	t.Helper()
	var e *edr.Error
	require.ErrorAs(t, err, &e)
	return e
}

// newClock is a manual clock shared by a simulator and a driver.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
}

func TestContract(t *testing.T) {
	edrtest.Run(t, edrtest.Harness{
		New: func(t *testing.T, o edrtest.Options) edrtest.Env {
			b := setup(t, fast(), nil)
			b.sim.SetHits(hitSHA, 25, "WIN-A", "WIN-B", "WIN-C")
			if o.Timeout > 0 {
				b.cfg.Timeout = o.Timeout
			}
			return edrtest.Env{
				Driver:    b.driver(t),
				Kit:       b.kit(),
				NewDriver: func() edr.Driver { return b.driver(t) },
			}
		},
		Target:      target(hitSHA),
		EmptyTarget: target(emptySHA),
		StartPath:   sophos.RunsPath,
		PollPath:    sophos.RunsPath + "/",
		Secrets:     []string{secret},
		Findable:    true,
	})
}

func TestKindAndQuery(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	require.Equal(t, edr.KindSophosXDR, b.driver(t).Kind())
	q, err := sophos.Query(strings.ToUpper(hitSHA))
	require.NoError(t, err)
	require.Equal(t, "SELECT meta_hostname, meta_ip_address, path, sha256, name, cmdline, time, endpoint_id "+
		"FROM xdr_data WHERE sha256 = '"+hitSHA+"'", q)
	_, err = sophos.Query(hitSHA[:63] + "'")
	require.ErrorIs(t, err, edr.ErrBadHash)
}

func TestStartSendsTheDocumentedQuery(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	ref, err := b.driver(t).Start(edrtest.Ctx(t), target(strings.ToUpper(hitSHA)), edrtest.NewIntent("t"))
	require.NoError(t, err)
	runs := b.sim.Runs()
	require.Len(t, runs, 1)
	require.Equal(t, hitSHA, runs[0].SHA256, "the hash is lower-cased before it is sent")
	want, _ := sophos.Query(hitSHA)
	require.Equal(t, want, runs[0].Query)

	var r map[string]any
	require.NoError(t, json.Unmarshal(ref, &r))
	require.Equal(t, runs[0].ID, r["runId"], "the reference names the run")
	require.NotEmpty(t, r["expiresAt"])
}

func TestPaginationOverThreePages(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	hosts := []string{"h1", "h2", "h3", "h4", "h5", "h6", "h7"}
	b.sim.SetHits(hitSHA, 2500, hosts...)
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 2500, res.Rows, "every row of every page is counted")
	require.Equal(t, 7, res.HostsTotal)
	require.ElementsMatch(t, hosts, res.Hosts)
	require.Empty(t, res.Notes)

	var pages []simhttp.Request
	for _, r := range b.kit().Requests() {
		if strings.HasSuffix(r.Path, "/results") {
			pages = append(pages, r)
		}
	}
	require.Len(t, pages, 3)
	require.Equal(t, "maxSize=1000&pageSize=1000", pages[0].Query)
	for _, p := range pages[1:] {
		require.Contains(t, p.Query, "pageFromKey=")
		require.Contains(t, p.Query, "pageSize=1000")
		require.Equal(t, http.StatusOK, p.Status, "the opaque base64 key round-trips through the query string")
	}
}

func TestHostsAreCapped(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	hosts := make([]string, 150)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%03d", i)
	}
	b.sim.SetHits(hitSHA, 300, hosts...)
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 300, res.Rows)
	require.Len(t, res.Hosts, edr.MaxListed)
	require.Equal(t, 150, res.HostsTotal)
}

func TestMaxRowsStopsPaging(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.MaxRows = 1500
	b.sim.SetHits(hitSHA, 2500, "h1")
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 2000, res.Rows)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "stopped after 2000 rows")
	require.Equal(t, 2, b.kit().Count(http.MethodGet, sophos.RunsPath+"/"+b.sim.Runs()[0].ID+"/results"))
}

// failNth answers the nth request whose path ends in suffix with 429 itself,
// without reaching the server.
type failNth struct {
	next   http.RoundTripper
	suffix string
	n      int32
	seen   atomic.Int32
}

func (f *failNth) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, f.suffix) && f.seen.Add(1) == f.n {
		return &http.Response{
			StatusCode: http.StatusTooManyRequests, Status: "429 Too Many Requests",
			Header: http.Header{"Retry-After": {"2"}, "Content-Type": {"application/json"}},
			Body:   io.NopCloser(strings.NewReader(`{"error":"TooManyRequests","message":"slow down"}`)),
			Proto:  "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Request: r,
		}, nil
	}
	return f.next.RoundTrip(r)
}

func TestCollectResumesAfterRateLimitMidway(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{}, nil)
	b.sim.SetHits(hitSHA, 2500, "h1", "h2")
	b.cfg.Transport = &failNth{next: b.cfg.Transport, suffix: "/results", n: 2}
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)

	_, err = d.Collect(ctx, ref)
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err))
	require.Equal(t, 2*time.Second, edr.RetryAfter(err))

	res, err := d.Collect(ctx, ref)
	require.NoError(t, err)
	require.EqualValues(t, 2500, res.Rows)
	require.Equal(t, 2, res.HostsTotal)
	require.Equal(t, 3, b.kit().Count(http.MethodGet, sophos.RunsPath+"/"), "page 1 is not fetched again")

	// A later Collect of the same run starts over (nothing is left behind).
	res, err = d.Collect(ctx, ref)
	require.NoError(t, err)
	require.EqualValues(t, 2500, res.Rows)
}

// ignorePageKey drops pageFromKey from results requests: a server that
// does not page that way and answers every request with the first page.
func ignorePageKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/results") {
			q := r.URL.Query()
			q.Del("pageFromKey")
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(w, r)
	})
}

// refusePages answers results requests with status instead of the
// simulator: those with a pageFromKey only, or every one when first is set.
func refusePages(status int, first bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/results") && (first || r.URL.Query().Has("pageFromKey")) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(status)
				_, _ = io.WriteString(w, `{"error":"BadRequest","message":"unknown parameter pageFromKey"}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestPageKeyIgnoredKeepsFirstPage(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), ignorePageKey)
	b.sim.SetHits(hitSHA, 2500, "h1", "h2")
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 1000, res.Rows, "the repeated page is not counted twice")
	require.Equal(t, 2, res.HostsTotal)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "stopped paging after 1000 rows")
	require.Contains(t, res.Notes[0], "same page again")
	require.Contains(t, res.Notes[0], "may be truncated")
	require.Equal(t, 2, b.kit().Count(http.MethodGet, sophos.RunsPath+"/"+b.sim.Runs()[0].ID+"/results"))
}

func TestLaterPageRefusedKeepsEarlierPages(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), refusePages(status, false))
			b.sim.SetHits(hitSHA, 2500, "h1", "h2", "h3")
			res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
			require.NoError(t, err)
			require.EqualValues(t, 1000, res.Rows)
			require.Equal(t, 3, res.HostsTotal)
			require.Len(t, res.Notes, 1)
			require.Contains(t, res.Notes[0], fmt.Sprintf("stopped paging after 1000 rows: Sophos answered HTTP %d", status))
			require.Contains(t, res.Notes[0], "may be truncated")
		})
	}
}

func TestFirstPageRefusedFails(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			b := setup(t, simsophos.Config{}, refusePages(status, true))
			b.sim.SetHits(hitSHA, 2500, "h1")
			d := b.driver(t)
			ref := startHit(t, d)
			_, err := d.Collect(edrtest.Ctx(t), ref)
			e := asEdrError(t, err)
			require.Equal(t, status, e.Status)
			require.False(t, e.Retryable)
		})
	}
}

func TestPolledTooFastSurfacesRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{RunFor: time.Hour, MinPollInterval: time.Second}, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	// Right after the start, from another process (this one paces itself
	// and would not ask): too fast.
	_, err = b.driver(t).Poll(ctx, ref)
	e := asEdrError(t, err)
	require.Equal(t, http.StatusTooManyRequests, e.Status)
	require.True(t, e.Retryable)
	require.Equal(t, time.Second, e.RetryAfter)
}

func TestPolledTooFastHonoured(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	b := setup(t, simsophos.Config{RunFor: 100 * time.Millisecond, MinPollInterval: interval}, nil)
	b.sim.SetHits(hitSHA, 3, "h1")
	// PollEvery is 10ms: far too fast for this API; the 429s slow it down.
	res, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Rows)
	require.Positive(t, edrtest.CountStatus(b.kit(), "", http.StatusTooManyRequests))
	edrtest.AssertRetryAfterHonoured(t, b.kit().Requests(), interval)
}

func TestPollSuggestsPollEvery(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{PendingFor: time.Hour}, nil)
	b.cfg.PollEvery = 0
	d := b.driver(t)
	ref := startHit(t, d)
	before := len(b.kit().Requests())
	st, err := d.Poll(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.False(t, st.Done)
	require.Len(t, b.kit().Requests(), before, "no poll sooner than PollEvery after the start")
	require.Positive(t, st.NextPoll)
	require.LessOrEqual(t, st.NextPoll, sophos.DefaultPollEvery)

	// Another process (a takeover) has no pacing memory: it asks at once.
	st, err = b.driver(t).Poll(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.Equal(t, "pending", st.Progress)
	require.Equal(t, sophos.DefaultPollEvery, st.NextPoll)
}

func TestRateLimitWithoutRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{}, nil)
	d := b.driver(t)
	ref := startHit(t, d)
	// The kit's 429 carries no Retry-After when RetryAfter is zero.
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath + "/", Status: http.StatusTooManyRequests, Count: 1})
	_, err := pollPaced(d, edrtest.Ctx(t), ref)
	require.True(t, edr.IsRetryable(err))
	require.Equal(t, 10*time.Millisecond, edr.RetryAfter(err), "PollEvery stands in for a missing Retry-After")
}

func TestTokenReusedAndRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simsophos.Config{TokenTTL: 10 * time.Minute, PendingFor: time.Minute, RunFor: time.Hour, Now: clk.Now}, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.IntentAt("t", clk.Now()))
	require.NoError(t, err)
	for range 3 {
		_, err = d.Poll(ctx, ref)
		require.NoError(t, err)
	}
	require.Equal(t, 1, b.sim.TokensIssued(), "the token is cached")

	clk.Advance(9*time.Minute + 30*time.Second) // inside the refresh margin, before expiry
	st, err := d.Poll(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, "started", st.Progress)
	require.Equal(t, 2, b.sim.TokensIssued(), "refreshed before it expired")
	require.Zero(t, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized), "no call was made with an expired token")
}

func TestTransparentReauthOn401(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{PendingFor: time.Hour}, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)

	b.sim.RevokeTokens()
	st, err := pollPaced(d, ctx, ref)
	require.NoError(t, err, "a rejected cached token is replaced once, transparently")
	require.Equal(t, "pending", st.Progress)
	require.Equal(t, 2, b.sim.TokensIssued())
	require.Equal(t, 1, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized))
}

func TestUnauthorizedWithFreshTokenIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath, Status: http.StatusUnauthorized})
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	require.Contains(t, err.Error(), "SOPHOS_CLIENT_ID/SOPHOS_CLIENT_SECRET/SOPHOS_TENANT_ID")
	require.Equal(t, 1, b.sim.TokensIssued(), "a token fetched for this call is not fetched again")
	edrtest.AssertNoSecrets(t, []string{secret}, err)
}

func TestUnauthorizedAfterReauthIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{PendingFor: time.Hour}, nil)
	d := b.driver(t)
	ref := startHit(t, d)
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath, Status: http.StatusUnauthorized})
	_, err := pollPaced(d, edrtest.Ctx(t), ref)
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Contains(t, e.Msg, "Sophos rejected the credentials")
	require.Equal(t, 2, b.sim.TokensIssued(), "exactly one re-authentication")
	require.Equal(t, 2, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized))
}

func TestWrongClientSecret(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.ClientSecret = "wrong-" + secret
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "token", e.Op)
	require.Contains(t, err.Error(), "Sophos rejected the credentials (check SOPHOS_CLIENT_ID/SOPHOS_CLIENT_SECRET/SOPHOS_TENANT_ID)")
	require.Zero(t, b.sim.TokensIssued())
	require.Equal(t, 2, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized), "the form-body request, then one with HTTP Basic")
	edrtest.AssertNoSecrets(t, []string{secret, b.cfg.ClientSecret}, err)
}

// tokenStatus answers successful token requests with status instead of 200.
func tokenStatus(status int) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != sophos.TokenPath {
				next.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, r)
			if rec.Code == http.StatusOK {
				rec.Code = status
			}
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
		})
	}
}

func TestTokenAnySuccessStatus(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusCreated, http.StatusNonAuthoritativeInfo} {
		b := setup(t, fast(), tokenStatus(status))
		_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
		require.NoError(t, err, "token answered %d", status)
		require.Equal(t, 1, b.sim.TokensIssued())
	}
}

// basicOnly is an identity service that refuses client credentials in the
// form body (401) and wants HTTP Basic client authentication. It counts
// the token requests of each kind.
type basicOnly struct {
	form, basic atomic.Int32
}

func (o *basicOnly) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != sophos.TokenPath {
			next.ServeHTTP(w, r)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(raw))
		if form.Has("client_secret") || form.Has("client_id") {
			o.form.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errorCode":"oauth.invalid_client","message":"use client_secret_basic"}`)
			return
		}
		if _, _, ok := r.BasicAuth(); ok {
			o.basic.Add(1)
		}
		r.Body = io.NopCloser(bytes.NewReader(raw))
		next.ServeHTTP(w, r)
	})
}

func TestTokenFallsBackToBasicClientAuth(t *testing.T) {
	t.Parallel()
	var o basicOnly
	b := setup(t, fast(), o.wrap)
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.EqualValues(t, 1, o.form.Load(), "the documented form-body request first")
	require.EqualValues(t, 1, o.basic.Load(), "then once with HTTP Basic")
	require.Equal(t, 1, b.sim.TokensIssued())

	// Wrong credentials still fail after the one basic attempt.
	var o2 basicOnly
	b = setup(t, fast(), o2.wrap)
	b.cfg.ClientSecret = "wrong-" + secret
	_, err = b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, http.StatusUnauthorized, e.Status)
	require.Contains(t, err.Error(), "Sophos rejected the credentials")
	require.EqualValues(t, 1, o2.form.Load())
	require.EqualValues(t, 1, o2.basic.Load())
	require.Zero(t, b.sim.TokensIssued())
	edrtest.AssertNoSecrets(t, []string{secret, b.cfg.ClientSecret}, err)
}

func TestIdentityServiceFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		fault     simhttp.Fault
		retryable bool
		want      string
	}{
		{"unavailable", simhttp.Fault{Status: 503}, true, "HTTP 503"},
		{"throttled", simhttp.Fault{Status: 429, RetryAfter: 3 * time.Second}, true, "retry after 3s"},
		{"malformed", simhttp.Fault{Malformed: true}, false, "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), nil)
			tc.fault.Path = sophos.TokenPath
			b.kit().Add(tc.fault)
			_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
			require.Error(t, err)
			require.Equal(t, tc.retryable, edr.IsRetryable(err), "%v", err)
			require.Contains(t, err.Error(), tc.want)
			require.Zero(t, b.kit().Count("", sophos.RunsPath), "no API call without a token")
		})
	}
}

func TestWrongTenantIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.TenantID = "00000000-0000-0000-0000-000000000000"
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.Equal(t, http.StatusForbidden, e.Status)
	require.False(t, e.Retryable)
	require.Contains(t, err.Error(), "SOPHOS_TENANT_ID")
}

func TestHeadersOnEveryCall(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.sim.SetHits(hitSHA, 1500, "h1")
	rec := captureOn(b)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	_, err = edrtest.Drive(ctx, d, target(hitSHA), ref)
	require.NoError(t, err)
	require.NoError(t, d.Cancel(ctx, ref))

	var api, tok int
	for _, r := range rec.Requests() {
		require.Equal(t, b.cfg.UserAgent, r.Header.Get("User-Agent"))
		if r.Path == sophos.TokenPath {
			tok++
			require.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
			require.Empty(t, r.Header.Get("X-Tenant-ID"))
			continue
		}
		api++
		require.True(t, strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ey"), "bearer JWT on %s %s", r.Method, r.Path)
		require.Equal(t, tenant, r.Header.Get("X-Tenant-ID"), "tenant on %s %s", r.Method, r.Path)
		require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	}
	require.Equal(t, 1, tok)
	require.GreaterOrEqual(t, api, 5) // start, polls, 2 result pages, cancel
	require.Zero(t, edrtest.CountStatus(b.kit(), "", http.StatusUnauthorized)+edrtest.CountStatus(b.kit(), "", http.StatusForbidden)+edrtest.CountStatus(b.kit(), "", http.StatusBadRequest))
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{PendingFor: 50 * time.Millisecond, RunFor: time.Hour}, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)

	require.NoError(t, d.Cancel(ctx, ref))
	runs := b.sim.Runs()
	require.Len(t, runs, 1)
	require.True(t, runs[0].Cancelled)
	require.Equal(t, simsophos.StatusFinished, runs[0].Status)
	require.Equal(t, simsophos.ResultCanceled, runs[0].Result)
	require.Equal(t, 1, b.sim.Cancels())
	require.Equal(t, 1, b.kit().Count(http.MethodPost, sophos.RunsPath+"/"+runs[0].ID+"/cancel"))

	_, err = pollPaced(d, ctx, ref)
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "canceled", e.Code)
	require.Contains(t, err.Error(), "run was canceled")

	require.NoError(t, d.Cancel(ctx, ref), "cancelling a finished run is not an error")
	require.Equal(t, 1, b.sim.Cancels())
}

func TestCancelUnknownRunSaysNotFound(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	d := b.driver(t)
	err := d.Cancel(edrtest.Ctx(t), edr.Ref(`{"runId":"00000000-dead-beef-0000-000000000000"}`))
	require.ErrorIs(t, err, sophos.ErrRunNotFound, "not reported as canceled")
	e := asEdrError(t, err)
	require.False(t, e.Retryable, "nothing to retry: the runner records it and moves on")
	require.Equal(t, http.StatusNotFound, e.Status)
	require.Regexp(t, `^sophos cancel: HTTP 404: code NotFound: nothing was canceled: query run not found or expired `+
		`\(correlationId [0-9a-f-]{36}, requestId [0-9a-f-]{36}\): the query run was not found at Sophos \(unknown or expired\)$`, err.Error())
	require.Zero(t, b.sim.Cancels())
	require.Equal(t, 1, edrtest.CountStatus(b.kit(), "", http.StatusNotFound), "the cancel reached Sophos and got 404")
}

func TestCancelServerErrorIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	d := b.driver(t)
	ref := startHit(t, d)
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath + "/", Status: 502, Count: 1})
	err := d.Cancel(edrtest.Ctx(t), ref)
	require.True(t, edr.IsRetryable(err), "%v", err)
}

func TestRunEndsBadly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ result, want string }{
		{simsophos.ResultFailed, "failed"},
		{simsophos.ResultTimedOut, "timed out"},
		{"exploded", `finished without results (result "exploded")`},
	} {
		t.Run(tc.result, func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), nil)
			b.sim.SetResult(hitSHA, tc.result)
			_, err := edrtest.Drive(edrtest.Ctx(t), b.driver(t), target(hitSHA), nil)
			e := asEdrError(t, err)
			require.False(t, e.Retryable)
			require.Equal(t, tc.result, e.Code)
			require.Contains(t, err.Error(), tc.want)
		})
	}
}

// runStatus answers status requests of every run with status and result
// notAvailable: a server that reports the end of a run in its status only.
func runStatus(status string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := strings.CutPrefix(r.URL.Path, sophos.RunsPath+"/")
			if !ok || r.Method != http.MethodGet || strings.Contains(id, "/") {
				next.ServeHTTP(w, r)
				return
			}
			simhttp.WriteJSON(w, http.StatusOK, map[string]string{"id": id, "status": status, "result": "notAvailable"})
		})
	}
}

func TestFinalStatusWithoutResult(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ status, want string }{
		{"failed", `the query run failed at Sophos (status "failed", result "notAvailable")`},
		{"Error", `the query run failed at Sophos (status "Error", result "notAvailable")`},
		{"ABORTED", `the query run failed at Sophos (status "ABORTED", result "notAvailable")`},
		{"timedOut", `the query run timed out at Sophos (status "timedOut", result "notAvailable")`},
		{"cancelled", "the query run was canceled at Sophos"},
		{"Canceled", "the query run was canceled at Sophos"},
	} {
		t.Run(tc.status, func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), runStatus(tc.status))
			d := b.driver(t)
			ref := startHit(t, d)
			_, err := pollPaced(d, edrtest.Ctx(t), ref)
			e := asEdrError(t, err)
			require.False(t, e.Retryable)
			require.Equal(t, tc.status, e.Code)
			require.Contains(t, err.Error(), tc.want)
		})
	}
	t.Run("unknown status is in progress", func(t *testing.T) {
		t.Parallel()
		b := setup(t, fast(), runStatus("queued"))
		d := b.driver(t)
		ref := startHit(t, d)
		st, err := pollPaced(d, edrtest.Ctx(t), ref)
		require.NoError(t, err)
		require.False(t, st.Done)
		require.Equal(t, "queued", st.Progress)
	})
}

func TestExpiredRunIsPermanent(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, simsophos.Config{Now: clk.Now}, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target(hitSHA), edrtest.IntentAt("t", clk.Now()))
	require.NoError(t, err)
	clk.Advance(simsophos.DefaultRunTTL + time.Second)
	_, err = d.Poll(ctx, ref)
	e := asEdrError(t, err)
	require.Equal(t, http.StatusNotFound, e.Status)
	require.False(t, e.Retryable)
	require.Contains(t, e.Msg, "unknown to Sophos (it expires at 2025-03-01T14:00:00.000Z)")
	_, err = d.Collect(ctx, ref)
	require.False(t, edr.IsRetryable(err))
	require.Equal(t, 2, b.sim.TokensIssued(), "the token expired meanwhile and was refreshed")
}

func TestCollectBeforeFinishedIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{PendingFor: time.Hour}, nil)
	d := b.driver(t)
	ref := startHit(t, d)
	_, err := d.Collect(edrtest.Ctx(t), ref)
	require.True(t, edr.IsRetryable(err), "%v", err)
	require.Equal(t, 10*time.Millisecond, edr.RetryAfter(err))
}

func TestMalformedResultsArePermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, simsophos.Config{}, nil)
	d := b.driver(t)
	ref := startHit(t, d)
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath + "/" + b.sim.Runs()[0].ID + "/results", Malformed: true})
	_, err := d.Collect(edrtest.Ctx(t), ref)
	edrtest.RequirePermanent(t, err, "malformed response")
}

func TestStartMalformedIsPermanent(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.kit().Add(simhttp.Fault{Path: sophos.RunsPath, Method: http.MethodPost, Malformed: true})
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	edrtest.RequirePermanent(t, err, "malformed")
}

func TestBadReference(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	for _, ref := range []string{`not json`, `{}`, `{"runId":""}`, `{"runId":"../../admin"}`, `{"runId":".."}`} {
		_, err := d.Poll(ctx, edr.Ref(ref))
		require.Error(t, err, ref)
		require.False(t, edr.IsRetryable(err), ref)
		_, err = d.Collect(ctx, edr.Ref(ref))
		require.False(t, edr.IsRetryable(err), ref)
		require.Error(t, d.Cancel(ctx, edr.Ref(ref)), ref)
	}
	require.Zero(t, len(b.kit().Requests()), "nothing is sent for an unusable reference")
}

// echoSecrets answers the start request with 400 and a body that repeats
// the bearer token and the client secret (a careless API or proxy).
func echoSecrets(cut bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != sophos.RunsPath {
				next.ServeHTTP(w, r)
				return
			}
			body := fmt.Sprintf(`{"message":"rejected %s (client secret %s)"}`, r.Header.Get("Authorization"), secret)
			if cut { // the secret straddles the 256-byte snippet the error keeps
				body = strings.Repeat("x", 256-len(secret)/2) + secret
			}
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, body)
		})
	}
}

func TestSecretsAndTokenNeverInErrors(t *testing.T) {
	t.Parallel()
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut=%v", cut), func(t *testing.T) {
			t.Parallel()
			b := setup(t, fast(), echoSecrets(cut))
			rec := captureOn(b)
			_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
			e := asEdrError(t, err)
			require.Equal(t, http.StatusBadRequest, e.Status)
			require.False(t, e.Retryable)
			require.Contains(t, err.Error(), "REDACTED")

			var tok string
			for _, r := range rec.Requests() {
				if a := r.Header.Get("Authorization"); a != "" {
					tok = strings.TrimPrefix(a, "Bearer ")
				}
			}
			require.NotEmpty(t, tok)
			edrtest.AssertNoSecrets(t, []string{secret, tok, secret[:len(secret)/2]}, err)
		})
	}
}

func TestConfigValidationAndString(t *testing.T) {
	t.Parallel()
	good := sophos.Config{URL: "https://api-eu01.central.sophos.com", AuthURL: "https://id.sophos.com",
		ClientID: clientID, ClientSecret: secret, TenantID: tenant}
	_, err := sophos.New(good)
	require.NoError(t, err)
	for _, tc := range []struct {
		field string
		mod   func(*sophos.Config)
	}{
		{"URL", func(c *sophos.Config) { c.URL = "ftp://x" }},
		{"URL", func(c *sophos.Config) { c.URL = "https://user:pw@x" }},
		{"AuthURL", func(c *sophos.Config) { c.AuthURL = "id.sophos.com" }},
		{"ClientID", func(c *sophos.Config) { c.ClientID = "" }},
		{"ClientSecret", func(c *sophos.Config) { c.ClientSecret = " " }},
		{"TenantID", func(c *sophos.Config) { c.TenantID = "  " }},
		{"GlobalURL", func(c *sophos.Config) { c.GlobalURL = "api.central.sophos.com" }},
		{"TenantID", func(c *sophos.Config) { c.TenantID = "a\r\nX-Evil: 1" }},
		{"PollEvery", func(c *sophos.Config) { c.PollEvery = -1 }},
		{"MaxRows", func(c *sophos.Config) { c.MaxRows = -1 }},
		{"Window", func(c *sophos.Config) { c.Window = -time.Hour }},
		{"Window", func(c *sophos.Config) { c.Window = sophos.MaxWindow + time.Hour }},
		{"NameIn", func(c *sophos.Config) { c.NameIn = "body" }},
		{"PageSize", func(c *sophos.Config) { c.PageSize = sophos.MaxPageSize + 1 }},
		{"MaxPages", func(c *sophos.Config) { c.MaxPages = -1 }},
		{"MaxResultBytes", func(c *sophos.Config) { c.MaxResultBytes = -1 }},
		{"MaxRowBytes", func(c *sophos.Config) { c.MaxRowBytes = -1 }},
		{"FindPages", func(c *sophos.Config) { c.FindPages = -1 }},
	} {
		c := good
		tc.mod(&c)
		_, err := sophos.New(c)
		require.ErrorContains(t, err, "Config."+tc.field)
		require.NotContains(t, err.Error(), secret)
	}
	for _, s := range []string{good.String(), fmt.Sprintf("%v", good), fmt.Sprintf("%+v", good), fmt.Sprintf("%#v", good)} {
		require.NotContains(t, s, secret)
		require.Contains(t, s, clientID)
	}
}

func TestConcurrentJobsShareOneToken(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.sim.SetHits(hitSHA, 10, "h1")
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			res, err := edrtest.Drive(ctx, d, target(hitSHA), nil)
			if err == nil && res.Rows != 10 {
				err = fmt.Errorf("rows %d", res.Rows)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, b.sim.TokensIssued())
	require.Len(t, b.sim.Runs(), 8)
}

// pollPaced polls like the runner: when the driver answers "not yet" (it
// paces its own requests per run) it waits as told and asks again.
func pollPaced(d *sophos.Driver, ctx context.Context, ref edr.Ref) (edr.Status, error) {
	for {
		st, err := d.Poll(ctx, ref)
		if err != nil || st.Done || st.Progress != "" || st.NextPoll <= 0 {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(st.NextPoll):
		}
	}
}
