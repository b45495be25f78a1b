package sophos_test

// Recorded-answer contract tests: the driver against a server that
// answers only with bodies Sophos sent or documents (testdata/README.md
// names each file's source and commit).

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
)

// SEKOIA's recorded run: created pending, finished/succeeded, two result
// pages (nextKey "AAAABw==", then fromKey), then Sophos's cancel answer.
func TestRecordedSEKOIARun(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	r.Handle("GET /results", func(w http.ResponseWriter, req *http.Request) {
		switch key := req.URL.Query().Get("pageFromKey"); key {
		case "":
			_, _ = w.Write([]byte(readFixture(t, "sekoia-results-page1.200.json")))
		case "AAAABw==":
			_, _ = w.Write([]byte(readFixture(t, "sekoia-results-page2.200.json")))
		default:
			w.WriteHeader(http.StatusBadRequest)
			t.Errorf("page asked from %q", key)
		}
	})
	r.on("POST /cancel", http.StatusOK, readFixture(t, "postman2026-cancel.200.json"))
	d := r.driver(t)
	ctx := edrtest.Ctx(t)

	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.JSONEq(t, `{"runId":"7d00cf17-a987-4d07-ac88-93d4df89fa73","expiresAt":"2023-06-30T10:14:55.649Z"}`, string(ref))

	res, err := edrtest.Drive(ctx, d, target(hitSHA), ref)
	require.NoError(t, err)
	require.EqualValues(t, 8, res.Rows, "7 rows, then 1")
	require.Zero(t, res.HostsTotal, "these rows name no host")
	require.Empty(t, res.Notes)
	require.Equal(t, 2, r.Hits("GET /results"))

	require.NoError(t, d.Cancel(ctx, ref))
	require.Equal(t, 1, r.Hits("POST /cancel"))
}

// The one-page answer SEKOIA recorded (no nextKey: the last page).
func TestRecordedSEKOIASinglePage(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	finishedRun(t, r)
	r.on("GET /results", http.StatusOK, readFixture(t, "sekoia-results.200.json"))
	d := r.driver(t)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, target(hitSHA), nil)
	require.NoError(t, err)
	require.EqualValues(t, 7, res.Rows)
}

// postman2026 replays Sophos's 2026 collection examples; name, when not
// empty, replaces the example run's name ("Example Name").
func postman2026(t *testing.T, name string) *replay {
	r := newReplay(t)
	r.on("POST "+sophos.RunsPath, http.StatusCreated, readFixture(t, "postman2026-run.201.json"))
	get := readFixture(t, "postman2026-get.200.json")
	if name != "" {
		// The run's own name, not its creator's or its query's.
		get = strings.Replace(get, "\n  \"name\": \"Example Name\"", "\n  \"name\": \""+name+"\"", 1)
	}
	r.on("GET "+sophos.RunsPath+"/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d", http.StatusOK, get)
	r.on("GET "+sophos.RunsPath, http.StatusOK, readFixture(t, "postman2026-list.200.json"))
	r.on("GET /results", http.StatusOK, readFixture(t, "postman2026-results.200.json"))
	r.on("POST /cancel", http.StatusOK, readFixture(t, "postman2026-cancel.200.json"))
	return r
}

func TestRecordedPostman2026(t *testing.T) {
	t.Parallel()
	r := postman2026(t, "")
	d := r.driver(t)
	ctx := edrtest.Ctx(t)

	ref, err := d.Start(ctx, target(hitSHA), edrtest.NewIntent("t"))
	require.NoError(t, err, "a run created started")
	require.JSONEq(t, `{"runId":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","expiresAt":"2024-01-15T10:30:00.000Z"}`, string(ref))

	st, err := pollPaced(d, ctx, ref)
	require.NoError(t, err)
	require.False(t, st.Done)
	require.Equal(t, "started", st.Progress)

	// The example page says nextKey "string" and, asked from it, says the
	// same: one row, and a note that paging stopped.
	res, err := d.Collect(ctx, ref)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows, "one (empty) row")
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "same page again")

	require.NoError(t, d.Cancel(ctx, ref))
}

// Find against the 2026 examples: the listing names no run, so the listed
// run is read; it is ours only when its name is the intent's.
func TestRecordedPostman2026Find(t *testing.T) {
	t.Parallel()
	created := time.Date(2024, 1, 15, 10, 30, 0, 0, time.UTC)
	in := edr.Intent{Key: "job-1/sophos.xdr_query/1.1", At: created.Add(10 * time.Second).UnixMilli()}

	r := postman2026(t, "")
	d := r.driver(t)
	_, err := d.Find(edrtest.Ctx(t), target(hitSHA), in)
	require.ErrorIs(t, err, edr.ErrNotStarted, `"Example Name" is not ours, and one run of a 50-run page is the whole listing`)
	require.Equal(t, 1, r.Hits("GET "+sophos.RunsPath))
	require.Equal(t, 1, r.Hits("GET "+sophos.RunsPath+"/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"))

	r = postman2026(t, sophos.RunName(target(hitSHA), in))
	d = r.driver(t)
	ref, err := d.Find(edrtest.Ctx(t), target(hitSHA), in)
	require.NoError(t, err)
	require.JSONEq(t, `{"runId":"a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d","expiresAt":"2024-01-15T10:30:00.000Z"}`, string(ref))

	// An intent decided long after the run was created: not its run.
	late := in
	late.At = created.Add(time.Hour).UnixMilli()
	_, err = d.Find(edrtest.Ctx(t), target(hitSHA), late)
	require.ErrorIs(t, err, edr.ErrNotStarted)
}

// The 2025 collection's examples were generated from Sophos's schema:
// whole runs in the listing, placeholder text where instants go, negative
// page counts. Find reads such a listing without trusting any of it.
func TestRecordedPostman2025List(t *testing.T) {
	t.Parallel()
	in := edr.Intent{Key: "job-1/sophos.xdr_query/1.1", At: time.Now().UnixMilli()}
	list := readFixture(t, "postman2025-list.200.json")
	ours := strings.Replace(list, `"name": "occaecat anim consectetur amet"`, `"name": "`+sophos.RunName(target(hitSHA), in)+`"`, 1)
	require.NotEqual(t, list, ours)
	for name, body := range map[string]string{"not ours": list, "ours": ours} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newReplay(t)
			r.Handle("GET "+sophos.RunsPath, func(w http.ResponseWriter, req *http.Request) {
				if req.URL.Query().Get("page") == "1" {
					_, _ = w.Write([]byte(body))
					return
				}
				_, _ = w.Write([]byte(`{"items":[],"pages":{}}`))
			})
			d := r.driver(t)
			ref, err := d.Find(edrtest.Ctx(t), target(hitSHA), in)
			if name == "ours" {
				require.NoError(t, err)
				require.JSONEq(t, `{"runId":"eu enim","expiresAt":"elit consequat"}`, string(ref))
				return
			}
			require.ErrorIs(t, err, edr.ErrNotStarted)
			require.Equal(t, 2, r.Hits("GET "+sophos.RunsPath), "no usable order or counts: read to the empty page")
		})
	}
}

// The run examples: statuses and results a poll must map.
func TestRecordedRunExamples(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file    string
		done    bool
		failure string
	}{
		{"sekoia-run.201.json", false, ""},
		{"sekoia-get.200.json", true, ""},
		{"postman2026-get.200.json", false, ""},
		{"postman2025-get.200.json", false, ""},                                  // started, notAvailable
		{"postman2021-get.200.json", false, "the query run timed out at Sophos"}, // started, timedOut
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			r := newReplay(t)
			r.on("GET /r-1", http.StatusOK, readFixture(t, tc.file))
			d := r.driver(t)
			st, err := d.Poll(edrtest.Ctx(t), edr.Ref(`{"runId":"r-1"}`))
			if tc.failure != "" {
				require.ErrorContains(t, err, tc.failure)
				require.False(t, edr.IsRetryable(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.done, st.Done)
		})
	}
}

// Sophos's example 401s: the API's (after one re-authentication) and the
// identity service's.
func TestRecordedUnauthorized(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	r.on("GET /r-1", http.StatusUnauthorized, readFixture(t, "community-api.401.json"))
	d := r.driver(t)
	_, err := d.Poll(edrtest.Ctx(t), edr.Ref(`{"runId":"r-1"}`))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "Unauthorized", e.Code)
	require.Contains(t, err.Error(), "Sophos rejected the credentials")
	require.Contains(t, err.Error(), "correlationId cdf74ec9-4697-42ee-b57f-67e9d67bbe07, requestId 0ca2e378-cf62-4267-abe7-c683e2d6006b")

	r = newReplay(t)
	r.on("POST "+sophos.TokenPath, http.StatusUnauthorized, readFixture(t, "community-token.401.json"))
	d = r.driver(t)
	_, err = d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e = asEdrError(t, err)
	require.Equal(t, "token", e.Op)
	require.False(t, e.Retryable)
	require.Equal(t, "oauth.invalid_client_secret", e.Code)
	require.Contains(t, err.Error(), "trackingId 197a2922-65e4-4548-a0a1-79a13b12c8fc")
	require.NotContains(t, err.Error(), "Unauthorized", "the identity service's free text is not kept")
	require.Equal(t, 2, r.Hits("POST "+sophos.TokenPath), "form, then HTTP Basic")
}

// Sophos's example error body, with string placeholders for error and
// code.
func TestRecordedPostmanError(t *testing.T) {
	t.Parallel()
	r := newReplay(t)
	r.on("POST "+sophos.RunsPath, http.StatusBadRequest, readFixture(t, "postman2026-run.400.json"))
	d := r.driver(t)
	_, err := d.Start(edrtest.Ctx(t), target(hitSHA), edrtest.NewIntent("t"))
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "string", e.Code)
	require.Contains(t, err.Error(), "Sophos refused the request: string (correlationId a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d, requestId a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d)")
}

// Sophos's example requests are what the driver sends, field for field.
func TestRequestsMatchSophosExamples(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	c := captureOn(b)
	d := b.driver(t)
	ref := startHit(t, d)
	require.NoError(t, d.Cancel(edrtest.Ctx(t), ref))

	keysOf := func(raw []byte) []string {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		var out []string
		for k, v := range m {
			out = append(out, k)
			if sub, ok := v.(map[string]any); ok {
				for kk := range sub {
					out = append(out, k+"."+kk)
				}
			}
		}
		return out
	}
	example := keysOf([]byte(readFixture(t, "postman2026-run.request.json")))
	sent := keysOf(c.Matching(http.MethodPost, sophos.RunsPath)[0].Body)
	require.ElementsMatch(t, append(example, "name"), sent, "everything Sophos's example sends, and the run's name")
	require.JSONEq(t, readFixture(t, "postman2026-cancel.request.json"), string(c.Matching(http.MethodPost, "/cancel")[0].Body))
}
