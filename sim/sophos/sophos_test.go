package sophos_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
	"github.com/analysisfleet/analysisfleet/sim/sophos"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var query = "SELECT meta_hostname FROM xdr_data WHERE sha256 = '" + sha + "'"

type env struct {
	t   *testing.T
	sim *sophos.Server
	srv *httptest.Server
	clk *testutil.Clock
	tok string
}

// setup starts a simulator on a fake clock and fetches a token.
func setup(t *testing.T, cfg sophos.Config) *env {
	t.Helper()
	clk := testutil.NewClock(time.Date(2020, 11, 2, 12, 51, 9, 933e6, time.UTC))
	cfg.Now = clk.Now
	sim := sophos.New(cfg)
	srv := simtest.Serve(t, sim)
	e := &env{t: t, sim: sim, srv: srv, clk: clk}
	status, body := e.tokenReq(url.Values{"grant_type": {"client_credentials"}, "client_id": {sophos.DefaultClientID},
		"client_secret": {sophos.DefaultClientSecret}, "scope": {"token"}})
	require.Equal(t, http.StatusOK, status)
	e.tok = body["access_token"].(string)
	return e
}

func (e *env) tokenReq(form url.Values) (int, map[string]any) {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+sophos.TokenPath, strings.NewReader(form.Encode()))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, m := send(e.t, e.srv.Client(), req)
	return resp.StatusCode, m
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
	resp, m := send(e.t, e.srv.Client(), req)
	return resp.StatusCode, m, resp.Header
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

// send sends req with c and decodes its JSON answer, if it has one.
func send(t *testing.T, c *http.Client, req *http.Request) (*http.Response, map[string]any) {
	t.Helper()
	resp, raw := simtest.Do(t, c, req)
	var m map[string]any
	if len(raw) > 0 {
		require.NoError(t, json.Unmarshal(raw, &m), string(raw))
	}
	return resp, m
}

func keys(m map[string]any) []string { return slices.Collect(maps.Keys(m)) }

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
	srv := simtest.Serve(t, sim)
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
		resp, m := send(t, srv.Client(), req)
		require.Equal(t, tc.want, resp.StatusCode, "%s: %v", tc.name, m)
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
			require.ElementsMatch(t, []string{"error", "message", "correlationId", "requestId", "createdAt", "code"}, keys(m), tc.name)
			require.EqualValues(t, tc.want, m["code"], "a number, as Sophos answered SEKOIA")
		}
	}
	require.Len(t, e.sim.Runs(), 1, "only the authorised request created a run")

	e.clk.Advance(time.Minute)
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
	require.ElementsMatch(t, []string{"id", "createdAt", "createdBy", "expiresAt", "result", "status", "name", "template", "from", "to"}, keys(m))
	require.Equal(t, "pending", m["status"])
	require.Equal(t, "t", m["name"])
	require.Equal(t, query, m["template"])
	require.Equal(t, "2020-11-01T12:51:09.933Z", m["from"], "no from: the day before")
	require.Equal(t, "2020-11-02T12:51:09.933Z", m["to"], "no to: the creation time, as Sophos filled it in for SEKOIA")
	require.Equal(t, map[string]any{"id": m["createdBy"].(map[string]any)["id"], "type": "service",
		"accountId": sophos.DefaultTenantID, "accountType": "tenant"}, m["createdBy"])
	require.Equal(t, "notAvailable", m["result"])
	require.Equal(t, "2020-11-02T12:51:09.933Z", m["createdAt"])
	require.Equal(t, "2020-11-02T14:51:09.933Z", m["expiresAt"], "runs live two hours, as in the guide")
	path := sophos.RunsPath + "/" + m["id"].(string)

	e.clk.Advance(2 * time.Second)
	st, m, _ := e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "started", m["status"])
	require.NotContains(t, m, "finishedAt")

	st, _, _ = e.do(http.MethodGet, path+"/results", "", nil)
	require.Equal(t, http.StatusConflict, st, "no results before the run finished")

	e.clk.Advance(10 * time.Second)
	st, m, _ = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "finished", m["status"])
	require.Equal(t, "succeeded", m["result"])
	require.Equal(t, "2020-11-02T12:51:14.933Z", m["finishedAt"], "finished PendingFor+RunFor after creation")

	runs := e.sim.Runs()
	require.Len(t, runs, 1)
	created := e.clk.Now().Add(-12 * time.Second)
	require.Equal(t, sophos.Run{ID: m["id"].(string), Query: query, SHA256: sha, Name: "t", From: created.Add(-24 * time.Hour), To: created,
		CreatedAt: created, Status: "finished", Result: "succeeded"}, runs[0])

	e.clk.Advance(sophos.DefaultRunTTL)
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
	var keysSent []string
	hosts := map[string]int{}
	q := url.Values{"pageSize": {"1000"}}
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
		require.EqualValues(t, 1000, pages["size"], "the page size asked for, as in SEKOIA's recording")
		require.EqualValues(t, 2000, pages["maxSize"])
		if page > 0 {
			require.Equal(t, keysSent[page-1], pages["fromKey"], "the key the page was asked from")
		} else {
			require.NotContains(t, pages, "fromKey")
		}
		key, ok := pages["nextKey"].(string)
		if !ok {
			break
		}
		_, err := base64.StdEncoding.DecodeString(key)
		require.NoError(t, err, "nextKey is base64")
		q.Set("pageFromKey", key)
		keysSent = append(keysSent, key)
	}
	require.Equal(t, []int{1000, 1000, 500}, sizes)
	require.Equal(t, map[string]int{"h1": 834, "h2": 833, "h3": 833}, hosts, "rows spread round-robin")

	for _, bad := range []string{"?pageSize=2001", "?pageSize=0", "?pageSize=x", "?maxSize=2001", "?pageSize=10&pageFromKey=not-base64!",
		"?pageFromKey=" + url.QueryEscape(base64.StdEncoding.EncodeToString([]byte("r=other&o=1")))} {
		st, _, _ := e.do(http.MethodGet, path+bad, "", nil)
		require.Equal(t, http.StatusBadRequest, st, bad)
	}
	for query, want := range map[string]int{"": 50, "?maxSize=7": 7, "?pageSize=9&maxSize=1000": 9, "?pageSize=2000": 2000} {
		st, m, _ := e.do(http.MethodGet, path+query, "", nil)
		require.Equal(t, http.StatusOK, st)
		require.Len(t, m["items"], want, query)
	}
	_, m, _ := e.do(http.MethodGet, path+"?pageSize=1000&pageTotal=true", "", nil)
	require.EqualValues(t, 3, m["pages"].(map[string]any)["total"])
	require.EqualValues(t, 2500, m["pages"].(map[string]any)["items"])
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
	e.clk.Advance(time.Second)
	st, m, _ := e.do(http.MethodPost, sophos.RunsPath+"/"+id+"/cancel", "{}", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, map[string]any{"canceled": true}, m, "Sophos's answer")
	_, m, _ = e.do(http.MethodGet, sophos.RunsPath+"/"+id, "", nil)
	require.Equal(t, "finished", m["status"])
	require.Equal(t, "canceled", m["result"], "Sophos spells it with one l")
	require.Equal(t, "2020-11-02T12:51:10.933Z", m["finishedAt"])
	require.Equal(t, 1, e.sim.Cancels())
	require.True(t, e.sim.Runs()[0].Cancelled)

	st, m, _ = e.do(http.MethodPost, sophos.RunsPath+"/"+id+"/cancel", "", nil)
	require.Equal(t, http.StatusOK, st, "canceling a finished run changes nothing; an empty body is taken as {}")
	require.Equal(t, map[string]any{"canceled": false}, m)
	require.Equal(t, 1, e.sim.Cancels())

	st, _, _ = e.do(http.MethodPost, sophos.RunsPath+"/"+id+"/cancel", "not json", nil)
	require.Equal(t, http.StatusBadRequest, st)
	st, _, _ = e.do(http.MethodPost, sophos.RunsPath+"/unknown/cancel", "{}", nil)
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, 1, e.sim.Cancels())
}

// The window: Sophos refuses a from in its future (SEKOIA recorded the
// answer); a to in the future, or a run without a window, it takes.
func TestStartWindow(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{})
	now := e.clk.Now()
	body := func(from, to string) string {
		b, _ := json.Marshal(map[string]any{"adHocQuery": map[string]string{"template": query}, "name": "n", "from": from, "to": to})
		return string(b)
	}
	m := e.start(body("2020-10-03T12:51:09.933Z", "2020-11-02T12:51:09.933Z"))
	require.Equal(t, "2020-10-03T12:51:09.933Z", m["from"])
	require.Equal(t, "2020-11-02T12:51:09.933Z", m["to"])
	e.start(body("2020-10-03T12:51:09Z", "2020-11-02T13:51:09Z")) // SEKOIA's format; a to in the future
	e.start(`{"adHocQuery":{"template":"` + query + `","name":"in the query"},"from":"2020-11-01T00:00:00.000Z"}`)
	require.Equal(t, "in the query", e.sim.Runs()[2].Name, "Sophos's 2021 example put the name in adHocQuery")
	require.True(t, e.sim.Runs()[2].To.Equal(now))

	future := now.Add(time.Second).Format("2006-01-02T15:04:05Z")
	st, m, _ := e.do(http.MethodPost, sophos.RunsPath, body(future, ""), nil)
	require.Equal(t, http.StatusBadRequest, st)
	require.Equal(t, "ValidationException", m["error"])
	require.EqualValues(t, 400, m["code"])
	require.Equal(t, "Invalid time range 'from' field: "+future+" - cannot be in the future.", m["message"])
	for _, bad := range []string{body("yesterday", ""), body("2020-11-01T00:00:00Z", "soon"), body("2020-11-01T00:00:00Z", "2020-10-01T00:00:00Z")} {
		st, m, _ := e.do(http.MethodPost, sophos.RunsPath, bad, nil)
		require.Equal(t, http.StatusBadRequest, st, bad)
		require.Equal(t, "ValidationException", m["error"], bad)
	}
	require.Len(t, e.sim.Runs(), 3)
}

func TestListRuns(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{PendingFor: time.Minute, RunFor: time.Minute})
	var ids []string
	for i := range 5 {
		b, _ := json.Marshal(map[string]any{"adHocQuery": map[string]string{"template": query}, "name": fmt.Sprintf("run %d", i)})
		ids = append(ids, e.start(string(b))["id"].(string))
		e.clk.Advance(30 * time.Second)
	} // created at 0, 30, 60, 90, 120 s; now 150 s: 2 finished, 2 started, 1 pending

	list := func(q string) (int, []string, map[string]any) {
		st, m, _ := e.do(http.MethodGet, sophos.RunsPath+q, "", nil)
		if st != http.StatusOK {
			return st, nil, m
		}
		var got []string
		for _, it := range m["items"].([]any) {
			got = append(got, it.(map[string]any)["id"].(string))
		}
		return st, got, m["pages"].(map[string]any)
	}
	st, got, pages := list("")
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}, got, "newest first")
	require.Equal(t, map[string]any{"current": 1.0, "size": 50.0, "maxSize": 100.0}, pages)

	_, got, _ = list("?order=asc&pageSize=2&page=2")
	require.Equal(t, []string{ids[2], ids[3]}, got)
	_, got, pages = list("?order=desc&pageSize=2&page=3&pageTotal=true")
	require.Equal(t, []string{ids[0]}, got)
	require.Equal(t, map[string]any{"current": 3.0, "size": 2.0, "maxSize": 100.0, "total": 3.0, "items": 5.0}, pages)
	_, got, _ = list("?pageSize=2&page=4")
	require.Empty(t, got, "past the end")

	_, got, _ = list("?statuses=pending&statuses=started")
	require.Equal(t, []string{ids[4], ids[3], ids[2]}, got)
	_, got, _ = list("?statuses=finished")
	require.Equal(t, []string{ids[1], ids[0]}, got)
	_, got, _ = list("?statuses=pending,finished&order=asc")
	require.Equal(t, []string{ids[0], ids[1], ids[4]}, got)

	st, m, _ := e.do(http.MethodGet, sophos.RunsPath+"?order=desc", "", nil)
	require.Equal(t, http.StatusOK, st)
	first := m["items"].([]any)[0].(map[string]any)
	require.Equal(t, "run 4", first["name"], "whole runs")
	require.Equal(t, query, first["template"])

	for _, bad := range []string{"?page=0", "?page=x", "?pageSize=101", "?order=sideways", "?statuses=running"} {
		st, _, _ := list(bad)
		require.Equal(t, http.StatusBadRequest, st, bad)
	}

	e.clk.Advance(sophos.DefaultRunTTL - 140*time.Second) // the first run has expired
	_, tok := e.tokenReq(url.Values{"grant_type": {"client_credentials"}, "client_id": {sophos.DefaultClientID},
		"client_secret": {sophos.DefaultClientSecret}})
	e.tok = tok["access_token"].(string)
	_, got, _ = list("")
	require.Equal(t, []string{ids[4], ids[3], ids[2], ids[1]}, got)
}

func TestListRunSummaries(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{ListSummaries: true})
	id := e.start(adHoc(query))["id"].(string)
	st, m, _ := e.do(http.MethodGet, sophos.RunsPath, "", nil)
	require.Equal(t, http.StatusOK, st)
	items := m["items"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, map[string]any{"id": id, "createdAt": "2020-11-02T12:51:09.933Z", "result": "succeeded", "status": "finished"}, items[0],
		"the shape of Sophos's 2026 example")
}

func TestMinPollInterval(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{MinPollInterval: 3 * time.Second, RunFor: time.Hour})
	path := sophos.RunsPath + "/" + e.start(adHoc(query))["id"].(string)
	e.clk.Advance(500 * time.Millisecond)
	st, _, hdr := e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusTooManyRequests, st, "the creation counts as the first call")
	require.Equal(t, "3", hdr.Get("Retry-After"), "2.5s rounded up")
	e.clk.Advance(2500 * time.Millisecond)
	st, _, _ = e.do(http.MethodGet, path, "", nil)
	require.Equal(t, http.StatusOK, st)
	e.clk.Advance(time.Second)
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
	e.clk.Advance(500 * time.Millisecond)
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
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+sophos.RunsPath, strings.NewReader(adHoc(query)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	simtest.CloseReleases(t, e.sim, e.srv.Client(), req, func() bool { return e.sim.Kit().Count(http.MethodPost, sophos.RunsPath) == 1 })

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

// SetRunFor makes one sample's runs last longer (worker dev --hold); the
// others keep Config.RunFor.
func TestSetRunFor(t *testing.T) {
	t.Parallel()
	e := setup(t, sophos.Config{PendingFor: time.Second, RunFor: 2 * time.Second, TokenTTL: 3 * time.Hour})
	other := strings.Repeat("b", 64)
	e.sim.SetRunFor(strings.ToUpper(sha), time.Minute)
	slow := e.start(adHoc(query))["id"].(string)
	fast := e.start(adHoc("SELECT meta_hostname FROM xdr_data WHERE sha256 = '" + other + "'"))["id"].(string)
	status := func(id string) string {
		st, m, _ := e.do(http.MethodGet, sophos.RunsPath+"/"+id, "", nil)
		require.Equal(t, http.StatusOK, st)
		return m["status"].(string)
	}
	e.clk.Advance(3 * time.Second)
	require.Equal(t, "finished", status(fast))
	require.Equal(t, "started", status(slow))
	e.clk.Advance(58 * time.Second)
	require.Equal(t, "finished", status(slow))
}
