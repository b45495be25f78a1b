package sophos_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/sophos"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var query = "SELECT meta_hostname FROM xdr_data WHERE sha256 = '" + sha + "'"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	t   *testing.T
	sim *sophos.Server
	srv *httptest.Server
	clk *clock
	tok string
}

// setup starts a simulator on a fake clock and fetches a token.
func setup(t *testing.T, cfg sophos.Config) *env {
	t.Helper()
	clk := &clock{t: time.Date(2020, 11, 2, 12, 51, 9, 933e6, time.UTC)}
	cfg.Now = clk.Now
	sim := sophos.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	e := &env{t: t, sim: sim, srv: srv, clk: clk}
	status, body := e.tokenReq(url.Values{"grant_type": {"client_credentials"}, "client_id": {sophos.DefaultClientID},
		"client_secret": {sophos.DefaultClientSecret}, "scope": {"token"}})
	require.Equal(t, http.StatusOK, status)
	e.tok = body["access_token"].(string)
	return e
}

func (e *env) tokenReq(form url.Values) (int, map[string]any) {
	resp, err := e.srv.Client().Post(e.srv.URL+sophos.TokenPath, "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	require.NoError(e.t, err)
	return decode(e.t, resp)
}

// do sends an API request with the bearer token and tenant header unless
// hdr overrides them ("" removes one).
func (e *env) do(method, path, body string, hdr map[string]string) (int, map[string]any, http.Header) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+e.tok)
	req.Header.Set("X-Tenant-ID", sophos.DefaultTenantID)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	st, m := decode(e.t, resp)
	return st, m, resp.Header
}

func (e *env) start(body string) map[string]any {
	e.t.Helper()
	st, m, _ := e.do(http.MethodPost, sophos.RunsPath, body, nil)
	require.Equal(e.t, http.StatusCreated, st, "%v", m)
	return m
}

func adHoc(sql string) string {
	b, _ := json.Marshal(map[string]any{"adHocQuery": map[string]string{"name": "t", "template": sql}})
	return string(b)
}

func decode(t *testing.T, resp *http.Response) (int, map[string]any) {
	t.Helper()
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var m map[string]any
	if len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, &m), string(raw))
	}
	return resp.StatusCode, m
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{TokenTTL: 90 * time.Second})
	good := url.Values{"grant_type": {"client_credentials"}, "client_id": {sophos.DefaultClientID},
		"client_secret": {sophos.DefaultClientSecret}, "scope": {"token"}}
	st, m := e.tokenReq(good)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "bearer", m["token_type"])
	require.EqualValues(t, 90, m["expires_in"])
	require.True(t, strings.HasPrefix(m["access_token"].(string), "eyJ"), "a JWT")
	require.Equal(t, 2, e.sim.TokensIssued())

	bad := url.Values{}
	for k, v := range good {
		bad[k] = v
	}
	bad.Set("client_secret", "nope")
	st, m = e.tokenReq(bad)
	require.Equal(t, http.StatusUnauthorized, st)
	require.NotContains(t, m["message"], "nope")

	bad.Set("client_secret", sophos.DefaultClientSecret)
	bad.Set("grant_type", "password")
	st, _ = e.tokenReq(bad)
	require.Equal(t, http.StatusBadRequest, st)
	require.Equal(t, 2, e.sim.TokensIssued())
}

func TestTokenEndpointBasicClientAuth(t *testing.T) {
	t.Parallel()
	const id, secret = "client+id", "se cr%et:/"
	sim := sophos.New(sophos.Config{ClientID: id, ClientSecret: secret})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	t.Cleanup(sim.Close)
	for _, tc := range []struct {
		name       string
		id, secret string
		want       int
	}{
		{"form-encoded parts (RFC 6749 2.3.1)", url.QueryEscape(id), url.QueryEscape(secret), http.StatusOK},
		{"wrong secret", url.QueryEscape(id), "nope", http.StatusUnauthorized},
	} {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+sophos.TokenPath,
			strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {"token"}}.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(tc.id, tc.secret)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		st, m := decode(t, resp)
		require.Equal(t, tc.want, st, "%s: %v", tc.name, m)
	}
	require.Equal(t, 1, sim.TokensIssued())
}

func TestAuthChecks(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{TokenTTL: time.Minute})
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no bearer", map[string]string{"Authorization": ""}, 401},
		{"unknown bearer", map[string]string{"Authorization": "Bearer forged"}, 401},
		{"basic instead of bearer", map[string]string{"Authorization": "Basic " + e.tok}, 401},
		{"no tenant", map[string]string{"X-Tenant-ID": ""}, 400},
		{"other tenant", map[string]string{"X-Tenant-ID": "someone-else"}, 403},
		{"all good", nil, 201},
	} {
		st, m, _ := e.do(http.MethodPost, sophos.RunsPath, adHoc(query), tc.hdr)
		require.Equal(t, tc.want, st, tc.name)
		if st >= 400 {
			require.ElementsMatch(t, []string{"error", "message", "correlationId", "requestId", "createdAt"}, keys(m), tc.name)
		}
	}
	require.Len(t, e.sim.Runs(), 1, "only the authorised request created a run")

	e.clk.Add(time.Minute)
	st, _, _ := e.do(http.MethodPost, sophos.RunsPath, adHoc(query), nil)
	require.Equal(t, http.StatusUnauthorized, st, "the token expired")

	e.tok = setup(t, sophos.Config{}).tok // a token from another simulator
	st, _, _ = e.do(http.MethodGet, sophos.RunsPath+"/x", "", nil)
	require.Equal(t, http.StatusUnauthorized, st)
}

func TestRevokeTokens(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	e.sim.RevokeTokens()
	st, _, _ := e.do(http.MethodPost, sophos.RunsPath, adHoc(query), nil)
	require.Equal(t, http.StatusUnauthorized, st)
}

func TestRunLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{PendingFor: 2 * time.Second, RunFor: 3 * time.Second, TokenTTL: 3 * time.Hour})
	m := e.start(adHoc(query))
	require.ElementsMatch(t, []string{"id", "createdAt", "expiresAt", "result", "status"}, keys(m))
	require.Equal(t, "pending", m["status"])
	require.Equal(t, "notAvailable", m["result"])
	require.Equal(t, "2020-11-02T12:51:09.933Z", m["createdAt"])
	require.Equal(t, "2020-11-02T14:51:09.933Z", m["expiresAt"], "runs live two hours, as in the guide")
	path := sophos.RunsPath + "/" + m["id"].(string)

	e.clk.Add(2 * time.Second)
	st, m, _ := e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "running", m["status"])
	require.NotContains(t, m, "finishedAt")

	st, _, _ = e.do(http.MethodGet, path+"/results", "", nil)
	require.Equal(t, http.StatusConflict, st, "no results before the run finished")

	e.clk.Add(10 * time.Second)
	st, m, _ = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "finished", m["status"])
	require.Equal(t, "succeeded", m["result"])
	require.Equal(t, "2020-11-02T12:51:14.933Z", m["finishedAt"], "finished PendingFor+RunFor after creation")

	runs := e.sim.Runs()
	require.Len(t, runs, 1)
	require.Equal(t, sophos.Run{ID: m["id"].(string), Query: query, SHA256: sha, CreatedAt: e.clk.Now().Add(-12 * time.Second),
		Status: "finished", Result: "succeeded"}, runs[0])

	e.clk.Add(sophos.DefaultRunTTL)
	st, _, _ = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusNotFound, st, "expired")
}

func TestStartBodies(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	e.start(adHoc(query))
	e.start(`{"query": "` + query + `"}`)
	e.start(query) // the guide's curl sends the SQL file itself
	for _, r := range e.sim.Runs() {
		require.Equal(t, sha, r.SHA256)
	}
	for _, bad := range []string{`{}`, `{"adHocQuery": {"template": ""}}`, adHoc("SELECT * FROM processes"), `{"query": 1}`, ``} {
		st, _, _ := e.do(http.MethodPost, sophos.RunsPath, bad, nil)
		require.Equal(t, http.StatusBadRequest, st, bad)
	}
	require.Len(t, e.sim.Runs(), 3)
}

func TestResultsPaging(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	e.sim.SetHits(strings.ToUpper(sha), 2500, "h1", "h2", "h3")
	id := e.start(adHoc(query))["id"].(string)
	path := sophos.RunsPath + "/" + id + "/results"

	var sizes []int
	hosts := map[string]int{}
	q := url.Values{"maxSize": {"1000"}}
	for page := 0; ; page++ {
		require.Less(t, page, 5)
		st, m, _ := e.do(http.MethodGet, path+"?"+q.Encode(), "", nil)
		require.Equal(t, http.StatusOK, st, "%v", m)
		require.ElementsMatch(t, []string{"items", "metadata", "pages"}, keys(m))
		items := m["items"].([]any)
		for _, it := range items {
			row := it.(map[string]any)
			require.Equal(t, sha, row["sha256"])
			hosts[row["meta_hostname"].(string)]++
		}
		cols := m["metadata"].(map[string]any)["columns"].([]any)
		require.Equal(t, map[string]any{"name": "meta_hostname", "type": "string"}, cols[0])
		pages := m["pages"].(map[string]any)
		sizes = append(sizes, len(items))
		require.EqualValues(t, len(items), pages["size"])
		require.EqualValues(t, 1000, pages["maxSize"])
		key, ok := pages["nextKey"].(string)
		if !ok {
			break
		}
		_, err := base64.StdEncoding.DecodeString(key)
		require.NoError(t, err, "nextKey is base64")
		q.Set("pageFromKey", key)
	}
	require.Equal(t, []int{1000, 1000, 500}, sizes)
	require.Equal(t, map[string]int{"h1": 834, "h2": 833, "h3": 833}, hosts, "rows spread round-robin")

	for _, bad := range []string{"?maxSize=1001", "?maxSize=0", "?maxSize=x", "?maxSize=10&pageFromKey=not-base64!", "?pageFromKey=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("r=other&o=1")))} {
		st, _, _ := e.do(http.MethodGet, path+bad, "", nil)
		require.Equal(t, http.StatusBadRequest, st, bad)
	}
	st, m, _ := e.do(http.MethodGet, path+"?maxSize=7", "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Len(t, m["items"], 7)
}

func TestNoHitsAndFailedRuns(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	id := e.start(adHoc(query))["id"].(string)
	st, m, _ := e.do(http.MethodGet, sophos.RunsPath+"/"+id+"/results?maxSize=1000", "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Empty(t, m["items"])
	require.NotContains(t, m["pages"], "nextKey")

	e.sim.SetResult(sha, sophos.ResultTimedOut)
	id = e.start(adHoc(query))["id"].(string)
	_, m, _ = e.do(http.MethodGet, sophos.RunsPath+"/"+id, "", nil)
	require.Equal(t, "finished", m["status"])
	require.Equal(t, "timedOut", m["result"])
	st, _, _ = e.do(http.MethodGet, sophos.RunsPath+"/"+id+"/results", "", nil)
	require.Equal(t, http.StatusBadRequest, st)
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{PendingFor: time.Hour})
	id := e.start(adHoc(query))["id"].(string)
	e.clk.Add(time.Second)
	st, m, _ := e.do(http.MethodPost, sophos.RunsPath+"/"+id+"/cancel", "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "finished", m["status"])
	require.Equal(t, "cancelled", m["result"])
	require.Equal(t, "2020-11-02T12:51:10.933Z", m["finishedAt"])
	require.Equal(t, 1, e.sim.Cancels())
	require.True(t, e.sim.Runs()[0].Cancelled)

	st, _, _ = e.do(http.MethodPost, sophos.RunsPath+"/"+id+"/cancel", "", nil)
	require.Equal(t, http.StatusOK, st, "cancelling a finished run changes nothing")
	require.Equal(t, 1, e.sim.Cancels())

	st, _, _ = e.do(http.MethodPost, sophos.RunsPath+"/unknown/cancel", "", nil)
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, 1, e.sim.Cancels())
}

func TestMinPollInterval(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{MinPollInterval: 3 * time.Second, RunFor: time.Hour})
	path := sophos.RunsPath + "/" + e.start(adHoc(query))["id"].(string)
	e.clk.Add(500 * time.Millisecond)
	st, _, hdr := e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusTooManyRequests, st, "the creation counts as the first call")
	require.Equal(t, "3", hdr.Get("Retry-After"), "2.5s rounded up")
	e.clk.Add(2500 * time.Millisecond)
	st, _, _ = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	e.clk.Add(time.Second)
	st, _, hdr = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Equal(t, "2", hdr.Get("Retry-After"))
	st, _, _ = e.do(http.MethodGet, path+"/results", "", nil)
	require.Equal(t, http.StatusConflict, st, "only status polls are limited")
}

func TestGlobalRateLimit(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{RateLimit: 2})
	codes := make([]int, 0, 3)
	for range 3 {
		st, _, hdr := e.do(http.MethodGet, sophos.RunsPath+"/none", "", nil)
		codes = append(codes, st)
		if st == http.StatusTooManyRequests {
			require.Equal(t, "1", hdr.Get("Retry-After"))
		}
	}
	require.Equal(t, []int{404, 404, 429}, codes, "burst of 2, then throttled")
	e.clk.Add(500 * time.Millisecond)
	st, _, _ := e.do(http.MethodGet, sophos.RunsPath+"/none", "", nil)
	require.Equal(t, http.StatusNotFound, st, "refilled at 2/s")
	st, _ = e.tokenReq(url.Values{"grant_type": {"client_credentials"}, "client_id": {sophos.DefaultClientID},
		"client_secret": {sophos.DefaultClientSecret}})
	require.Equal(t, http.StatusOK, st, "the identity endpoint is not limited")
}

func TestFaultsAndHungRequestsReleased(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	e.sim.Kit().Add(simhttp.Fault{Path: sophos.RunsPath, Hang: true, Count: 1})
	done := make(chan error, 1)
	go func() {
		resp, err := e.srv.Client().Post(e.srv.URL+sophos.RunsPath, "application/json", strings.NewReader(adHoc(query)))
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	require.Eventually(t, func() bool { return e.sim.Kit().Count(http.MethodPost, sophos.RunsPath) == 1 }, 5*time.Second, 5*time.Millisecond)
	e.sim.Close() // releases the hung request
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release the hung request")
	}

	// The control endpoint works over HTTP.
	resp, err := e.srv.Client().Post(e.srv.URL+"/_sim/faults", "application/json", strings.NewReader(`{"path":"/xdr-query","status":503}`))
	require.NoError(t, err)
	resp.Body.Close()
	st, _, _ := e.do(http.MethodGet, sophos.RunsPath+"/x", "", nil)
	require.Equal(t, http.StatusServiceUnavailable, st)
}

func TestParseQuery(t *testing.T) {
	t.Parallel()
	sql, got, err := sophos.ParseQuery([]byte(adHoc("select x\nFROM   XDR_DATA where SHA256='" + strings.ToUpper(sha) + "'")))
	require.NoError(t, err)
	require.Contains(t, sql, "XDR_DATA")
	require.Equal(t, sha, got)
	_, got, err = sophos.ParseQuery([]byte("SELECT * FROM xdr_data WHERE name = 'x'"))
	require.NoError(t, err)
	require.Empty(t, got)
	_, _, err = sophos.ParseQuery([]byte("SELECT * FROM xdr_data_other"))
	require.Error(t, err)
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{adHoc(query), `{"query":"select 1 from xdr_data"}`, query, `{"adHocQuery":null}`, `{`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sql, got, err := sophos.ParseQuery(body)
		if err != nil {
			return
		}
		if strings.TrimSpace(sql) == "" {
			t.Fatal("accepted an empty query")
		}
		if got != "" && (len(got) != 64 || strings.ToLower(got) != got) {
			t.Fatalf("bad hash %q", got)
		}
	})
}
