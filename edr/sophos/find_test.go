package sophos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

func refRunID(t *testing.T, r edr.Ref) string {
	t.Helper()
	var m map[string]string
	require.NoError(t, json.Unmarshal(r, &m))
	return m["runId"]
}

// listings counts the run-list requests that reached the simulator.
func listings(b *bundle) int {
	n := 0
	for _, r := range b.kit().Requests() {
		if r.Method == http.MethodGet && r.Path == sophos.RunsPath {
			n++
		}
	}
	return n
}

func TestRunName(t *testing.T) {
	t.Parallel()
	in := edr.Intent{Key: "J-7/sophos.xdr_query/3.1", At: 1}
	name := sophos.RunName(edr.Target{JobID: "J-7"}, in)
	require.Regexp(t, `^analysisfleet J-7 [0-9a-f]{16}$`, name)
	require.NotEqual(t, name, sophos.RunName(edr.Target{JobID: "J-7"}, edr.Intent{Key: "J-7/sophos.xdr_query/3.2", At: 1}))
	require.Equal(t, name, sophos.RunName(edr.Target{JobID: "J-7"}, edr.Intent{Key: in.Key, At: 99}), "the key names the attempt")

	odd := sophos.RunName(edr.Target{JobID: "job with spaces/and\"quotes\u00e9" + strings.Repeat("x", 100)}, in)
	require.Regexp(t, `^analysisfleet [A-Za-z0-9._:-]{40} [0-9a-f]{16}$`, odd)
	require.Regexp(t, `^analysisfleet - [0-9a-f]{16}$`, sophos.RunName(edr.Target{}, in))
}

// The run list of Sophos's 2026 example gives no names: Find reads the
// recent runs it lists to learn theirs.
func TestFindWhenTheListHasNoNames(t *testing.T) {
	t.Parallel()
	sc := fast()
	sc.ListSummaries = true
	b := setup(t, sc, nil)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	in := edr.Intent{Key: "job-1/x/1.1", At: time.Now().UnixMilli()}
	for i := range 3 { // other jobs' runs, before and after
		_, err := d.Start(ctx, target(hitSHA), edr.Intent{Key: fmt.Sprintf("other/%d", i), At: in.At - int64(i)})
		require.NoError(t, err)
	}
	ref, err := d.Start(ctx, target(hitSHA), in)
	require.NoError(t, err)
	_, err = d.Start(ctx, target(hitSHA), edr.Intent{Key: "later", At: in.At})
	require.NoError(t, err)

	found, err := b.driver(t).Find(ctx, target(hitSHA), in)
	require.NoError(t, err)
	require.Equal(t, refRunID(t, ref), refRunID(t, found))
	require.Equal(t, 1, listings(b), "one page of runs")
	require.Equal(t, 2, b.kit().Count(http.MethodGet, sophos.RunsPath+"/"), "the newest two runs read for their names")
}

// Newest first, Find stops at the first run older than the cut-off.
func TestFindStopsAtOlderRuns(t *testing.T) {
	t.Parallel()
	clk, b, d, ctx := onClock(t, nil)
	startEvery(t, ctx, d, clk, "old", 120, 30*time.Second) // an hour of other runs, none ours
	in := edrtest.IntentAt("job-1", clk.Now())
	_, err := d.Find(ctx, target(hitSHA), in)
	require.ErrorIs(t, err, edr.ErrNotStarted)
	require.Equal(t, 1, listings(b), "the first page already reaches runs older than the cut-off")

	// A run of the same name created long before the intent is not this
	// intent's run (Find looks at runs from At - FindSkew on).
	_, err = d.Start(ctx, target(hitSHA), in)
	require.NoError(t, err)
	later := in
	later.At += (edr.FindSkew + time.Minute).Milliseconds()
	_, err = d.Find(ctx, target(hitSHA), later)
	require.ErrorIs(t, err, edr.ErrNotStarted)
}

// orderIgnored is a server that lists oldest first whatever it is asked.
func orderIgnored(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == sophos.RunsPath {
			q := r.URL.Query()
			q.Set("order", "asc")
			r.URL.RawQuery = q.Encode()
		}
		next.ServeHTTP(w, r)
	})
}

// When the listing is not newest first, old runs say nothing about the
// next page: Find reads to the end, and finds a run on a later page.
func TestFindReadsAnUnsortedListToTheEnd(t *testing.T) {
	t.Parallel()
	clk, b, d, ctx := onClock(t, orderIgnored)
	startEvery(t, ctx, d, clk, "old", 60, time.Minute)
	in := edrtest.IntentAt("job-1", clk.Now())
	ref, err := d.Start(ctx, target(hitSHA), in)
	require.NoError(t, err)

	found, err := d.Find(ctx, target(hitSHA), in)
	require.NoError(t, err)
	require.Equal(t, refRunID(t, ref), refRunID(t, found))
	require.Equal(t, 2, listings(b))

	_, err = d.Find(ctx, target(hitSHA), edrtest.IntentAt("job-2", clk.Now()))
	require.ErrorIs(t, err, edr.ErrNotStarted, "the end of the listing")
	require.Equal(t, 4, listings(b), "both pages again (pageTotal says two)")
}

// A listing too long to reach the cut-off within Config.FindPages cannot
// tell: a permanent error (the runner starts again, unverified).
func TestFindGivesUpAtThePageBound(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.FindPages = 2
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	at := time.Now().UnixMilli()
	for i := range 2*sophos.FindPageSize + 1 {
		_, err := d.Start(ctx, target(hitSHA), edr.Intent{Key: fmt.Sprintf("busy-%d", i), At: at})
		require.NoError(t, err)
	}
	_, err := d.Find(ctx, target(hitSHA), edr.Intent{Key: "job-1", At: at})
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "find", e.Op)
	require.Contains(t, err.Error(), "could not tell whether the run was started")
	require.Equal(t, 2, listings(b))
}

func TestFindListRefused(t *testing.T) {
	t.Parallel()
	for status, retryable := range map[int]bool{http.StatusForbidden: false, http.StatusTooManyRequests: true, http.StatusBadGateway: true} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			r := newReplay(t)
			r.on("GET "+sophos.RunsPath, status, readFixture(t, "postman2026-run.400.json"))
			d := r.driver(t)
			_, err := d.Find(edrtest.Ctx(t), target(hitSHA), edr.Intent{Key: "k", At: time.Now().UnixMilli()})
			e := asEdrError(t, err)
			require.Equal(t, status, e.Status)
			require.Equal(t, retryable, e.Retryable)
			require.NotErrorIs(t, err, edr.ErrNotStarted)
			require.Contains(t, err.Error(), "correlationId a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
		})
	}
}

func TestFindRefusesABadHash(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	_, err := b.driver(t).Find(edrtest.Ctx(t), target("x' OR 1=1--"), edr.Intent{Key: "k", At: 1})
	e := asEdrError(t, err)
	require.False(t, e.Retryable)
	require.Equal(t, "find", e.Op)
	require.Zero(t, len(b.kit().Requests()))
}

// With Config.NameIn = NameInQuery the name travels inside adHocQuery (as
// Sophos's 2021 example sends it); the run carries it all the same.
func TestNameInQuery(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.NameIn = sophos.NameInQuery
	c := captureOn(b)
	d := b.driver(t)
	in := edr.Intent{Key: "job-1/x/1.1", At: time.Now().UnixMilli()}
	ref, err := d.Start(edrtest.Ctx(t), target(hitSHA), in)
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(c.Matching(http.MethodPost, sophos.RunsPath)[0].Body, &body))
	require.NotContains(t, body, "name")
	require.Equal(t, sophos.RunName(target(hitSHA), in), body["adHocQuery"].(map[string]any)["name"])
	require.Equal(t, sophos.RunName(target(hitSHA), in), b.sim.Runs()[0].Name)

	found, err := d.Find(edrtest.Ctx(t), target(hitSHA), in)
	require.NoError(t, err)
	require.Equal(t, refRunID(t, ref), refRunID(t, found))
}

// dropNames is a server that keeps no name for runs (it may expect it
// elsewhere than it was sent): Find matches the template and the window.
func dropNames(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, sophos.RunsPath) || strings.HasSuffix(r.URL.Path, "/results") {
			next.ServeHTTP(w, r)
			return
		}
		rec := &bufferWriter{header: http.Header{}}
		next.ServeHTTP(rec, r)
		var m map[string]any
		if json.Unmarshal(rec.body, &m) == nil {
			delete(m, "name")
			if items, ok := m["items"].([]any); ok {
				for _, it := range items {
					delete(it.(map[string]any), "name")
				}
			}
			rec.body, _ = json.Marshal(m)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body)
	})
}

type bufferWriter struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(s int)   { b.status = s }
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

func TestFindWithoutNamesMatchesQueryAndWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), dropNames)
	d := b.driver(t)
	ctx := edrtest.Ctx(t)
	at := time.Now().UnixMilli()
	in := edr.Intent{Key: "job-1/x/1.1", At: at}
	_, err := d.Start(ctx, target(emptySHA), in) // same window, another sample
	require.NoError(t, err)
	_, err = d.Start(ctx, target(hitSHA), edr.Intent{Key: "job-2/x/1.1", At: at - 1500}) // same sample, another window
	require.NoError(t, err)
	_, err = d.Find(ctx, target(hitSHA), in)
	require.ErrorIs(t, err, edr.ErrNotStarted)

	ref, err := d.Start(ctx, target(hitSHA), in)
	require.NoError(t, err)
	found, err := d.Find(ctx, target(hitSHA), in)
	require.NoError(t, err)
	require.Equal(t, refRunID(t, ref), refRunID(t, found))
}

func TestSimulatorSeesTheWindow(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	b.cfg.Window = 7 * 24 * time.Hour
	at := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), edr.Intent{Key: "k/1", At: at.UnixMilli()})
	require.NoError(t, err)
	runs := b.sim.Runs()
	require.Len(t, runs, 1)
	require.True(t, runs[0].To.Equal(at), "to = the intent's instant")
	require.True(t, runs[0].From.Equal(at.Add(-7*24*time.Hour)), "from = to - Window")
	require.Equal(t, sophos.RunName(target(hitSHA), edr.Intent{Key: "k/1"}), runs[0].Name)
}

func TestStartRefusesAnIntentWithoutTime(t *testing.T) {
	t.Parallel()
	b := setup(t, fast(), nil)
	for _, in := range []edr.Intent{{Key: "k"}, {At: time.Now().UnixMilli()}} {
		_, err := b.driver(t).Start(edrtest.Ctx(t), target(hitSHA), in)
		e := asEdrError(t, err)
		require.False(t, e.Retryable)
	}
	require.Empty(t, b.sim.Runs())
}

// Sophos's clock is known from the answer's Date header, so Find looks back
// only FindClockMargin before the intent, not edr.FindSkew: on a credential
// starting a run every two seconds, one page instead of every run of the
// last five minutes.
func TestFindLooksBackOnlyAsFarAsClockSkewCanHide(t *testing.T) {
	t.Parallel()
	clk, b, d, ctx := onClock(t, nil)
	startEvery(t, ctx, d, clk, "busy", 3*sophos.FindPageSize, 2*time.Second) // five minutes of other runs
	in := edrtest.IntentAt("job-1", clk.Now())
	_, err := d.Find(ctx, target(hitSHA), in)
	require.ErrorIs(t, err, edr.ErrNotStarted)
	require.Equal(t, 1, listings(b), "the first page reaches runs older than the margin")

	// A run started under the intent a few seconds early by Sophos's clock
	// is still found.
	clk.Advance(-5 * time.Second)
	ref, err := d.Start(ctx, target(hitSHA), in)
	require.NoError(t, err)
	found, err := d.Find(ctx, target(hitSHA), in)
	require.NoError(t, err)
	require.Equal(t, refRunID(t, ref), refRunID(t, found))
}

// startEvery starts n runs of hitSHA on d, under the intents prefix-0 …
// prefix-(n-1), one every step of clk.
func startEvery(t *testing.T, ctx context.Context, d *sophos.Driver, clk *testutil.Clock, prefix string, n int, step time.Duration) {
	t.Helper()
	for i := range n {
		_, err := d.Start(ctx, target(hitSHA), edrtest.IntentAt(fmt.Sprintf("%s-%d", prefix, i), clk.Now()))
		require.NoError(t, err)
		clk.Advance(step)
	}
}

// onClock starts a fast simulator on a manual clock (behind wrap, when not
// nil) and a driver on it.
func onClock(t *testing.T, wrap func(http.Handler) http.Handler) (*testutil.Clock, *bundle, *sophos.Driver, context.Context) {
	t.Helper()
	clk := newClock()
	sc := fast()
	sc.Now = clk.Now
	b := setup(t, sc, wrap)
	return clk, b, b.driver(t), edrtest.Ctx(t)
}
