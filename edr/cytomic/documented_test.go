package cytomic_test

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	simcytomic "github.com/analysisfleet/analysisfleet/sim/cytomic"
)

// The tests in this file hold the driver to what Cytomic's own sources say
// the wire looks like: the public client (demisto/content
// Packs/CytomicOrion, commit ff3346a2807c43b11f03ea78cdd9391b59ef0b2c) for
// the requests, and the documented answer shapes in testdata/ (see its
// README: built from the documented field names, not recorded).

const (
	docClientID     = "orion-client-id"
	docClientSecret = "orion-client-secret-never-shown"
	docOperationID  = "5d6c2f3e-9b1a-4c7d-8e2f-0a1b2c3d4e5f"
)

// replay answers with the testdata bodies and records every request. /info
// and /state answer the pending bodies until doneAfter /state requests were
// answered, then the finished ones.
type replay struct {
	*edrtest.Replay

	token       string // testdata file of the token answer
	startStatus int
	// emptyFirst answers the first /info and the first /state 204 with no
	// body (the XSOAR client accepts 204 from every call).
	emptyFirst bool
	doneAfter  int
	// override, when set for a path, is served instead of the testdata.
	override map[string][]byte

	mu        sync.Mutex
	states    int
	infos     int
	downloads int
}

func newReplay(t *testing.T, r *replay) *replay {
	r.Replay = edrtest.NewReplay(t, "404 page not found")
	r.token = cmp.Or(r.token, "token.json")
	r.startStatus = cmp.Or(r.startStatus, http.StatusOK)
	r.doneAfter = cmp.Or(r.doneAfter, 2)
	write := func(w http.ResponseWriter, req *http.Request, status int, name string) {
		b, ok := r.override[req.URL.Path]
		if !ok {
			b = edrtest.Testdata(t, name)
		}
		b = []byte(strings.ReplaceAll(string(b), "{{FILES}}", r.Server.URL+"/files"))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
	// round answers /info or /state: pending, done once doneAfter /state
	// requests were answered (before this one, for /info), or 204 first.
	round := func(count *int, pending, done string, after int) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			r.mu.Lock()
			*count++
			n, finished := *count, r.states > after
			r.mu.Unlock()
			switch {
			case r.emptyFirst && n == 1:
				w.WriteHeader(http.StatusNoContent)
			case finished:
				write(w, req, http.StatusOK, done)
			default:
				write(w, req, http.StatusOK, pending)
			}
		}
	}
	r.Handle("POST /oauth/token", func(w http.ResponseWriter, req *http.Request) { write(w, req, http.StatusOK, r.token) })
	r.Handle("POST /osQuery/client", func(w http.ResponseWriter, req *http.Request) { write(w, req, r.startStatus, "start.json") })
	r.Handle("POST /osQuery/info", round(&r.infos, "info_pending.json", "info_done.json", r.doneAfter-1))
	r.Handle("POST /osQuery/state", round(&r.states, "state_pending.json", "state_done.json", r.doneAfter))
	r.Handle("GET /files/osquery_"+docOperationID, func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		r.downloads++
		r.mu.Unlock()
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(edrtest.Testdata(t, "osquery_result.txt"))
	})
	return r
}

// requests returns the requests received for path.
func (r *replay) requests(path string) []edrtest.Request {
	var out []edrtest.Request
	for _, q := range r.Requests() {
		if q.Path == path {
			out = append(out, q)
		}
	}
	return out
}

func (r *replay) count() int { return len(r.Requests()) }

func (r *replay) driver(t *testing.T, edit func(*cytomic.Config)) *cytomic.Driver {
	t.Helper()
	cfg := cytomic.Config{
		URL: r.Server.URL, TokenURL: r.Server.URL + "/oauth/token",
		User: user, Password: password, ClientID: docClientID, ClientSecret: docClientSecret,
		ClientIDs: []string{"1001"}, Round: 10 * time.Millisecond, UserAgent: "analysisfleet/test (cytomic)",
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{
			Hosts: []string{"127.0.0.1"}, Insecure: true, Timeout: 5 * time.Second,
		}),
	}
	if edit != nil {
		edit(&cfg)
	}
	d, err := cytomic.New(cfg)
	require.NoError(t, err)
	t.Cleanup(d.Close)
	return d
}

// driveToResult runs Start → Poll (until done) → Collect → Cancel.
func driveToResult(t *testing.T, d *cytomic.Driver) (edr.Ref, edr.Result) {
	t.Helper()
	ctx := edrtest.Ctx(t)
	ref, err := d.Start(ctx, target, edrtest.NewIntent(target.JobID))
	require.NoError(t, err)
	for {
		st, err := d.Poll(ctx, ref)
		require.NoError(t, err)
		if st.Done {
			break
		}
	}
	res, err := d.Collect(ctx, ref)
	require.NoError(t, err)
	require.ErrorIs(t, d.Cancel(ctx, ref), edr.ErrCancelUnsupported)
	return ref, res
}

// TestDocumentedAnswers replays the documented answer shapes through Start →
// Poll → Collect → Cancel (and Find) and checks every request against what
// the public client sends.
func TestDocumentedAnswers(t *testing.T) {
	t.Parallel()
	for name, r := range map[string]*replay{
		"as documented":                       {},
		"token answer with only access_token": {token: "token_minimal.json"},
		"start answered 201":                  {startStatus: http.StatusCreated},
		"first rounds answered 204":           {emptyFirst: true, doneAfter: 3},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newReplay(t, r)
			d := r.driver(t, nil)

			// Find cannot search Cytomic: it says so without a request.
			_, err := d.Find(edrtest.Ctx(t), target, edrtest.NewIntent(target.JobID))
			require.ErrorIs(t, err, edr.ErrFindUnsupported)
			require.Zero(t, r.count(), "Find sends nothing")

			ref, res := driveToResult(t, d)
			require.Contains(t, string(ref), docOperationID)
			require.Equal(t, int64(3), res.Rows)
			require.Equal(t, []string{"WIN-FIN-01", "WIN-HR-07"}, res.Hosts)
			require.Equal(t, []string{
				"1 of 3 machines failed: 1× Cytomic 202 ErrorOsNotSupported: Operating system not supported (OSQuery runs on Windows only)",
				"1 of 3 machines returned partial results (PartiallySucceeded)",
			}, res.Notes)

			// The token request: the password grant with the orion.api
			// scope, the OAuth client authenticated with HTTP Basic.
			toks := r.requests("/oauth/token")
			require.Len(t, toks, 1, "one token for the whole operation")
			tok := toks[0]
			require.Equal(t, "application/x-www-form-urlencoded", tok.Header.Get("Content-Type"))
			require.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte(docClientID+":"+docClientSecret)),
				tok.Header.Get("Authorization"))
			form, err := url.ParseQuery(string(tok.Body))
			require.NoError(t, err)
			require.Equal(t, url.Values{
				"grant_type": {"password"}, "username": {user}, "password": {password}, "scope": {"orion.api"},
			}, form)

			// The start request: /osQuery/client below the base URL, JSON
			// Patch content type, ttl in minutes, the clients as pandaIDs.
			starts := r.requests("/osQuery/client")
			require.Len(t, starts, 1)
			st := starts[0]
			require.Equal(t, "application/json-patch+json", st.Header.Get("Content-Type"))
			require.Equal(t, "application/json", st.Header.Get("Accept"))
			require.True(t, strings.HasPrefix(st.Header.Get("Authorization"), "Bearer eyJ"))
			var body map[string]any
			require.NoError(t, json.Unmarshal(st.Body, &body))
			require.Equal(t, map[string]any{
				"query": cytomic.Query(targetSHA), "ttl": float64(60), "pandaIDs": []any{"1001"},
			}, body, "the default TTL (an hour) is sent as 60 minutes")

			// /info and /state: lists of {"operationId"}, same headers.
			for _, path := range []string{"/osQuery/info", "/osQuery/state"} {
				reqs := r.requests(path)
				require.NotEmpty(t, reqs, path)
				for _, q := range reqs {
					require.Equal(t, "application/json-patch+json", q.Header.Get("Content-Type"), path)
					require.JSONEq(t, `[{"operationId":"`+docOperationID+`"}]`, string(q.Body), path)
				}
			}
		})
	}
}

// TestTTLIsSentInMinutes: the public client documents ttl as minutes ("0
// para 24 horas"); Config.TTLUnit keeps seconds available.
func TestTTLIsSentInMinutes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ttl, unit time.Duration
		want      float64
	}{
		{0, 0, 60},
		{90 * time.Second, 0, 2},
		{time.Second, 0, 1}, // never 0: Cytomic reads 0 as 24 hours
		{24 * time.Hour, 0, 1440},
		{90 * time.Second, time.Second, 90},
	} {
		t.Run(fmt.Sprint(tc.ttl, "/", tc.unit), func(t *testing.T) {
			t.Parallel()
			r := newReplay(t, &replay{})
			d := r.driver(t, func(c *cytomic.Config) { c.TTL, c.TTLUnit = tc.ttl, tc.unit })
			_, err := d.Start(edrtest.Ctx(t), target, edrtest.NewIntent(target.JobID))
			require.NoError(t, err)
			var body struct {
				TTL float64 `json:"ttl"`
			}
			require.NoError(t, json.Unmarshal(r.requests("/osQuery/client")[0].Body, &body))
			require.Equal(t, tc.want, body.TTL)
		})
	}
}

// TestAPIPrefixAndClientsField: where the sources disagree (Cytomic's page
// writes /api/v1/osQuery/…, the public client /osQuery/… on
// https://api.cytomic.ai; the client list's field is named only by the
// client's command argument), Config says which.
func TestAPIPrefixAndClientsField(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var paths []string
	var startBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		paths = append(paths, req.URL.Path)
		mu.Unlock()
		switch req.URL.Path {
		case "/auth/oauth/token":
			_, _ = w.Write(edrtest.Testdata(t, "token.json"))
		case "/api/v1/osQuery/client":
			mu.Lock()
			_ = json.NewDecoder(req.Body).Decode(&startBody)
			mu.Unlock()
			_, _ = w.Write(edrtest.Testdata(t, "start.json"))
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(srv.Close)
	r := &replay{Replay: &edrtest.Replay{Server: srv}}
	d := r.driver(t, func(c *cytomic.Config) {
		c.TokenURL = srv.URL + "/auth/oauth/token"
		c.APIPrefix = "/api/v1"
		c.ClientsField = "clientIds"
	})
	_, err := d.Start(edrtest.Ctx(t), target, edrtest.NewIntent(target.JobID))
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"/auth/oauth/token", "/api/v1/osQuery/client"}, paths)
	require.Equal(t, []any{"1001"}, startBody["clientIds"])
	require.NotContains(t, startBody, "pandaIDs")
}

// TestOversizedJSONTokenIsPermanent: a JSON string longer than
// Config.MaxToken in an answer fails the task with a permanent error instead
// of reaching the checkpointed reference (an operation ID) or the
// downloader (a URL).
func TestOversizedJSONTokenIsPermanent(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("7", 100<<10)
	t.Run("operation ID in the start answer", func(t *testing.T) {
		t.Parallel()
		r := newReplay(t, &replay{override: map[string][]byte{
			"/osQuery/client": []byte(`[{"pandaID":"1001","operationId":"` + huge + `","MUIDs":[]}]`),
		}})
		d := r.driver(t, nil)
		_, err := d.Start(edrtest.Ctx(t), target, edrtest.NewIntent(target.JobID))
		edrtest.RequirePermanent(t, err, "longer than")
	})
	t.Run("download URL in /state", func(t *testing.T) {
		t.Parallel()
		r := newReplay(t, &replay{override: map[string][]byte{
			"/osQuery/state": []byte(`[{"panda":"1001","operationId":"` + docOperationID + `","url":"https://h/` + huge +
				`","counters":{"totalOperationElements":1,"totalSuccess":1}}]`),
		}})
		d := r.driver(t, func(c *cytomic.Config) { c.MaxToken = 4 << 10 })
		ctx := edrtest.Ctx(t)
		ref, err := d.Start(ctx, target, edrtest.NewIntent(target.JobID))
		require.NoError(t, err)
		_, err = d.Poll(ctx, ref)
		edrtest.RequirePermanent(t, err, "4096")
	})
	t.Run("access token", func(t *testing.T) {
		t.Parallel()
		r := newReplay(t, &replay{override: map[string][]byte{
			"/oauth/token": []byte(`{"access_token":"` + huge + `","token_type":"bearer"}`),
		}})
		d := r.driver(t, nil)
		_, err := d.Start(edrtest.Ctx(t), target, edrtest.NewIntent(target.JobID))
		edrtest.RequirePermanent(t, err)
		require.Len(t, r.requests("/osQuery/client"), 0, "the oversized token is never sent")
	})
}

// TestClientSecretNeverInErrors: the OAuth client secret is as secret as the
// password, also when the token endpoint echoes the request.
func TestClientSecretNeverInErrors(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, "upstream failed for %s %s", req.Header.Get("Authorization"), body)
	}))
	t.Cleanup(srv.Close)
	d := (&replay{Replay: &edrtest.Replay{Server: srv}}).driver(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := d.Start(ctx, target, edrtest.NewIntent(target.JobID))
	require.Error(t, err)
	basic := base64.StdEncoding.EncodeToString([]byte(docClientID + ":" + docClientSecret))
	for _, s := range []string{docClientSecret, basic, password} {
		require.NotContains(t, err.Error(), s)
	}
}

// TestHostileResultFile: a result file whose header is a megabyte of ";"
// (a million fields) or whose line never ends fails the task with a
// permanent error; nothing of it is kept.
func TestHostileResultFile(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]func(w io.Writer){
		"a million header fields": func(w io.Writer) {
			_, _ = io.WriteString(w, "hostname"+strings.Repeat(";", 1<<20-10)+"\nWIN-A\n")
		},
		"a line without end": func(w io.Writer) {
			chunk := strings.Repeat("x", 64<<10)
			_, _ = io.WriteString(w, "hostname\n")
			for range 64 { // 4 MiB, within MaxFile
				_, _ = io.WriteString(w, chunk)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, opts{wrap: func(_ *simcytomic.Server, next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasPrefix(r.URL.Path, simcytomic.FilesPath) {
						body(w)
						return
					}
					next.ServeHTTP(w, r)
				})
			}})
			ctx := edrtest.Ctx(t)
			ref, err := e.drv.Start(ctx, target, edrtest.NewIntent(target.JobID))
			require.NoError(t, err)
			pollUntilDone(t, e.drv, ref)
			_, err = e.drv.Collect(ctx, ref)
			edrtest.RequirePermanent(t, err, "malformed")
		})
	}
}
