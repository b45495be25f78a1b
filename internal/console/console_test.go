package console

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var pages = []string{"/", "/jobs", "/jobs/finished", "/jobs/" + jobRunning, "/jobs/" + jobTakeover, "/jobs/" + jobAbort,
	"/jobs/" + jobDone, "/leases", "/vendors", "/dlq", "/login", "/jobs/" + jobRunning + "/release", "/jobs/" + jobRunning + "/abort",
	"/dlq/replay?reason=bad-json", "/dlq/replay?letter=0%403"}

// TestEveryPageRendersWithStrictCSP: every page answers 200 with the
// strict CSP, no inline script or style, and nothing secret in it.
func TestEveryPageRendersWithStrictCSP(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for _, p := range pages {
		resp, body := w.get(p)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", p, body)
		require.Equal(t, csp, resp.Header.Get("Content-Security-Policy"), p)
		require.Contains(t, csp, "script-src 'self'")
		require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
		require.Contains(t, body, `<html lang="en">`, p)
		require.NotContains(t, body, "<script>", p)
		require.NotContains(t, body, " style=", p)
		require.NotContains(t, body, "<style", p)
		require.NotRegexp(t, `\son[a-z]+=`, body, p) // no onclick=…
		require.NotContains(t, body, secret, p)
		require.NotContains(t, body, "X-Amz-Signature", p)
	}
	for _, a := range []string{"/static/console.js", "/static/console.css", "/static/favicon.svg"} {
		resp, body := w.get(a)
		require.Equal(t, http.StatusOK, resp.StatusCode, a)
		require.NotEmpty(t, body)
	}
}

func TestOverviewShowsStatesWorkersKafkaAndVendors(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	_, body := w.get("/")
	require.Contains(t, body, `data-state="running">3<`)  // jobRunning, jobTakeover, jobOther
	require.Contains(t, body, `data-state="aborting">1<`) // jobAbort
	require.Contains(t, body, `<a href="/jobs/finished">1 finished</a>`)
	require.Contains(t, body, "<td>w1</td>")
	require.Contains(t, body, "Lag of the workers' group: <strong>17</strong>")
	require.Contains(t, body, "<strong>3</strong> in Sample.Analysis.Job.DLQ")
	require.Contains(t, body, "sophos:abc123")
	require.Contains(t, body, "sophos: 90 ok, 10 retried (9%): 6 × 429 (5.9%), 3 × 5xx (3.0%), 1 network; 1 permanent failures; 4 waiting")
	require.Contains(t, body, `<td>w2 <span class="warn">draining</span></td>`)
	require.Contains(t, body, "<td>w1</td>", "w1 is not draining")

	w2 := newWorld(t, opts{noKafka: true})
	_, body = w2.get("/")
	require.Contains(t, body, "Kafka: not configured")
	_, body = w2.get("/dlq")
	require.Contains(t, body, "Kafka: not configured")
}

func TestJobsFiltersAndPaging(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	rows := func(q string) []string {
		resp, body := w.get("/jobs" + q)
		require.Equal(t, http.StatusOK, resp.StatusCode, body)
		var ids []string
		for _, id := range []string{jobRunning, jobTakeover, jobAbort, jobOther} {
			if strings.Contains(body, `<a href="/jobs/`+id+`">`) {
				ids = append(ids, id)
			}
		}
		return ids
	}
	require.Equal(t, []string{jobRunning, jobTakeover, jobAbort, jobOther}, rows(""))
	require.Equal(t, []string{jobAbort}, rows("?state=aborting"))
	require.Equal(t, []string{jobOther}, rows("?customer=globex"))
	require.Equal(t, []string{jobOther}, rows("?vendor=cytomic"))
	require.Equal(t, []string{jobRunning}, rows("?vendor=sophos"))
	require.Equal(t, []string{jobTakeover}, rows("?sha256=2222"))
	require.Equal(t, []string{jobRunning, jobTakeover, jobAbort, jobOther}, rows("?age=%3C5m"))
	require.Empty(t, rows("?age=%3E1h"))

	// The filter form keeps what was asked.
	_, body := w.get("/jobs?state=running&customer=acme")
	require.Contains(t, body, `<option value="running" selected>`)
	require.Contains(t, body, `name="customer" value="acme"`)

	// Cursor paging: two pages of two, and the next link keeps the filter.
	_, body = w.get("/jobs?state=running&limit=1")
	require.Contains(t, body, `href="/jobs?state=running&amp;after=`)
	first := rows("?limit=2")
	require.Equal(t, []string{jobRunning, jobTakeover}, first)
	_, body = w.get("/jobs?limit=2")
	i := strings.Index(body, `rel="next"`)
	require.Positive(t, i)
	href := body[strings.LastIndex(body[:i], `href="`)+6 : i-2]
	next := strings.ReplaceAll(href, "&amp;", "&")
	require.Equal(t, []string{jobAbort, jobOther}, rows(strings.TrimPrefix(next, "/jobs")+"&limit=2"))

	resp, body := w.get("/jobs?state=bogus")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, "state &#34;bogus&#34;: want one of")
}

func TestJobPageShowsTasksTimelineAndSource(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	_, body := w.get("/jobs/" + jobRunning)
	require.Contains(t, body, "Sample.Analysis.Job.OSL/0@41")
	require.Contains(t, body, "sophos.xdr_query")
	require.Contains(t, body, "running at the vendor")
	require.Contains(t, body, `<td class="num">7</td>`) // polls
	require.Contains(t, body, "https://bucket.s3.amazonaws.com/x?[query removed]")
	require.Contains(t, body, "[REDACTED]")
	require.Contains(t, body, "vendor operation started")
	require.Contains(t, body, "Read-only console")
	require.NotContains(t, body, `href="/jobs/`+jobRunning+`/abort"`)

	// The takeover: the timeline shows the release and the claim, each with
	// its worker and token.
	_, body = w.get("/jobs/" + jobTakeover)
	require.Contains(t, body, `<td class="ev">admitted</td><td>w1</td>`)
	require.Contains(t, body, `<td class="ev">claimed</td><td>w2</td>`)
	require.Contains(t, body, "released by an operator")

	_, body = w.get("/jobs/" + jobAbort)
	require.Contains(t, body, "abort requested")

	// A finished job: its record is gone, its result and timeline are not.
	_, body = w.get("/jobs/" + jobDone)
	require.Contains(t, body, "finished: success")
	require.Contains(t, body, "ws-17, ws-18")
	require.Contains(t, body, `C:\evil.exe`)
	require.Contains(t, body, `<td class="ev">finished</td>`)
	require.Contains(t, body, "Sample.Analysis.Job.OSL/0@40")
	require.Contains(t, body, "<code>"+strings.Repeat("4", 64)+"</code> (platform win)")

	resp, body := w.get("/jobs/nope")
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Contains(t, body, "knows no job nope")

	_, body = w.get("/jobs/finished")
	require.Contains(t, body, `<a href="/jobs/`+jobDone+`">`)
	resp, _ = w.get("/jobs/finished?after=bogus")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func TestLeasesAndVendorsPages(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	_, body := w.get("/leases")
	require.Contains(t, body, "<td>w2</td>")
	require.Contains(t, body, "expires in 9m")
	// Drain state per worker, as each published it.
	require.Contains(t, body, `<td data-worker-state="w1">running</td>`)
	require.Contains(t, body, `<td data-worker-state="w2"><span class="warn">draining</span> since <time datetime="2026-12-03T09:00:00Z">2026-12-03 09:00:00.000Z</time>`)
	// Takeover history from the lease log, newest first: the fixture's
	// operator release of jobTakeover (from w1) and w2's claim of it.
	require.NotContains(t, body, "see each job's timeline")
	i := strings.Index(body, `<table id="takeovers">`)
	require.Positive(t, i)
	moves := body[i:]
	row := regexp.MustCompile(`<td><a href="/jobs/` + jobTakeover + `">` + jobTakeover + `</a></td><td>([a-z]+)</td><td>(w[12])</td><td class="num">(\d+)</td>`)
	got := row.FindAllStringSubmatch(moves, -1)
	require.Len(t, got, 2, moves)
	require.Equal(t, []string{"claimed", "w2"}, got[0][1:3], "newest first")
	require.Equal(t, []string{"forced", "w1"}, got[1][1:3])
	require.Greater(t, atoi(t, got[0][3]), atoi(t, got[1][3]), "the claim bumped the fencing token")
	require.NotContains(t, moves, "<td>admitted</td>", "admissions are not hand-overs")
	_, body = w.get("/vendors")
	require.Contains(t, body, "<code>sophos:abc123</code>")
	require.Contains(t, body, "left")
	require.Contains(t, body, `id="worker-vendor-stats"`)
	// 429 and 5xx apart, with their rates per call (101 calls).
	require.Contains(t, body, `<tr><td>sophos</td><td class="num">90</td><td class="num">6</td><td class="num">5.9%</td><td class="num">3</td><td class="num">3.0%</td>`+
		`<td class="num">1</td><td class="num">10</td><td class="num">1</td><td class="num">9%</td><td class="num">4</td><td class="num">2</td></tr>`)
	require.Contains(t, body, `<tr><td>cbc</td><td class="num">5</td><td class="num">0</td><td class="num">0.0%</td><td class="num">0</td><td class="num">0.0%</td>`)
	require.Contains(t, body, `<td>w1</td>`)
	_, body = w.get("/dlq")
	require.Contains(t, body, "bad-json <span class=\"count\">(2; 1 replayable)</span>")
	require.Contains(t, body, "[REDACTED]")
}

// TestReadOnlyRefusesPOST: without Write every action is refused on the
// server (403) and the refusal is audited.
func TestReadOnlyRefusesPOST(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	for _, a := range []string{"release", "abort"} {
		resp, body := w.post("/jobs/"+jobRunning+"/"+a, url.Values{"confirm": {"yes"}})
		require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
		require.Contains(t, body, "read-only")
	}
	_, body := w.get("/jobs/" + jobRunning)
	require.Contains(t, body, `<td class="ev">vendor operation started</td><td>w1</td>`)
	require.NotContains(t, body, "released by an operator")
	a := w.audit()
	require.Len(t, a, 2)
	require.Equal(t, "refused: read-only console", a[0]["result"])
	require.Equal(t, "release", a[0]["action"])
	require.Contains(t, a[0]["who"], "local@127.0.0.1")
}

// TestCrossOriginPOSTRefused: a form posted from another site is refused
// before it reaches the action.
func TestCrossOriginPOSTRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{write: true})
	resp, body := w.post("/jobs/"+jobRunning+"/abort", url.Values{"confirm": {"yes"}}, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	require.Contains(t, body, "cross-origin")
	resp, _ = w.post("/jobs/"+jobRunning+"/abort", url.Values{"confirm": {"yes"}}, "Origin", "https://evil.example")
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	require.Empty(t, w.audit(), "nothing reached the action")
	rec, err := w.st.Get(ctx(t), jobRunning)
	require.NoError(t, err)
	require.NotContains(t, rec.Fields, "abort")
}

// TestWriteActionsAreConfirmedAppliedAndAudited: release and abort act on
// the ledger only with the confirmation, and each lands in the audit stream.
func TestWriteActionsAreConfirmedAppliedAndAudited(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{write: true})
	_, body := w.get("/jobs/" + jobRunning)
	require.Contains(t, body, `href="/jobs/`+jobRunning+`/abort"`)
	_, body = w.get("/jobs/" + jobRunning + "/abort")
	require.Contains(t, body, `<form method="post" action="/jobs/`+jobRunning+`/abort"`)

	resp, _ := w.post("/jobs/"+jobRunning+"/abort", nil, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, "not confirmed")

	resp, _ = w.post("/jobs/"+jobRunning+"/release", url.Values{"confirm": {"yes"}}, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/jobs/"+jobRunning+"?done=release", resp.Header.Get("Location"))
	resp, _ = w.post("/jobs/"+jobRunning+"/abort", url.Values{"confirm": {"yes"}}, "Sec-Fetch-Site", "same-origin")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	resp, _ = w.post("/jobs/"+jobDone+"/abort", url.Values{"confirm": {"yes"}})
	require.Equal(t, "/jobs/"+jobDone+"?done=finished", resp.Header.Get("Location"))

	_, body = w.get("/jobs/" + jobRunning + "?done=abort")
	require.Contains(t, body, "Abort requested: the holder is told")
	require.Contains(t, body, "released by an operator")
	require.Contains(t, body, `<td class="ev">abort requested</td>`)
	tl, err := w.st.Timeline(ctx(t), jobRunning)
	require.NoError(t, err)
	var details []string
	for _, e := range tl {
		if e.Ev == "released by an operator" || e.Ev == "abort requested" {
			details = append(details, e.Detail)
		}
	}
	require.Len(t, details, 2)
	for _, d := range details {
		require.True(t, strings.HasPrefix(d, "console, by "), "the timeline says who acted: %q", d)
	}
	rec, err := w.st.Get(ctx(t), jobRunning)
	require.NoError(t, err)
	require.Contains(t, rec.Fields, "abort")

	var got []string
	for _, a := range w.audit() {
		got = append(got, a["action"].(string)+" "+a["job"].(string)+": "+a["result"].(string))
		require.NotEmpty(t, a["who"])
		require.NotEmpty(t, a["at"])
	}
	require.Equal(t, []string{
		"abort " + jobRunning + ": refused: not confirmed",
		"release " + jobRunning + ": ok: taken from w1",
		"abort " + jobRunning + ": ok: abort requested",
		"abort " + jobDone + ": refused: no record (finished or unknown)",
	}, got)
	_, body = w.get("/")
	require.Contains(t, body, "ok: taken from w1")
}

func TestTokenAuth(t *testing.T) {
	t.Parallel()
	const tok = "correct-horse-battery-staple"
	w := newWorld(t, opts{token: tok, write: true})

	resp, _ := w.get("/jobs?state=running")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/login?next=%2Fjobs%3Fstate%3Drunning", resp.Header.Get("Location"))
	resp, _ = w.get("/", "Authorization", "Bearer wrong-token-wrong-token")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, _ = w.post("/jobs/"+jobRunning+"/abort", url.Values{"confirm": {"yes"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no token, no action")
	resp, _ = w.get("/", "Authorization", "Bearer "+tok)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, body := w.get("/login")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<label for="token">Access token</label>`)

	resp, body = w.post("/login", url.Values{"token": {"nope-nope-nope-nope"}, "next": {"/jobs"}})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	require.Contains(t, body, "not this console")
	resp, _ = w.post("/login", url.Values{"token": {tok}, "next": {"//evil.example/"}})
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	require.Equal(t, "/", resp.Header.Get("Location"), "no open redirect")
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			cookie = c
		}
	}
	require.NotNil(t, cookie)
	require.True(t, cookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	require.NotContains(t, cookie.Value, tok)
	resp, body = w.get("/jobs", "Cookie", cookie.String())
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Contains(t, body, "Log out")

	// Guessing is cut short: after ten failures a minute, even the right
	// token waits.
	for range maxLoginFailures - 1 {
		resp, _ = w.post("/login", url.Values{"token": {"guess-guess-guess-guess"}})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	resp, _ = w.post("/login", url.Values{"token": {tok}})
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	require.Equal(t, "60", resp.Header.Get("Retry-After"))

	// With the token required, even a loopback client needs it.
	resp, _ = w.get("/vendors", "Cookie", sessionCookie+"=forged")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)

	_, err := New(Config{Store: w.st, TokenFile: "/nonexistent/token"})
	require.ErrorContains(t, err, "TokenFile")
}

func TestProxyHeaderAuthNamesTheUserInTheAudit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{proxyHeader: "X-Auth-Request-User", write: true})
	resp, _ := w.get("/")
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, body := w.get("/", "X-Auth-Request-User", "alice@example.com")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "alice@example.com")
	resp, _ = w.post("/jobs/"+jobOther+"/release", url.Values{"confirm": {"yes"}}, "X-Auth-Request-User", "alice@example.com")
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	a := w.audit()
	require.Len(t, a, 1)
	require.Equal(t, "alice@example.com", a[0]["who"])
}

// TestNoAuthServesLoopbackOnly: a console without token or proxy header
// refuses any client that is not on loopback.
func TestNoAuthServesLoopbackOnly(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{})
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "192.0.2.7:4242"
	rec := httptest.NewRecorder()
	w.srv.Handler().ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)
	require.Contains(t, rec.Body.String(), "loopback clients only")
	require.Equal(t, csp, rec.Header().Get("Content-Security-Policy"))

	require.True(t, IsLoopbackAddr("127.0.0.1:8089"))
	require.True(t, IsLoopbackAddr("[::1]:8089"))
	require.True(t, IsLoopbackAddr("localhost:8089"))
	require.False(t, IsLoopbackAddr(":8089"))
	require.False(t, IsLoopbackAddr("0.0.0.0:8089"))
	require.False(t, IsLoopbackAddr("10.1.2.3:8089"))
}

// readEvent reads one SSE event.
func readEvent(t *testing.T, r *bufio.Reader) (name, data string) {
	t.Helper()
	var lines []string
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && name != "":
			return name, strings.Join(lines, "\n")
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			lines = append(lines, strings.TrimPrefix(line, "data: "))
		}
	}
}

func openStream(t *testing.T, w *world, u string) (*bufio.Reader, func()) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, w.http.URL+"/live?u="+url.QueryEscape(u), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	return bufio.NewReader(resp.Body), func() { resp.Body.Close() }
}

// TestLiveStreamSendsFragmentsAndSharesOneRead: the stream sends the
// page's live part, then a new one when the ledger changes; many streams
// cost one Redis read per interval, not one each.
func TestLiveStreamSendsFragmentsAndSharesOneRead(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{interval: time.Hour, maxStreams: 8})
	var wg sync.WaitGroup
	closers := make(chan func(), 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, closeFn := openStream(t, w, "/jobs?state=running")
			closers <- closeFn
			name, data := readEvent(t, r)
			assert.Equal(t, "fragment", name)
			assert.Contains(t, data, jobRunning)
			assert.NotContains(t, data, jobAbort)
			assert.NotContains(t, data, "<html")
		}()
	}
	wg.Wait()
	require.Equal(t, int64(1), w.srv.reads.Load(), "eight streams, one snapshot")

	// A ninth is refused: the server bounds its streams.
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, w.http.URL+"/live?u=/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	close(closers)
	for c := range closers {
		c()
	}

	// With a short interval, a change in the ledger arrives.
	w2 := newWorld(t, opts{interval: 50 * time.Millisecond})
	r, closeFn := openStream(t, w2, "/jobs/"+jobOther)
	defer closeFn()
	_, data := readEvent(t, r)
	require.NotContains(t, data, "abort requested")
	_, err = w2.st.NotifyAborts(ctx(t), []string{jobOther}, "")
	require.NoError(t, err)
	for !strings.Contains(data, "abort requested") {
		_, data = readEvent(t, r)
	}

	resp, _ = w2.get("/live?u=" + url.QueryEscape("https://evil.example/"))
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// TestSlowJobScanIsNotRepeatedBackToBack: a listing that took long is
// reused for five times its duration, even when the rest of the snapshot
// is read again.
func TestSlowJobScanIsNotRepeatedBackToBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t, opts{interval: time.Millisecond})
	_, body := w.get("/jobs")
	require.Contains(t, body, "<strong>4</strong> of 4 jobs")
	w.srv.jobsMu.Lock()
	w.srv.jobs.took = time.Hour // as if the ledger were huge
	w.srv.jobsMu.Unlock()
	const newJob = "77777777-7777-4777-8777-777777777777"
	w.admit("w1", newJob, "acme", "win", "Sample.Analysis.Job.OSL/1@1")
	reads := w.srv.reads.Load()
	_, body = w.get("/jobs")
	require.Greater(t, w.srv.reads.Load(), reads, "the snapshot was read again")
	require.NotContains(t, body, newJob, "but not the job listing")
	require.Contains(t, body, "(the scan took 1h00m)")

	w.srv.jobsMu.Lock()
	w.srv.jobs.took = 0
	w.srv.jobsMu.Unlock()
	_, body = w.get("/jobs")
	require.Contains(t, body, newJob)
}
