package cytomic_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	simcytomic "github.com/analysisfleet/analysisfleet/sim/cytomic"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	user      = "orion-api"
	password  = "Pa55-w0rd-never-shown"
	targetSHA = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	emptySHA  = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

var (
	target      = edr.Target{JobID: "job-1", SHA256: targetSHA, Platform: "win", FileName: "sample.exe"}
	emptyTarget = edr.Target{JobID: "job-2", SHA256: emptySHA, Platform: "win"}
)

// newClock is a manual clock shared by the simulator and the driver
// (operation TTL, token and URL lifetimes). Rounds still run on real time.
func newClock() *testutil.Clock {
	return testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

type opts struct {
	sim     simcytomic.Config
	clients []simcytomic.Client
	clock   *testutil.Clock
	timeout time.Duration
	wrap    func(sim *simcytomic.Server, next http.Handler) http.Handler
	driver  func(*cytomic.Config)
}

type env struct {
	sim *simcytomic.Server
	srv *httptest.Server
	cfg cytomic.Config
	drv *cytomic.Driver
	// auth records every bearer token the driver sent.
	auth *authRecorder
}

func defaultClients() []simcytomic.Client {
	return []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
		{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: 10 * time.Millisecond},
		{MUID: "M-B", Hostname: "WIN-B", AnswerAfter: 30 * time.Millisecond},
		{MUID: "M-C", Hostname: "WIN-C", AnswerAfter: 50 * time.Millisecond},
	}}}
}

func setup(t *testing.T, o opts) *env {
	t.Helper()
	o.sim.User, o.sim.Password = user, password
	o.sim.ClientID, o.sim.ClientSecret = docClientID, docClientSecret
	if o.clock != nil {
		o.sim.Now = o.clock.Now
	}
	sim := simcytomic.New(o.sim)
	for _, c := range cmpOr(o.clients, defaultClients()) {
		sim.AddClient(c)
	}
	sim.SetHits(targetSHA, "WIN-A", "WIN-B")
	var h http.Handler = sim
	if o.wrap != nil {
		h = o.wrap(sim, sim)
	}
	srv := simtest.ServeHandler(t, sim, h)

	rec := &authRecorder{next: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(rec.next.(*http.Transport).CloseIdleConnections)
	cfg := cytomic.Config{
		URL:          srv.URL,
		TokenURL:     srv.URL + simcytomic.TokenPath,
		User:         user,
		Password:     password,
		ClientID:     docClientID,
		ClientSecret: docClientSecret,
		ClientIDs:    []string{"1001"},
		Round:        20 * time.Millisecond,
		Timeout:      o.timeout,
		UserAgent:    "analysisfleet/test (cytomic)",
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{
			Hosts: []string{"127.0.0.1"}, Insecure: true, Timeout: 5 * time.Second,
			UserAgent: "analysisfleet/test (cytomic)",
		}),
		Transport: rec,
	}
	if o.clock != nil {
		cfg.Now = o.clock.Now
	}
	if o.driver != nil {
		o.driver(&cfg)
	}
	e := &env{sim: sim, srv: srv, cfg: cfg, auth: rec}
	e.drv = e.newDriver(t)
	return e
}

// start starts an operation for target through e.drv.
func (e *env) start(t *testing.T) edr.Ref {
	t.Helper()
	ref, err := e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
	require.NoError(t, err)
	return ref
}

func (e *env) newDriver(t *testing.T) *cytomic.Driver {
	t.Helper()
	d, err := cytomic.New(e.cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

func cmpOr[T any](a, b []T) []T {
	if len(a) > 0 {
		return a
	}
	return b
}

// authRecorder remembers the bearer tokens the driver sent.
type authRecorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	tokens map[string]bool
}

func (a *authRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		a.mu.Lock()
		if a.tokens == nil {
			a.tokens = map[string]bool{}
		}
		a.tokens[tok] = true
		a.mu.Unlock()
	}
	return a.next.RoundTrip(r)
}

func (a *authRecorder) secrets() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []string{password, docClientSecret}
	for t := range a.tokens {
		out = append(out, t)
	}
	return out
}

// pollUntilDone polls ref until Done, retrying retryable errors.
func pollUntilDone(t *testing.T, d edr.Driver, ref edr.Ref) edr.Status {
	t.Helper()
	ctx := edrtest.Ctx(t)
	for {
		st, err := d.Poll(ctx, ref)
		if err != nil {
			require.True(t, edr.IsRetryable(err), "poll: %v", err)
			continue
		}
		if st.Done {
			return st
		}
	}
}

// collectCountingState starts and polls target to the end, then collects
// it, and returns how many /state requests Collect itself sent (Poll asks
// /state too: the counters decide when an operation is done).
func collectCountingState(t *testing.T, e *env) (edr.Result, int, error) {
	t.Helper()
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	pollUntilDone(t, e.drv, ref)
	_, before := e.sim.BatchSizes()
	res, err := e.drv.Collect(ctx, ref)
	_, after := e.sim.BatchSizes()
	return res, len(after) - len(before), err
}

func mean(xs []int) float64 {
	if len(xs) == 0 {
		return 0
	}
	sum := 0
	for _, x := range xs {
		sum += x
	}
	return float64(sum) / float64(len(xs))
}

func TestContract(t *testing.T) {
	edrtest.Run(t, edrtest.Harness{
		New: func(t *testing.T, o edrtest.Options) edrtest.Env {
			e := setup(t, opts{timeout: o.Timeout})
			return edrtest.Env{
				Driver:    e.drv,
				Kit:       e.sim.Kit(),
				NewDriver: func() edr.Driver { return e.newDriver(t) },
			}
		},
		Target:      target,
		EmptyTarget: emptyTarget,
		StartPath:   cytomic.ClientPath,
		PollPath:    cytomic.InfoPath,
		Secrets:     []string{password, docClientSecret},
	})
}

func TestKind(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	require.Equal(t, edr.KindCytomicOSQuery, e.drv.Kind())
}

func TestHappyPathResult(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	require.NoError(t, err)
	require.Equal(t, int64(2*simcytomic.RowsPerHost), res.Rows)
	require.Equal(t, []string{"WIN-A", "WIN-B"}, res.Hosts)
	require.Equal(t, 2, res.HostsTotal)
	require.Empty(t, res.Notes, "every machine answered")

	ops := e.sim.Operations()
	require.Len(t, ops, 1)
	require.Equal(t, cytomic.Query(targetSHA), ops[0].Query)
	require.Equal(t, time.Hour, ops[0].TTL, "default TTL sent in seconds")
	for _, r := range e.sim.Kit().Requests() {
		require.Equal(t, "analysisfleet/test (cytomic)", r.UserAgent, "%s %s", r.Method, r.Path)
	}
}

func TestBatching200Operations(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := setup(t, opts{
		clock: clk,
		clients: []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
			{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: time.Minute},
			{MUID: "M-B", Hostname: "WIN-B", AnswerAfter: time.Minute},
		}}},
		driver: func(c *cytomic.Config) { c.Round = 50 * time.Millisecond },
	})
	const n = 200
	ctx := edrtest.Ctx(t)
	results := make([]edr.Result, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = edrtest.Drive(ctx, e.drv, target, nil)
		})
	}
	// Every operation polls; nobody has answered yet (the fake clock stands
	// still). Once a round carried all of them, let the machines answer.
	require.Eventually(t, func() bool {
		info, _ := e.sim.BatchSizes()
		return len(e.sim.Operations()) == n && len(info) > 0 && info[len(info)-1] == n
	}, 20*time.Second, 10*time.Millisecond)
	clk.Advance(2 * time.Minute)
	wg.Wait()

	for i := range n {
		require.NoError(t, errs[i], "drive %d", i)
		require.Equal(t, int64(2*simcytomic.RowsPerHost), results[i].Rows)
	}
	info, state := e.sim.BatchSizes()
	t.Logf("/info batch sizes %v, /state batch sizes %v", info, state)
	require.Greater(t, mean(info), 50.0, "operation IDs per /info request")
	require.Greater(t, mean(state), 50.0, "operation IDs per /state request")
	require.Equal(t, n, e.sim.Kit().Count("GET", simcytomic.FilesPath), "one download per operation")
	st := e.drv.Stats()
	require.Equal(t, int64(len(info)), st.InfoRequests)
	require.Equal(t, int64(len(state)), st.StateRequests)
}

func TestBatchSplitAboveMaxBatch(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) { c.MaxBatch = 2; c.Round = 50 * time.Millisecond }})
	ctx := edrtest.Ctx(t)
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { _, errs[i] = edrtest.Drive(ctx, e.drv, target, nil) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	info, state := e.sim.BatchSizes()
	for _, n := range append(info, state...) {
		require.LessOrEqual(t, n, 2)
	}
	st := e.drv.Stats()
	require.Greater(t, st.InfoRequests, st.Rounds, "some round needed more than one /info request")
}

func TestExpiredDownloadURLIsRefreshed(t *testing.T) {
	t.Parallel()
	var expired atomic.Bool
	e := setup(t, opts{wrap: func(sim *simcytomic.Server, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, simcytomic.FilesPath) && expired.CompareAndSwap(false, true) {
				sim.ExpireURLs() // the five minutes ran out before the download
			}
			next.ServeHTTP(w, r)
		})
	}})
	res, stateCalls, err := collectCountingState(t, e)
	require.NoError(t, err)
	require.Equal(t, int64(2*simcytomic.RowsPerHost), res.Rows)

	var files []int
	for _, r := range e.sim.Kit().Requests() {
		if strings.HasPrefix(r.Path, simcytomic.FilesPath) {
			files = append(files, r.Status)
		}
	}
	require.Equal(t, []int{http.StatusForbidden, http.StatusOK}, files)
	require.Equal(t, 1, stateCalls, "the poll's answer gave the first URL; a second /state answer brought the fresh one")
}

func TestDownloadGoneOrNotFoundAsksStateAgain(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusGone, http.StatusNotFound, http.StatusBadRequest, http.StatusUnauthorized} {
		e := setup(t, opts{})
		e.sim.Kit().Add(simhttp.Fault{Path: simcytomic.FilesPath, Status: status, Count: 1})
		res, stateCalls, err := collectCountingState(t, e)
		require.NoError(t, err, "HTTP %d", status)
		require.Positive(t, res.Rows)
		require.Equal(t, 1, stateCalls, "HTTP %d: a second /state answer (the first was the poll's)", status)
	}
}

// TestCollectRightAfterThePollUsesItsAnswers: the poll that found the
// operations settled fetched what Collect needs; Collect downloads at once
// instead of waiting for (and sending) another round. A driver that did
// not poll them asks.
func TestCollectRightAfterThePollUsesItsAnswers(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	pollUntilDone(t, e.drv, ref)
	before := e.drv.Stats()
	res, err := e.drv.Collect(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, int64(2*simcytomic.RowsPerHost), res.Rows)
	after := e.drv.Stats()
	require.Equal(t, before.InfoRequests, after.InfoRequests, "no /info request")
	require.Equal(t, before.StateRequests, after.StateRequests, "no /state request")

	other := e.newDriver(t)
	again, err := other.Collect(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, res.Rows, again.Rows)
	require.Equal(t, int64(1), other.Stats().StateRequests, "a driver that did not poll asks")
}

func TestDownloadURLAlwaysExpiredIsRetryable(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{wrap: func(sim *simcytomic.Server, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, simcytomic.FilesPath) {
				sim.ExpireURLs()
			}
			next.ServeHTTP(w, r)
		})
	}})
	_, stateCalls, err := collectCountingState(t, e)
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err), "%v", err)
	require.Contains(t, err.Error(), "download URL")
	require.NotContains(t, err.Error(), "sig=")
	require.Equal(t, 2, stateCalls, "a bounded number of /state answers (the first was the poll's)")
}

func TestTokenRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := setup(t, opts{clock: clk, sim: simcytomic.Config{TokenTTL: 10 * time.Minute},
		clients: []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
			{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: 5 * time.Minute},
		}}}})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	require.Equal(t, 1, e.sim.TokensIssued())

	// Still valid at the simulator for 30 s, but within the refresh margin.
	clk.Advance(9*time.Minute + 30*time.Second)
	st, err := e.drv.Poll(ctx, ref)
	require.NoError(t, err)
	require.True(t, st.Done)
	require.Equal(t, 2, e.sim.TokensIssued(), "a new token was requested shortly before expiry")

	clk.Advance(20 * time.Minute) // the second token is long gone
	res, err := e.drv.Collect(ctx, ref)
	require.NoError(t, err)
	require.Positive(t, res.Rows)
	require.Equal(t, 3, e.sim.TokensIssued())
	require.Zero(t, edrtest.CountStatus(e.sim.Kit(), "/osQuery/", http.StatusUnauthorized), "refreshed before any 401")
}

func TestReauthenticatesOnceOn401(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	e.sim.RevokeTokens() // e.g. the identity provider restarted
	pollUntilDone(t, e.drv, ref)
	res, err := e.drv.Collect(ctx, ref)
	require.NoError(t, err)
	require.Positive(t, res.Rows)

	require.Equal(t, 2, e.sim.TokensIssued())
	reqs := e.sim.Kit().Requests()
	var after401 []string
	for i, r := range reqs {
		if r.Status == http.StatusUnauthorized {
			after401 = append(after401, reqs[i+1].Path)
		}
	}
	require.Equal(t, []string{simcytomic.TokenPath}, after401, "one 401, followed by a new token")
}

func TestPersistent401IsPermanent(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	e.sim.Kit().Add(simhttp.Fault{Path: cytomic.ClientPath, Status: http.StatusUnauthorized})
	_, err := e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
	edrtest.RequirePermanent(t, err, "rejected a freshly issued access token")
	require.Equal(t, 2, e.sim.Kit().Count("POST", cytomic.ClientPath), "exactly one re-authentication, no loop")
	require.Equal(t, 2, e.sim.TokensIssued())
	edrtest.AssertNoSecrets(t, e.auth.secrets(), err)
}

func TestBadCredentials(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) { c.Password = "wrong-" + password }})
	_, err := e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
	edrtest.RequirePermanent(t, err, "CYTOMIC_PASSWORD", "invalid_grant")
	require.Zero(t, e.sim.Kit().Count("", "/osQuery/"), "no API call without a token")
	edrtest.AssertNoSecrets(t, []string{password, "wrong-" + password}, err)
}

// TestClientCredentialsRefused: Cytomic's CAS server wants the OAuth client
// credentials; without them, or with wrong ones, the error names the
// settings to fix.
func TestClientCredentialsRefused(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		id, secret, want string
	}{
		"missing": {"", "", "CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET"},
		"wrong":   {docClientID, "wrong-" + docClientSecret, "check CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, opts{driver: func(c *cytomic.Config) { c.ClientID, c.ClientSecret = tc.id, tc.secret }})
			_, err := e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
			edrtest.RequirePermanent(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), "invalid_client")
			require.Zero(t, e.sim.Kit().Count("", "/osQuery/"), "no API call without a token")
			edrtest.AssertNoSecrets(t, []string{password, docClientSecret, "wrong-" + docClientSecret}, err)
		})
	}
}

func TestTokenEndpointOutageIsRetryable(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	e.sim.Kit().Add(simhttp.Fault{Path: simcytomic.TokenPath, Status: http.StatusServiceUnavailable, Count: 1})
	_, err := e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err), "%v", err)
	_, err = e.drv.Start(edrtest.Ctx(t), target, edrtest.NewIntent("t"))
	require.NoError(t, err)
}

func TestAllMachinesFailedIsPermanent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		machine simcytomic.Machine
		code    string
		want    string
	}{
		{"201", simcytomic.Machine{ErrorCode: 201}, "201", "Cytomic 201 ErrorExecutingOsQuery: error executing the OSQuery statement"},
		{"202", simcytomic.Machine{OS: "linux"}, "202", "Cytomic 202 ErrorOsNotSupported: Operating system not supported"},
		{"203", simcytomic.Machine{OSQueryMissing: true}, "203", "Cytomic 203 ErrorOsQueryNotInstalled: OSQuery not installed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var machines []simcytomic.Machine
			for i, h := range []string{"H1", "H2"} {
				m := tc.machine
				m.MUID, m.Hostname, m.AnswerAfter = "M"+h, h, time.Duration(i+1)*10*time.Millisecond
				machines = append(machines, m)
			}
			e := setup(t, opts{clients: []simcytomic.Client{{PandaID: "1001", Machines: machines}}})
			_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
			edrtest.RequirePermanent(t, err)
			var ee *edr.Error
			require.ErrorAs(t, err, &ee)
			require.Equal(t, tc.code, ee.Code)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), "all 2 machines")
		})
	}
}

func TestMixedCodesAllFailed(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{clients: []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
		{MUID: "M1", Hostname: "L1", OS: "linux"},
		{MUID: "M2", Hostname: "L2", OS: "macos"},
		{MUID: "M3", Hostname: "W3", OSQueryMissing: true},
	}}}})
	_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	edrtest.RequirePermanent(t, err)
	var ee *edr.Error
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "202", ee.Code, "the most common code")
	require.Contains(t, err.Error(), "every machine failed")
	require.Contains(t, err.Error(), "Cytomic 202 ErrorOsNotSupported: Operating system not supported")
	require.Contains(t, err.Error(), "[2 machines]")
	require.Contains(t, err.Error(), "Cytomic 203 ErrorOsQueryNotInstalled")
}

func TestPartialErrorsSucceedWithNote(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{clients: []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
		{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: 10 * time.Millisecond},
		{MUID: "M-B", Hostname: "WIN-B", AnswerAfter: 10 * time.Millisecond, Partial: true},
		{MUID: "M-L", Hostname: "LNX-1", OS: "linux", AnswerAfter: 10 * time.Millisecond},
	}}}})
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	require.NoError(t, err)
	require.Equal(t, int64(2*simcytomic.RowsPerHost), res.Rows)
	require.Equal(t, []string{"WIN-A", "WIN-B"}, res.Hosts)
	require.Equal(t, []string{
		"1 of 3 machines failed: 1× Cytomic 202 ErrorOsNotSupported: Operating system not supported (OSQuery runs on Windows only)",
		"1 of 3 machines returned partial results (PartiallySucceeded)",
	}, res.Notes)
}

func TestTTLEndsWithMachinesThatNeverAnswered(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := setup(t, opts{clock: clk, clients: []simcytomic.Client{{PandaID: "1001", Machines: []simcytomic.Machine{
		{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: time.Minute},
		{MUID: "M-Z", Hostname: "WIN-Z", Never: true},
		{MUID: "M-Y", Hostname: "WIN-Y", AnswerAfter: 3 * time.Hour}, // after the TTL: never
	}}}})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)

	clk.Advance(2 * time.Minute)
	st, err := e.drv.Poll(ctx, ref)
	require.NoError(t, err)
	require.False(t, st.Done, "two machines are still pending and the TTL has not passed")
	require.Contains(t, st.Progress, "1/3 machines answered")
	require.Positive(t, st.NextPoll)
	require.LessOrEqual(t, st.NextPoll, 10*time.Millisecond, "poll again at once: the call blocks for a round")

	clk.Advance(time.Hour)
	st, err = e.drv.Poll(ctx, ref)
	require.NoError(t, err)
	require.True(t, st.Done, "the operation TTL has passed")
	require.Contains(t, st.Progress, "TTL")

	res, err := e.drv.Collect(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, int64(simcytomic.RowsPerHost), res.Rows)
	require.Equal(t, []string{"WIN-A"}, res.Hosts)
	require.Equal(t, []string{"2 of 3 machines never answered before the operation TTL"}, res.Notes)
}

func TestCancelIsUnsupportedAndSendsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) { c.Round = time.Hour }})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	before := len(e.sim.Kit().Requests())

	// A Poll waiting for the (hour-long) round is released by Cancel.
	done := make(chan error, 1)
	go func() {
		_, err := e.drv.Poll(ctx, ref)
		done <- err
	}()
	var pollErr error
	require.ErrorIs(t, e.drv.Cancel(ctx, ref), edr.ErrCancelUnsupported)
	require.Eventually(t, func() bool {
		// Repeat until the Poll has registered and been released.
		_ = e.drv.Cancel(ctx, ref)
		select {
		case pollErr = <-done:
			return true
		default:
			return false
		}
	}, 5*time.Second, 5*time.Millisecond)
	require.Error(t, pollErr)
	require.False(t, edr.IsRetryable(pollErr))
	require.Contains(t, pollErr.Error(), "abandoned")
	require.Len(t, e.sim.Kit().Requests(), before, "Cancel sends no request")
	require.Zero(t, e.drv.Stats().Rounds, "the dropped Poll never caused a round")

	require.ErrorIs(t, e.drv.Cancel(ctx, edr.Ref(`garbage`)), edr.ErrCancelUnsupported)
}

func TestCloseReleasesWaiters(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) { c.Round = time.Hour }})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	d := e.newDriver(t)
	done := make(chan error, 1)
	go func() {
		_, err := d.Poll(ctx, ref)
		done <- err
	}()
	d.Close()
	err := <-done
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err), "another worker may continue: %v", err)
	_, err = d.Collect(ctx, ref)
	require.True(t, edr.IsRetryable(err))
	d.Close() // twice is fine
}

func TestRateLimitHoldsEveryOperation(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	ctx := edrtest.Ctx(t)
	refs := make([]edr.Ref, 5)
	for i := range refs {
		var err error
		refs[i], err = e.drv.Start(ctx, target, edrtest.NewIntent("t"))
		require.NoError(t, err)
	}
	const retryAfter = time.Second
	e.sim.Kit().Add(simhttp.Fault{Path: cytomic.InfoPath, Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Count: 1})
	var wg sync.WaitGroup
	errs := make([]error, len(refs))
	for i := range refs {
		wg.Go(func() { _, errs[i] = edrtest.Drive(ctx, e.drv, target, refs[i]) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, edrtest.CountStatus(e.sim.Kit(), cytomic.InfoPath, http.StatusTooManyRequests))
	edrtest.AssertRetryAfterHonoured(t, e.sim.Kit().Requests(), retryAfter)

	// A Start during the hold is refused locally, without a request.
	e.sim.Kit().Add(simhttp.Fault{Path: cytomic.InfoPath, Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Count: 1})
	_, err := e.drv.Poll(ctx, refs[0])
	require.Greater(t, edr.RetryAfter(err), retryAfter/2)
	starts := e.sim.Kit().Count("POST", cytomic.ClientPath)
	_, err = e.drv.Start(ctx, target, edrtest.NewIntent("t"))
	require.True(t, edr.IsRetryable(err))
	require.Positive(t, edr.RetryAfter(err))
	require.Equal(t, starts, e.sim.Kit().Count("POST", cytomic.ClientPath))
}

func TestNumericIDs(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcytomic.Config{NumericIDs: true}})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	var r struct {
		Ops []map[string]json.RawMessage `json:"ops"`
	}
	require.NoError(t, json.Unmarshal(ref, &r))
	require.NotContains(t, string(r.Ops[0]["operationId"]), `"`, "the ID keeps its JSON number type")
	res, err := edrtest.Drive(ctx, e.drv, target, ref)
	require.NoError(t, err)
	require.Equal(t, int64(2*simcytomic.RowsPerHost), res.Rows)
}

func TestSeveralClients(t *testing.T) {
	t.Parallel()
	clients := append(defaultClients(), simcytomic.Client{PandaID: "1002", Machines: []simcytomic.Machine{
		{MUID: "M-X", Hostname: "WIN-A", AnswerAfter: 10 * time.Millisecond}, // same name in another client
		{MUID: "M-Y", Hostname: "WIN-B", OS: "linux"},
	}})
	e := setup(t, opts{clients: clients, driver: func(c *cytomic.Config) { c.ClientIDs = []string{"1001", "1002", "1001"} }})
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	require.NoError(t, err)
	require.Len(t, e.sim.Operations(), 2, "one operation per distinct client")
	require.Equal(t, int64(3*simcytomic.RowsPerHost), res.Rows)
	require.Equal(t, []string{"WIN-A", "WIN-B"}, res.Hosts, "hosts are distinct across files")
	require.Equal(t, 2, res.HostsTotal)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "1 of 5 machines failed")
}

func TestUnknownOperation(t *testing.T) {
	t.Parallel()
	clk := newClock()
	e := setup(t, opts{clock: clk})
	ctx := edrtest.Ctx(t)
	ref := edr.Ref(`{"ops":[{"pandaID":"1001","operationId":"no-such-op","machines":2}],"startedAt":` +
		itoa(clk.Now().UnixMilli()) + `,"ttl":3600}`)
	st, err := e.drv.Poll(ctx, ref)
	require.NoError(t, err, "just started: not visible yet")
	require.False(t, st.Done)

	clk.Advance(5 * time.Minute)
	_, err = e.drv.Poll(ctx, ref)
	edrtest.RequirePermanent(t, err, "does not know operation(s) no-such-op")
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestBadReference(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	ctx := edrtest.Ctx(t)
	for _, raw := range []string{`nope`, `{}`, `{"ops":[],"startedAt":1,"ttl":1}`, `{"ops":[{"pandaID":"1"}],"startedAt":1,"ttl":1}`} {
		_, err := e.drv.Poll(ctx, edr.Ref(raw))
		require.Error(t, err, raw)
		require.False(t, edr.IsRetryable(err), raw)
		_, err = e.drv.Collect(ctx, edr.Ref(raw))
		require.Error(t, err, raw)
		require.False(t, edr.IsRetryable(err), raw)
	}
	require.Zero(t, len(e.sim.Kit().Requests()))
}

func TestResultFileTooLarge(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) { c.MaxFile = 16 }})
	_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	edrtest.RequirePermanent(t, err, "larger than the 16-byte limit")
}

func TestDownloadHostNotAllowed(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{driver: func(c *cytomic.Config) {
		c.Downloader = httpc.NewDownloader(httpc.DownloadConfig{Hosts: []string{".amazonaws.com"}})
	}})
	_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target, nil)
	edrtest.RequirePermanent(t, err, "DOWNLOAD_HOSTS")
	require.NotContains(t, err.Error(), "sig=")
	require.Zero(t, e.sim.Kit().Count("GET", simcytomic.FilesPath), "nothing fetched from a refused host")
}

func TestSecretsNeverInErrors(t *testing.T) {
	t.Parallel()
	// A hostile or careless server that echoes the request headers and
	// query into its error bodies.
	var echo atomic.Bool // set once polling is over: Poll asks /state too
	e := setup(t, opts{wrap: func(_ *simcytomic.Server, next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == cytomic.StatePath && echo.Load():
				body, _ := io.ReadAll(r.Body)
				http.Error(w, "denied to "+r.Header.Get("Authorization")+" body "+string(body), http.StatusForbidden)
			case strings.HasPrefix(r.URL.Path, simcytomic.FilesPath):
				http.Error(w, "broken: "+r.URL.RawQuery, http.StatusInternalServerError)
			default:
				next.ServeHTTP(w, r)
			}
		})
	}})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	pollUntilDone(t, e.drv, ref)
	echo.Store(true)
	// A driver that did not poll it (another worker's, after a takeover)
	// asks /state at Collect.
	_, stateErr := e.newDriver(t).Collect(ctx, ref)
	require.Error(t, stateErr)
	require.Contains(t, stateErr.Error(), "[REDACTED]", "the echoed token was cut out")

	e.sim.Kit().Add(simhttp.Fault{Path: cytomic.InfoPath, Malformed: true})
	_, malformedErr := e.drv.Poll(ctx, ref)
	require.Error(t, malformedErr)

	bad := setup(t, opts{driver: func(c *cytomic.Config) { c.Password = password + "x" }})
	_, credErr := bad.drv.Start(ctx, target, edrtest.NewIntent("t"))
	require.Error(t, credErr)

	secrets := append(e.auth.secrets(), password+"x")
	require.Greater(t, len(secrets), 2, "tokens were recorded")
	edrtest.AssertNoSecrets(t, secrets, stateErr, malformedErr, credErr)
}

func TestSecretsNeverInDownloadErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	e.sim.Kit().Add(simhttp.Fault{Path: simcytomic.FilesPath, Status: http.StatusInternalServerError})
	ctx := edrtest.Ctx(t)
	ref := e.start(t)
	pollUntilDone(t, e.drv, ref)
	_, err := e.drv.Collect(ctx, ref)
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err), "a 5xx on the file is retryable: %v", err)
	require.NotContains(t, err.Error(), "sig=")
	require.NotContains(t, err.Error(), "?")
	edrtest.AssertNoSecrets(t, e.auth.secrets(), err)
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	good := cytomic.Config{
		URL: "https://api.example", TokenURL: "https://auth.example/oauth/token", User: "u", Password: "p",
		ClientIDs: []string{"1"}, Downloader: httpc.NewDownloader(httpc.DownloadConfig{}),
	}
	d, err := cytomic.New(good)
	require.NoError(t, err)
	d.Close()
	// URL and TokenURL default to the public client's.
	d, err = cytomic.New(cytomic.Config{User: "u", Password: "p", ClientIDs: []string{"1"}, Downloader: good.Downloader})
	require.NoError(t, err)
	d.Close()
	for field, mod := range map[string]func(*cytomic.Config){
		"URL":          func(c *cytomic.Config) { c.URL = "ftp://x" },
		"TokenURL":     func(c *cytomic.Config) { c.TokenURL = "https://user:pw@auth.example/oauth/token" },
		"ClientSecret": func(c *cytomic.Config) { c.ClientID = "id" },
		"ClientID":     func(c *cytomic.Config) { c.ClientID, c.ClientSecret = "a:b", "s" },
		"TTLUnit":      func(c *cytomic.Config) { c.TTLUnit = time.Hour },
		"APIPrefix":    func(c *cytomic.Config) { c.APIPrefix = "api/v1" },
		"ClientsField": func(c *cytomic.Config) { c.ClientsField = "ttl" },
		"MaxToken":     func(c *cytomic.Config) { c.MaxToken = -1 },
		"User":         func(c *cytomic.Config) { c.User = "" },
		"Password":     func(c *cytomic.Config) { c.Password = "" },
		"ClientIDs":    func(c *cytomic.Config) { c.ClientIDs = []string{" "} },
		"Downloader":   func(c *cytomic.Config) { c.Downloader = nil },
		"TTL":          func(c *cytomic.Config) { c.TTL = time.Millisecond },
	} {
		c := good
		mod(&c)
		_, err := cytomic.New(c)
		require.Error(t, err, field)
		require.Contains(t, err.Error(), field)
		require.NotContains(t, err.Error(), "Config.Password = ")
	}
}

func TestBadHashNeverReachesTheQuery(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	_, err := e.drv.Start(edrtest.Ctx(t), edr.Target{SHA256: strings.Repeat("g", 64)}, edrtest.NewIntent("t"))
	require.ErrorIs(t, err, edr.ErrBadHash)
	var ee *edr.Error
	require.True(t, errors.As(err, &ee))
	require.False(t, ee.Retryable)
	require.Zero(t, len(e.sim.Kit().Requests()))
}

// TestPollBatchIsOneRoundOnTheCallersGoroutine: PollBatch answers many
// operations with one /info and one /state request, each answer in its
// ref's place, and an unreadable ref fails alone.
func TestPollBatchIsOneRoundOnTheCallersGoroutine(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{})
	ctx := edrtest.Ctx(t)
	var refs []edr.Ref
	for i := range 30 {
		ref, err := e.drv.Start(ctx, target, edrtest.IntentAt(fmt.Sprintf("job-%d", i), time.Now()))
		require.NoError(t, err)
		refs = append(refs, ref)
	}
	refs = append(refs, edr.Ref(`{"nonsense":`))
	before := e.drv.Stats()
	got := e.drv.PollBatch(ctx, refs)
	require.Len(t, got, len(refs))
	for i, a := range got[:30] {
		require.NoError(t, a.Err, "answer %d", i)
		require.NotEmpty(t, a.Status.Progress)
	}
	edrtest.RequirePermanent(t, got[30].Err, "invalid operation reference")
	st := e.drv.Stats()
	require.Equal(t, int64(1), st.InfoRequests-before.InfoRequests, "one /info request for 30 operations")
	require.Equal(t, int64(1), st.StateRequests-before.StateRequests, "one /state request")
	require.Equal(t, int64(30), st.InfoIDs-before.InfoIDs)
}

var _ edr.BatchPoller = (*cytomic.Driver)(nil)
