package cytomic_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/cytomic"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	user     = "orion-api"
	password = "s3cret-pass"
	sha      = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
)

type bundle struct {
	cfg   cytomic.Config
	sim   *cytomic.Server
	srv   *httptest.Server
	clock *testutil.Clock
	token string
}

func setup(t *testing.T, cfg cytomic.Config) *bundle {
	t.Helper()
	clk := testutil.NewClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	cfg.User, cfg.Password = user, password
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	sim := cytomic.New(cfg)
	srv := simtest.Serve(t, sim)
	sim.AddClient(cytomic.Client{PandaID: "1001", Machines: []cytomic.Machine{
		{MUID: "M-A", Hostname: "WIN-A", AnswerAfter: 10 * time.Second},
		{MUID: "M-B", Hostname: "WIN-B", OS: "windows", AnswerAfter: 20 * time.Second, Partial: true},
		{MUID: "M-L", Hostname: "LNX-1", OS: "linux", AnswerAfter: 10 * time.Second},
		{MUID: "M-N", Hostname: "WIN-N", AnswerAfter: 10 * time.Second, OSQueryMissing: true},
		{MUID: "M-Z", Hostname: "WIN-Z", Never: true},
	}})
	sim.AddClient(cytomic.Client{PandaID: "1002", Machines: []cytomic.Machine{
		{MUID: "M-C", Hostname: "WIN-C", AnswerAfter: time.Second},
	}})
	sim.SetHits(sha, "win-a", "WIN-B", "WIN-C", "LNX-1")
	b := &bundle{cfg: cfg, sim: sim, srv: srv, clock: clk}
	b.token = b.login(t)
	return b
}

func (b *bundle) login(t *testing.T) string {
	t.Helper()
	status, body := b.form(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}})
	require.Equal(t, http.StatusOK, status, "%s", body)
	var tok struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
	}
	require.NoError(t, json.Unmarshal(body, &tok))
	require.NotEmpty(t, tok.AccessToken)
	require.True(t, strings.EqualFold(tok.TokenType, "bearer"))
	require.Positive(t, tok.ExpiresIn)
	return tok.AccessToken
}

func (b *bundle) form(t *testing.T, v url.Values) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+cytomic.TokenPath, strings.NewReader(v.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if b.cfg.ClientID != "" {
		req.SetBasicAuth(b.cfg.ClientID, b.cfg.ClientSecret)
	}
	resp, body := simtest.Do(t, http.DefaultClient, req)
	return resp.StatusCode, body
}

func (b *bundle) post(t *testing.T, path string, body any) (int, []byte) {
	t.Helper()
	var raw []byte
	switch v := body.(type) {
	case string:
		raw = []byte(v)
	default:
		var err error
		raw, err = json.Marshal(v)
		require.NoError(t, err)
	}
	req, err := http.NewRequest(http.MethodPost, b.srv.URL+path, bytes.NewReader(raw))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json-patch+json")
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	resp, out := simtest.Do(t, http.DefaultClient, req)
	return resp.StatusCode, out
}

func (b *bundle) get(t *testing.T, u string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, out := simtest.Do(t, http.DefaultClient, req)
	return resp.StatusCode, string(out)
}

type startOp struct {
	PandaID     any      `json:"pandaID"`
	OperationID any      `json:"operationId"`
	MUIDs       []string `json:"MUIDs"`
}

func (b *bundle) start(t *testing.T, body any) []startOp {
	t.Helper()
	status, raw := b.post(t, cytomic.ClientPath, body)
	require.Equal(t, http.StatusOK, status, "%s", raw)
	var ops []startOp
	require.NoError(t, json.Unmarshal(raw, &ops))
	return ops
}

type infoOp struct {
	Panda       any    `json:"panda"`
	OperationID string `json:"operationId"`
	Info        []struct {
		MUID             string `json:"MUID"`
		Status           string `json:"status"`
		ErrorCode        int    `json:"errorCode"`
		ErrorDescription string `json:"errorDescription"`
	} `json:"info"`
}

type stateOp struct {
	OperationID string         `json:"operationId"`
	URL         string         `json:"url"`
	Counters    map[string]int `json:"counters"`
}

func (b *bundle) info(t *testing.T, ids ...string) []infoOp {
	t.Helper()
	return postIDs[infoOp](t, b, cytomic.InfoPath, ids)
}

func (b *bundle) state(t *testing.T, ids ...string) []stateOp {
	t.Helper()
	return postIDs[stateOp](t, b, cytomic.StatePath, ids)
}

// postIDs posts operation ids to path and decodes the 200 answer.
func postIDs[T any](t *testing.T, b *bundle, path string, ids []string) []T {
	t.Helper()
	status, raw := b.post(t, path, idBody(ids))
	require.Equal(t, http.StatusOK, status, "%s", raw)
	var out []T
	require.NoError(t, json.Unmarshal(raw, &out))
	return out
}

func idBody(ids []string) []map[string]string {
	out := make([]map[string]string, len(ids))
	for i, id := range ids {
		out[i] = map[string]string{"operationId": id}
	}
	return out
}

func statuses(op infoOp) map[string]string {
	out := map[string]string{}
	for _, m := range op.Info {
		out[m.MUID] = m.Status
		if m.Status == cytomic.StatusError {
			out[m.MUID] = fmt.Sprintf("Error %d", m.ErrorCode)
		}
	}
	return out
}

func validQuery() string {
	return "SELECT si.hostname AS hostname, p.path FROM system_info si CROSS JOIN processes p JOIN hash h ON h.path = p.path WHERE h.sha256 = '" + sha + "'"
}

func TestTokenEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{TokenTTL: time.Minute})

	status, body := b.form(t, url.Values{"grant_type": {"password"}, "username": {user}, "password": {"wrong"}})
	require.Equal(t, http.StatusUnauthorized, status)
	require.Contains(t, string(body), "invalid_grant")

	status, body = b.form(t, url.Values{"grant_type": {"client_credentials"}, "username": {user}, "password": {password}})
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(body), "unsupported_grant_type")
	require.Equal(t, 1, b.sim.TokensIssued(), "only the successful login issued a token")
}

func TestBearerTokenChecked(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{TokenTTL: time.Minute})
	status, _ := b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusOK, status, "a valid token is accepted")

	good := b.token
	b.token = ""
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusUnauthorized, status, "no token")
	b.token = "made-up"
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusUnauthorized, status, "unknown token")

	b.token = good
	b.clock.Advance(time.Minute)
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusUnauthorized, status, "expired token")

	b.token = b.login(t)
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusOK, status)
	b.sim.RevokeTokens()
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusUnauthorized, status, "revoked token")
}

func TestOperationLifecycle(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	ops := b.start(t, map[string]any{"query": validQuery(), "pandaIDs": []string{"1001"}, "ttl": 60})
	require.Len(t, ops, 1)
	require.Equal(t, "1001", ops[0].PandaID)
	require.ElementsMatch(t, []string{"M-A", "M-B", "M-L", "M-N", "M-Z"}, ops[0].MUIDs)
	id := ops[0].OperationID.(string)

	info := b.info(t, id)
	require.Len(t, info, 1)
	require.Equal(t, id, info[0].OperationID)
	for _, s := range statuses(info[0]) {
		require.Equal(t, cytomic.StatusPending, s)
	}
	st := b.state(t, id)
	require.Len(t, st, 1)
	require.Empty(t, st[0].URL, "no URL before any machine answered")
	require.Equal(t, 5, st[0].Counters["totalOperationElements"])

	b.clock.Advance(10 * time.Second)
	require.Equal(t, map[string]string{
		"M-A": cytomic.StatusSuccess, "M-B": cytomic.StatusPending, "M-L": "Error 202",
		"M-N": "Error 203", "M-Z": cytomic.StatusPending,
	}, statuses(b.info(t, id)[0]))
	st = b.state(t, id)
	require.Equal(t, map[string]int{"totalOperationElements": 5, "totalSuccess": 1, "totalPartiallySucceeded": 0, "totalError": 2}, st[0].Counters)
	require.NotEmpty(t, st[0].URL)
	status, file := b.get(t, st[0].URL)
	require.Equal(t, http.StatusOK, status)
	lines := strings.Split(strings.TrimSpace(file), "\n")
	require.Equal(t, cytomic.FileHeader, lines[0])
	require.Len(t, lines, 1+cytomic.RowsPerHost, "only WIN-A answered with data; the Linux host errored")
	require.True(t, strings.HasPrefix(lines[1], "WIN-A;M-A;"))

	b.clock.Advance(10 * time.Second)
	require.Equal(t, cytomic.StatusPartiallySucceeded, statuses(b.info(t, id)[0])["M-B"])
	st = b.state(t, id)
	require.Equal(t, 1, st[0].Counters["totalPartiallySucceeded"])
	_, file = b.get(t, st[0].URL)
	require.Len(t, strings.Split(strings.TrimSpace(file), "\n"), 1+2*cytomic.RowsPerHost, "the partial machine's rows are in the file")

	b.clock.Advance(2 * time.Hour)
	b.token = b.login(t) // the first token expired meanwhile
	require.Equal(t, cytomic.StatusPending, statuses(b.info(t, id)[0])["M-Z"], "a machine that never answers stays Pending after the TTL")
	ops2 := b.Operations(t)
	require.Len(t, ops2, 1)
	require.Equal(t, time.Hour, ops2[0].TTL, "ttl is in minutes")
	require.Equal(t, "client", ops2[0].Endpoint)
}

func (b *bundle) Operations(t *testing.T) []cytomic.Operation {
	t.Helper()
	return b.sim.Operations()
}

func TestAnswerAfterTTLNeverArrives(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{TTLUnit: time.Second})
	ops := b.start(t, map[string]any{"query": validQuery(), "clientIds": []string{"1001"}, "ttl": 15})
	b.clock.Advance(time.Hour)
	b.token = b.login(t)
	s := statuses(b.info(t, ops[0].OperationID.(string))[0])
	require.Equal(t, cytomic.StatusSuccess, s["M-A"])
	require.Equal(t, cytomic.StatusPending, s["M-B"], "answers after the 15 s TTL never arrive")
}

func TestUnparseableQueryIs201(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	for _, q := range []string{
		"DROP TABLE processes",
		"SELECT * FROM hash WHERE sha256 = 'abc",
		"SELECT * FROM (processes",
	} {
		// The aliases osQuery and clients are accepted too.
		ops := b.start(t, map[string]any{"osQuery": q, "clients": []any{1002}, "ttl": "60"})
		require.Len(t, ops, 1, q)
		b.clock.Advance(time.Second)
		info := b.info(t, ops[0].OperationID.(string))
		require.Equal(t, "Error 201", statuses(info[0])["M-C"], q)
		require.NotEmpty(t, info[0].Info[0].ErrorDescription, q)
		st := b.state(t, ops[0].OperationID.(string))
		_, file := b.get(t, st[0].URL)
		require.Equal(t, cytomic.FileHeader, strings.TrimSpace(file), "no rows for a failed query")
	}
}

func TestMachineEndpointGroupsByClient(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	status, raw := b.post(t, cytomic.MachinePath, map[string]any{"query": validQuery(), "MUIDs": []string{"M-A", "M-C", "M-L"}, "ttl": 60})
	require.Equal(t, http.StatusOK, status, "%s", raw)
	var ops []startOp
	require.NoError(t, json.Unmarshal(raw, &ops))
	require.Len(t, ops, 2)
	got := map[string][]string{}
	for _, op := range ops {
		got[op.PandaID.(string)] = op.MUIDs
	}
	require.Equal(t, map[string][]string{"1001": {"M-A", "M-L"}, "1002": {"M-C"}}, got)

	status, _ = b.post(t, cytomic.MachinePath, map[string]any{"query": validQuery(), "MUIDs": []string{"nope"}, "ttl": 60})
	require.Equal(t, http.StatusBadRequest, status)
}

func TestStartValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	for name, body := range map[string]any{
		"no ttl":         map[string]any{"query": validQuery(), "clientIds": []string{"1001"}},
		"negative ttl":   map[string]any{"query": validQuery(), "pandaIDs": []string{"1001"}, "ttl": -1},
		"no query":       map[string]any{"clientIds": []string{"1001"}, "ttl": 60},
		"no clients":     map[string]any{"query": validQuery(), "clientIds": []string{}, "ttl": 60},
		"unknown client": map[string]any{"query": validQuery(), "clientIds": []string{"9999"}, "ttl": 60},
		"not JSON":       "{",
	} {
		status, _ := b.post(t, cytomic.ClientPath, body)
		require.Equal(t, http.StatusBadRequest, status, name)
	}
	require.Empty(t, b.sim.Operations())
}

func TestBatchSizesAndCap(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	var ids []string
	for range 3 {
		ops := b.start(t, map[string]any{"query": validQuery(), "clientIds": []string{"1001", "1002"}, "ttl": 60})
		require.Len(t, ops, 2)
		for _, op := range ops {
			ids = append(ids, op.OperationID.(string))
		}
	}
	require.Len(t, b.info(t, append(ids, "unknown-op")...), 6, "unknown IDs are left out")
	require.Len(t, b.state(t, ids[:2]...), 2)

	// Bare IDs and the "id" key are accepted too.
	status, raw := b.post(t, cytomic.InfoPath, []any{ids[0], map[string]string{"id": ids[1]}})
	require.Equal(t, http.StatusOK, status, "%s", raw)

	big := make([]string, cytomic.MaxBatch+1)
	for i := range big {
		big[i] = fmt.Sprintf("op-%d", i)
	}
	status, raw = b.post(t, cytomic.InfoPath, idBody(big))
	require.Equal(t, http.StatusBadRequest, status)
	require.Contains(t, string(raw), "at most")
	status, _ = b.post(t, cytomic.StatePath, idBody(big))
	require.Equal(t, http.StatusBadRequest, status)
	status, _ = b.post(t, cytomic.StatePath, `[{"nope": 1}]`)
	require.Equal(t, http.StatusBadRequest, status)

	info, state := b.sim.BatchSizes()
	require.Equal(t, []int{7, 2}, info)
	require.Equal(t, []int{2}, state)
}

func TestDownloadURLExpires(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{URLTTL: time.Minute})
	ops := b.start(t, map[string]any{"query": validQuery(), "clientIds": []string{"1002"}, "ttl": 60})
	id := ops[0].OperationID.(string)
	b.clock.Advance(time.Second)
	u := b.state(t, id)[0].URL
	require.Contains(t, u, "/files/osquery_"+id)
	status, _ := b.get(t, u)
	require.Equal(t, http.StatusOK, status)

	b.sim.ExpireURLs()
	status, _ = b.get(t, u)
	require.Equal(t, http.StatusForbidden, status, "ExpireURLs")
	u2 := b.state(t, id)[0].URL
	require.NotEqual(t, u, u2, "a fresh URL")
	status, body := b.get(t, u2)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "WIN-C;M-C;")

	b.clock.Advance(time.Minute)
	status, _ = b.get(t, u2)
	require.Equal(t, http.StatusForbidden, status, "URLTTL passed")

	tampered := strings.Replace(b.state(t, id)[0].URL, "sig=", "sig=00", 1)
	status, _ = b.get(t, tampered)
	require.Equal(t, http.StatusForbidden, status, "bad signature")
}

func TestNumericIDs(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{NumericIDs: true})
	status, raw := b.post(t, cytomic.ClientPath, map[string]any{"query": validQuery(), "clientIds": []string{"1002"}, "ttl": 60})
	require.Equal(t, http.StatusOK, status)
	var ops []map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(raw, &ops))
	id := string(ops[0]["operationId"])
	require.NotContains(t, id, `"`, "operationId is a JSON number")
	require.Equal(t, "1002", string(ops[0]["pandaID"]))

	b.clock.Advance(time.Second)
	status, raw = b.post(t, cytomic.StatePath, "[{\"operationId\": "+id+"}]")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(raw), `"operationId":`+id)
	require.Contains(t, string(raw), `"url":`)
}

func TestAdminEndpoints(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	admin := func(method, path, body string) int {
		req, err := http.NewRequest(method, b.srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusNoContent, admin("POST", "/_sim/cytomic/clients", `{"pandaID":"2001","machines":[{"MUID":"X1","hostname":"WIN-X"}]}`))
	require.Equal(t, http.StatusNoContent, admin("POST", "/_sim/cytomic/hits", `{"sha256":"`+sha+`","hostnames":["WIN-X"]}`))
	ops := b.start(t, map[string]any{"query": validQuery(), "clientIds": []string{"2001"}, "ttl": 60})
	u := b.state(t, ops[0].OperationID.(string))[0].URL
	_, body := b.get(t, u)
	require.Contains(t, body, "WIN-X;X1;", "the admin-added client and hit are served")

	require.Equal(t, http.StatusNoContent, admin("POST", "/_sim/cytomic/expire-urls", ""))
	status, _ := b.get(t, u)
	require.Equal(t, http.StatusForbidden, status)
	require.Equal(t, http.StatusNoContent, admin("POST", "/_sim/cytomic/revoke-tokens", ""))
	status, _ = b.post(t, cytomic.InfoPath, "[]")
	require.Equal(t, http.StatusUnauthorized, status)

	_, body = b.get(t, b.srv.URL+"/_sim/cytomic/batches")
	var batches map[string][]int
	require.NoError(t, json.Unmarshal([]byte(body), &batches))
	require.Equal(t, []int{1}, batches["state"])
}

// TestTTLInMinutes: "ttl" is minutes and 0 is 24 hours, as Cytomic's page and
// the public client say; "Ttl" (the English page's spelling) is the same
// field.
func TestTTLInMinutes(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	b.start(t, map[string]any{"query": validQuery(), "pandaIDs": []string{"1002"}, "ttl": 0})
	b.start(t, map[string]any{"query": validQuery(), "pandaIDs": []string{"1002"}, "Ttl": 90})
	ops := b.sim.Operations()
	require.Equal(t, 24*time.Hour, ops[0].TTL)
	require.Equal(t, 90*time.Minute, ops[1].TTL)
}

// TestBothPathForms: the public client's /osQuery/… and Cytomic's page's
// /api/v1/osQuery/… reach the same API.
func TestBothPathForms(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	status, raw := b.post(t, cytomic.DocPrefix+cytomic.ClientPath, map[string]any{"query": validQuery(), "pandaIDs": []string{"1002"}, "ttl": 5})
	require.Equal(t, http.StatusOK, status, "%s", raw)
	var ops []startOp
	require.NoError(t, json.Unmarshal(raw, &ops))
	id := ops[0].OperationID.(string)
	b.clock.Advance(time.Second)
	status, raw = b.post(t, cytomic.DocPrefix+cytomic.StatePath, idBody([]string{id}))
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, string(raw), id)
	require.Len(t, b.state(t, id), 1)
}

// TestContentType: the documented application/json-patch+json and plain
// application/json are read; a non-JSON content type is refused.
func TestContentType(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{})
	for ct, want := range map[string]int{
		"application/json-patch+json":       http.StatusOK,
		"application/json; charset=utf-8":   http.StatusOK,
		"text/plain":                        http.StatusUnsupportedMediaType,
		"":                                  http.StatusUnsupportedMediaType,
		"application/x-www-form-urlencoded": http.StatusUnsupportedMediaType,
		"application/json-patch+json; charset=utf-8": http.StatusOK,
	} {
		req, err := http.NewRequest(http.MethodPost, b.srv.URL+cytomic.InfoPath, strings.NewReader("[]"))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+b.token)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, ct)
	}
}

// TestClientCredentials: with Config.ClientID set, the token endpoint wants
// the OAuth client in HTTP Basic, as Cytomic's CAS server does; its answer
// carries a refresh token and the scope.
func TestClientCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t, cytomic.Config{ClientID: "cid", ClientSecret: "csecret"})
	tokenReq := func(id, secret string) (int, map[string]any) {
		form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "scope": {"orion.api"}}
		req, err := http.NewRequest(http.MethodPost, b.srv.URL+cytomic.TokenPath, strings.NewReader(form.Encode()))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if id != "" {
			req.SetBasicAuth(id, secret)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out map[string]any
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		return resp.StatusCode, out
	}
	status, out := tokenReq("cid", "csecret")
	require.Equal(t, http.StatusOK, status)
	require.NotEmpty(t, out["access_token"])
	require.NotEmpty(t, out["refresh_token"])
	require.Equal(t, "orion.api", out["scope"])
	for _, bad := range [][2]string{{"", ""}, {"cid", "wrong"}, {"other", "csecret"}} {
		status, out = tokenReq(bad[0], bad[1])
		require.Equal(t, http.StatusUnauthorized, status, bad)
		require.Equal(t, "invalid_client", out["error"], bad)
	}
}
