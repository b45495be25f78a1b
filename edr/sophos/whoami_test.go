package sophos_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// A tenant credential needs neither the tenant ID nor the data region:
// whoami says both, once, as Sophos's scripts and SEKOIA's connector ask.
func TestWhoamiFillsTenantAndRegion(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.sim.SetHits(hitSHA, 3, "h1")
	c := captureOn(b)
	b.cfg.URL, b.cfg.TenantID, b.cfg.GlobalURL = "", "", b.srv.URL
	d := b.driver(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
			if err == nil && res.Rows != 3 {
				t.Errorf("rows %d", res.Rows)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	require.Len(t, c.Matching(http.MethodGet, sophos.WhoamiPath), 1, "asked once")
	for _, r := range c.Matching(http.MethodPost, sophos.RunsPath) {
		require.Equal(t, tenant, r.Header.Get("X-Tenant-ID"))
	}
	require.Empty(t, c.Matching(http.MethodGet, sophos.WhoamiPath)[0].Header.Get("X-Tenant-ID"))
}

func TestWhoamiRecordedAnswer(t *testing.T) {
	t.Parallel()
	addressed := startAfterWhoami(t, "sekoia-whoami.200.json", func(req *http.Request) bool {
		return req.URL.Host == "api-eu01.central.sophos.com"
	})
	require.Equal(t, "https://api-eu01.central.sophos.com"+sophos.RunsPath, addressed.URL.String(), "the data region whoami named")
	require.Equal(t, "ea106f70-96b1-4851-bd31-e4395ea407d2", addressed.Header.Get("X-Tenant-ID"))
}

// Sophos's own example names the region with http://: the bearer token
// still goes over https.
func TestWhoamiHTTPRegionIsUpgraded(t *testing.T) {
	t.Parallel()
	addressed := startAfterWhoami(t, "postman2026-whoami.200.json", func(req *http.Request) bool {
		return req.URL.Path == sophos.RunsPath
	})
	require.Equal(t, "https://api-us01.central.sophos.com 25bf3721-9425-c449-ba4c-0656670878a0",
		addressed.URL.Scheme+"://"+addressed.URL.Host+" "+addressed.Header.Get("X-Tenant-ID"))
}

// startAfterWhoami starts a run with a driver configured with neither its
// tenant nor its data region, whoami answering with the recorded fixture,
// and returns the first request stop picks: it is refused (errStop, as far
// as the test goes: the request was addressed), the others go to the
// replay.
func startAfterWhoami(t *testing.T, fixture string, stop func(*http.Request) bool) *http.Request {
	t.Helper()
	r := newReplay(t)
	r.on("GET "+sophos.WhoamiPath, http.StatusOK, readFixture(t, fixture))
	cfg := r.config()
	cfg.URL, cfg.TenantID, cfg.GlobalURL = "", "", "https://api.central.sophos.com"
	var mu sync.Mutex
	var stopped *http.Request
	cfg.Transport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if stop(req) {
			mu.Lock()
			stopped = req.Clone(req.Context())
			mu.Unlock()
			return nil, errStop
		}
		req.URL.Scheme, req.URL.Host = "http", strings.TrimPrefix(r.Server.URL, "http://")
		return r.Server.Client().Transport.RoundTrip(req)
	})
	d, err := sophos.New(cfg)
	require.NoError(t, err)
	_, err = d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.ErrorIs(t, err, errStop)
	mu.Lock()
	defer mu.Unlock()
	require.NotNil(t, stopped)
	return stopped
}

func TestWhoamiPartnerMustBeConfigured(t *testing.T) {
	t.Parallel()
	sc := fast()
	sc.IDType = "partner"
	b := setup(t, sc, nil)
	b.cfg.URL, b.cfg.TenantID, b.cfg.GlobalURL = "", "", b.srv.URL
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "whoami", e.Op)
	require.Contains(t, err.Error(), "a partner credential")
	require.Contains(t, err.Error(), "set SOPHOS_TENANT_ID and SOPHOS_URL")
	require.Empty(t, b.sim.Runs())

	// Configured, a partner credential never asks.
	b = setup(t, sc, nil)
	_, err = b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.Zero(t, b.kit().Count(http.MethodGet, sophos.WhoamiPath))
}

func TestWhoamiOtherTenant(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.URL, b.cfg.TenantID, b.cfg.GlobalURL = "", "someone-else", b.srv.URL
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.ErrorContains(t, err, "belongs to another tenant than the one configured")
	require.False(t, edr.IsRetryable(err))
}

func TestWhoamiUnavailableIsRetryable(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.URL, b.cfg.TenantID, b.cfg.GlobalURL = "", "", b.srv.URL
	b.kit().Add(simFault(sophos.WhoamiPath, http.StatusServiceUnavailable))
	d := b.driver(t)
	_, err := d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.True(t, edr.IsRetryable(err), "%v", err)
	_, err = d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err, "asked again")
	require.Len(t, b.sim.Runs(), 1)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var errStop = errors.New("stopped by the test")

func simFault(path string, status int) simhttp.Fault {
	return simhttp.Fault{Path: path, Status: status, Count: 1}
}
