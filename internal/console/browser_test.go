package console

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/require"
)

// The browser tests drive Debian's chromium (headless). They are part of
// the normal test run: without chromium they fail, saying how to get it.

var screenshots = flag.Bool("screenshots", false, "write screenshots of the main pages to docs/console-*.png")

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

var (
	browserOnce   sync.Once
	browserCtx    context.Context
	browserCancel func()
	browserErr    error
)

// closeBrowser ends the shared browser (TestMain, before the leak check).
func closeBrowser() {
	if browserCancel != nil {
		browserCancel()
	}
}

// tab opens a new tab of the shared headless chromium, closed when the test
// ends. Console messages and uncaught exceptions of the page (a CSP
// violation among them) fail the test.
func tab(t *testing.T) context.Context {
	t.Helper()
	browserOnce.Do(func() {
		if _, err := os.Stat(chromiumPath); err != nil {
			browserErr = fmt.Errorf("the browser tests need chromium at %s (Debian: apt-get install chromium; .ci/run installs it): %w", chromiumPath, err)
			return
		}
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chromiumPath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
			chromedp.WindowSize(1280, 900), chromedp.Flag("lang", "en-US"))...)
		ctx, cancelBrowser := chromedp.NewContext(alloc)
		browserCtx = ctx
		browserCancel = func() { cancelBrowser(); cancelAlloc() }
		browserErr = chromedp.Do(ctx) // starts the browser
	})
	if browserErr != nil {
		t.Fatal(browserErr)
	}
	// A browser context of its own: no cookie of another test (cookies
	// ignore ports, and every console here is on 127.0.0.1).
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	ctx, cancelTimeout := context.WithTimeout(ctx, 60*time.Second)
	var problems []string
	messages := chromedp.Console(ctx)
	read := make(chan struct{})
	go func() {
		defer close(read)
		for m, err := range messages {
			if err != nil {
				return
			}
			// A refused request (403, 404) is the test's point, not a fault.
			if (m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException()) && m.Source != "network" {
				problems = append(problems, m.String())
			}
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		cancel()
		<-read
		if len(problems) > 0 {
			t.Errorf("the page reported problems (a CSP violation is one): %s", strings.Join(problems, "; "))
		}
	})
	return ctx
}

// waitText waits until the element matching the CSS selector sel contains
// text. It keeps asking across a navigation (the page the question was
// put to may be gone), until the tab's deadline.
func waitText(sel, text string) chromedp.Action[chromedp.Void] {
	return waitCond(fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent.includes(%q)`, sel, text))
}

// waitCond waits until the JavaScript expression cond is true on the page
// (the page may navigate meanwhile).
func waitCond(cond string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		for {
			_, err := chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(20*time.Millisecond),
				chromedp.WithPollingTimeout(5*time.Second))(ctx, t)
			if err == nil || ctx.Err() != nil {
				return err
			}
			// The page navigated away under the poll: ask the new one.
		}
	})
}

// do runs actions in the tab.
func do(t *testing.T, c context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(c, steps...))
}

// get runs one action that returns a value.
func get[T any](t *testing.T, c context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(c, a)
	require.NoError(t, err)
	return v
}

// css is a CSS selector (a plain string would be a DOM text search).
type css = chromedp.CSS

// TestBrowserLiveUpdateArrives: a change in the ledger reaches an open
// page over SSE, without a reload.
func TestBrowserLiveUpdateArrives(t *testing.T) {
	w := newWorld(t, opts{interval: 50 * time.Millisecond})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(w.http.URL+"/jobs/"+jobOther),
		chromedp.WaitVisible(css("#timeline")),
		waitText("#live-status", "Live updates: on"),
	)
	require.NotContains(t, get(t, c, chromedp.Text(css("#live"))), "abort requested")
	_, err := w.st.NotifyAborts(ctx(t), []string{jobOther}, "")
	require.NoError(t, err)
	do(t, c,
		waitText("#timeline", "abort requested"),
		waitText("#job-state", "aborting"),
	)
	updates := get(t, c, chromedp.AttributeValue(css("#live"), "data-updates"))
	require.True(t, updates.Exists)
	require.NotEqual(t, "0", updates.Value)
}

// TestBrowserPauseControl: pausing closes the stream (the server sees it
// go) and says so; resuming opens it again and the page catches up.
func TestBrowserPauseControl(t *testing.T) {
	w := newWorld(t, opts{interval: 50 * time.Millisecond})
	c := tab(t)
	streams := func() int { return len(w.srv.streams) }
	do(t, c,
		chromedp.Navigate(w.http.URL+"/jobs"),
		waitText("#live-status", "Live updates: on"),
		chromedp.Click(css("#pause")),
		waitText("#live-status", "paused"),
	)
	require.Equal(t, "true", get(t, c, chromedp.AttributeValue(css("#pause"), "aria-pressed")).Value)
	require.Eventually(t, func() bool { return streams() == 0 }, 10*time.Second, 10*time.Millisecond,
		"the paused page closed its stream")

	const newJob = "66666666-6666-4666-8666-666666666666"
	w.admit("w1", newJob, "initech", "win", "Sample.Analysis.Job.OSL/3@1")
	require.NotContains(t, get(t, c, chromedp.Text(css("#live"))), newJob, "no update while paused")

	do(t, c,
		chromedp.Click(css("#pause")),
		waitText("#pause", "Pause live updates"),
		waitText("#live", newJob),
	)
	require.Equal(t, "false", get(t, c, chromedp.AttributeValue(css("#pause"), "aria-pressed")).Value)
	require.Equal(t, 1, streams())
}

// TestBrowserFiltersRoundTripThroughURL: the filter form puts every filter
// in the URL, and that URL opened anew shows the same filters and rows.
func TestBrowserFiltersRoundTripThroughURL(t *testing.T) {
	// Nothing changes here: one read, and no live swap under the clicks.
	w := newWorld(t, opts{interval: time.Hour})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(w.http.URL+"/jobs"),
		chromedp.WaitVisible(css("#f-state")),
		chromedp.SetValue(css("#f-state"), "running"),
		chromedp.SendKeys(css("#f-customer"), "globex"),
		chromedp.SetValue(css("#f-age"), "<1h"),
		chromedp.Click(css(`form.filters button[type="submit"]`)),
		waitText("#jobs-count", "1 of 4"),
	)
	loc := get(t, c, chromedp.Location())
	require.Equal(t, w.http.URL+"/jobs?state=running&vendor=&customer=globex&sha256=&age=%3C1h", loc)

	// Shared: a fresh tab opening the link sees the same.
	c2 := tab(t)
	do(t, c2, chromedp.Navigate(loc), chromedp.WaitVisible(css("#jobs-count")))
	require.Equal(t, "running", get(t, c2, chromedp.Value(css("#f-state"))))
	require.Equal(t, "globex", get(t, c2, chromedp.Value(css("#f-customer"))))
	require.Equal(t, "<1h", get(t, c2, chromedp.Value(css("#f-age"))))
	require.Contains(t, get(t, c2, chromedp.Text(css("#jobs-count"))), "1 of 4 jobs")
	rows := get(t, c2, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("table.jobs tbody tr td:first-child")).map(td => td.textContent)`))
	require.Equal(t, []string{jobOther}, rows)

	// The state link on the overview is a filter link too.
	// The link is in the live part: click it once the first fragment has
	// replaced the part (the node clicked must not be swapped away).
	do(t, c2, chromedp.Navigate(w.http.URL+"/"), chromedp.WaitVisible(css("#live[data-updates]")),
		chromedp.Click(css(`a[href="/jobs?state=aborting"]`)),
		waitText("#jobs-count", "1 of 4"))
	require.Equal(t, "aborting", get(t, c2, chromedp.Value(css("#f-state"))))
}

// TestBrowserTimelineAfterTakeoverAndAbort: an operator releases a job and
// aborts another through the confirmation pages; each job's timeline
// shows what happened, with workers and tokens.
func TestBrowserTimelineAfterTakeoverAndAbort(t *testing.T) {
	w := newWorld(t, opts{write: true})
	c := tab(t)
	timeline := func(id string) [][]string {
		do(t, c, chromedp.Navigate(w.http.URL+"/jobs/"+id), chromedp.WaitVisible(css("#timeline")))
		return get(t, c, chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#timeline tbody tr")).map(tr =>
				Array.from(tr.querySelectorAll("td")).slice(1, 4).map(td => td.textContent))`))
	}
	// The takeover of the fixture: w1 admitted it, an operator released
	// it, w2 claimed it with the next token.
	tl := timeline(jobTakeover)
	require.GreaterOrEqual(t, len(tl), 4)
	require.Equal(t, []string{"admitted", "w1"}, tl[0][:2])
	require.Equal(t, "released by an operator", tl[1][0])
	require.Equal(t, []string{"claimed", "w2"}, tl[2][:2])
	require.Greater(t, atoi(t, tl[2][2]), atoi(t, tl[0][2]), "a takeover bumps the fencing token")

	// Release through the console: confirm, then the claim by w2.
	do(t, c,
		chromedp.Navigate(w.http.URL+"/jobs/"+jobRunning),
		chromedp.Click(css(`a[href="/jobs/`+jobRunning+`/release"]`)),
		chromedp.WaitVisible(css(`form.confirm button`)),
		chromedp.Click(css(`form.confirm button`)),
		waitText(".notice", "Released"),
		waitText("#timeline", "released by an operator"),
	)
	claimed, _, err := w.st.Claim(ctx(t), w.session("w2"), 10)
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	// The console reads a job at most once per interval, however many
	// browsers look: the page may be that old, and its live part shows the
	// claim by the next interval.
	do(t, c, chromedp.Navigate(w.http.URL+"/jobs/"+jobRunning), chromedp.WaitVisible(css("#timeline")),
		waitCond(`(() => { const rows = document.querySelectorAll("#timeline tbody tr");
			return rows.length > 0 && rows[rows.length-1].querySelectorAll("td")[1].textContent === "claimed"; })()`))
	tl = timeline(jobRunning)
	last := tl[len(tl)-1]
	require.Equal(t, []string{"claimed", "w2"}, last[:2])
	require.Greater(t, atoi(t, last[2]), atoi(t, tl[0][2]), "a takeover bumps the fencing token")

	// Abort through the console.
	do(t, c,
		chromedp.Navigate(w.http.URL+"/jobs/"+jobOther+"/abort"),
		chromedp.WaitVisible(css(`form.confirm button`)),
		chromedp.Click(css(`form.confirm button`)),
		waitText(".notice", "Abort requested"),
		waitText("#job-state", "aborting"),
	)
	tl = timeline(jobOther)
	require.Equal(t, "abort requested", tl[len(tl)-1][0])
	require.Equal(t, "w2", tl[len(tl)-1][1])

	do(t, c, chromedp.Navigate(w.http.URL+"/"), chromedp.WaitVisible(css("#h-audit")))
	audit := get(t, c, chromedp.Text(css("main")))
	require.Contains(t, audit, "ok: taken from w1")
	require.Contains(t, audit, "ok: abort requested")
}

// TestBrowserDLQReplay: an operator replays a reason's dead letters from
// the DLQ page: the confirmation page shows the dry-run count, the button
// replays, the DLQ page says what was done and the audit names it.
func TestBrowserDLQReplay(t *testing.T) {
	w := newWorld(t, opts{write: true})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(w.http.URL+"/dlq"),
		chromedp.WaitVisible(css("#live[data-updates]")), // the first live fragment has replaced the part
		chromedp.Click(css(`a[href="/dlq/replay?reason=bad-json"]`)),
		waitText("#replay-count", "1"),
		waitText("#replay-dry-run", "1 refused (the source topic is not a job topic)"),
		chromedp.Click(css(`form.confirm button`)),
		waitText(".notice", "Replayed 1 dead letter(s) to their job topics; skipped 1"),
	)
	require.True(t, strings.HasSuffix(get(t, c, chromedp.Location()), "/dlq?done=replay&replayed=1&skipped=1&refused=1"))
	require.Equal(t, 1, w.kafka.replayed)
	// The refused letter offers no replay, and says why.
	require.Zero(t, get(t, c, chromedp.Evaluate[int](`document.querySelectorAll('a[href="/dlq/replay?letter=0%403"]').length`)))
	do(t, c, chromedp.Navigate(w.http.URL+"/"), chromedp.WaitVisible(css("#h-audit")))
	audit := get(t, c, chromedp.Text(css("main")))
	require.Contains(t, audit, "dlq-replay")
	require.Contains(t, audit, "ok: replayed 1 of 2 chosen")
}

// TestBrowserDrainTakeoversAndVendorRates: the leases page shows which
// worker drains and the takeover history; the vendors page and the
// overview show 429s and 5xx apart, with their rates.
func TestBrowserDrainTakeoversAndVendorRates(t *testing.T) {
	w := newWorld(t, opts{})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(w.http.URL+"/leases"),
		waitText(`[data-worker-state="w2"]`, "draining since 2026-12-03 09:00:00.000Z"),
		waitText(`[data-worker-state="w1"]`, "running"),
	)
	moves := get(t, c, chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#takeovers tbody tr")).map(tr =>
			Array.from(tr.querySelectorAll("td")).slice(1).map(td => td.textContent))`))
	require.Len(t, moves, 2)
	require.Equal(t, []string{jobTakeover, "claimed", "w2"}, moves[0][:3])
	require.Equal(t, []string{jobTakeover, "forced", "w1"}, moves[1][:3])
	require.Greater(t, atoi(t, moves[0][3]), atoi(t, moves[1][3]))

	do(t, c, chromedp.Navigate(w.http.URL+"/vendors"), chromedp.WaitVisible(css("#vendor-calls")))
	row := get(t, c, chromedp.Evaluate[[]string](`Array.from(Array.from(document.querySelectorAll("#vendor-calls tbody tr")).find(tr =>
			tr.cells[0].textContent === "sophos").cells).map(td => td.textContent)`))
	require.Equal(t, []string{"sophos", "90", "6", "5.9%", "3", "3.0%", "1", "10", "1", "9%", "4", "2"}, row)
	do(t, c, chromedp.Navigate(w.http.URL+"/"), waitText("#vendor-health", "6 × 429 (5.9%), 3 × 5xx (3.0%)"))
}

// TestBrowserRefusesReadOnlyAndCrossSitePOST: a read-only console refuses
// a POST the browser sends; a form on another site posting to a console
// with write access is refused too.
func TestBrowserRefusesReadOnlyAndCrossSitePOST(t *testing.T) {
	ro := newWorld(t, opts{})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(ro.http.URL+"/jobs/"+jobRunning+"/abort"),
		waitText("main", "read-only"),
	)
	status := get(t, c, chromedp.Evaluate[int](`fetch("/jobs/`+jobRunning+`/abort", {method: "POST", body: new URLSearchParams("confirm=yes")}).then(r => r.status)`,
		chromedp.EvalAwaitPromise))
	require.Equal(t, http.StatusForbidden, status)
	require.Zero(t, get(t, c, chromedp.Evaluate[int](`document.querySelectorAll("form.confirm").length`)),
		"a read-only console offers no action form")

	rw := newWorld(t, opts{write: true})
	evil := httptest.NewServer(http.HandlerFunc(func(hw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(hw, `<!doctype html><html lang="en"><head><title>prize</title></head><body><form method="post" action="%s/jobs/%s/abort">`+
			`<input type="hidden" name="confirm" value="yes"><button id="go">win a prize</button></form></body></html>`,
			rw.http.URL, jobRunning)
	}))
	defer evil.Close()
	// Another site: the console on 127.0.0.1, this page on localhost.
	do(t, c,
		chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
		chromedp.Click(css("#go")),
		waitText("body", "cross-origin request refused"),
	)
	rec, err := rw.st.Get(ctx(t), jobRunning)
	require.NoError(t, err)
	require.NotContains(t, rec.Fields, "abort", "the cross-site form changed nothing")
	require.Empty(t, rw.audit())
}

// TestBrowserKeyboardNavigation: Tab walks the skip link, the navigation,
// the pause control and the page's actions, each with a visible focus ring.
func TestBrowserKeyboardNavigation(t *testing.T) {
	w := newWorld(t, opts{write: true})
	c := tab(t)
	do(t, c, chromedp.Navigate(w.http.URL+"/jobs/"+jobRunning), chromedp.WaitVisible(css("#timeline")))
	type focus struct {
		Tag, Text, Outline string
	}
	var seen []string
	for range 10 { // skip link, six navigation links, pause, release, abort
		do(t, c, chromedp.KeyEvent(kb.Tab))
		f := get(t, c, chromedp.Evaluate[focus](`(() => { const e = document.activeElement; const s = getComputedStyle(e);
				return {Tag: e.tagName, Text: (e.textContent || "").trim(), Outline: s.outlineStyle + " " + s.outlineWidth}; })()`))
		require.NotEqual(t, "BODY", f.Tag, "Tab reaches an element")
		require.Equal(t, "solid 3px", f.Outline, "%s %q shows where the focus is", f.Tag, f.Text)
		seen = append(seen, f.Tag+":"+f.Text)
	}
	require.Equal(t, []string{"A:Skip to content", "A:Overview", "A:Jobs", "A:Finished", "A:Leases and workers", "A:Vendors",
		"A:Dead letters", "BUTTON:Pause live updates", "A:Release lease…", "A:Abort job…"}, seen)

	// Enter on the focused action follows it.
	do(t, c, chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(css("form.confirm")))
	require.True(t, strings.HasSuffix(get(t, c, chromedp.Location()), "/jobs/"+jobRunning+"/abort"))
}

// a11y is an automated accessibility check of the page in the tab: the
// language, landmarks, one h1, labelled form controls, alt texts, named
// buttons and links, table headers. It returns the problems found.
const a11y = `(() => {
  const p = [];
  if (!document.documentElement.lang) p.push("html has no lang");
  for (const sel of ["header", "nav", "main", "footer"]) if (!document.querySelector(sel)) p.push("no <" + sel + "> landmark");
  if (document.querySelectorAll("h1").length !== 1) p.push("want exactly one h1");
  if (!document.title) p.push("no title");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const labelled = (el.id && document.querySelector('label[for="' + el.id + '"]')) || el.closest("label") ||
      el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) p.push("unlabelled " + el.tagName + " " + (el.name || el.id));
  }
  for (const img of document.querySelectorAll("img")) if (!img.hasAttribute("alt")) p.push("img without alt: " + img.src);
  for (const b of document.querySelectorAll("button, a[href]")) if (!b.textContent.trim() && !b.getAttribute("aria-label")) p.push("unnamed " + b.tagName);
  for (const t of document.querySelectorAll("table")) if (!t.querySelector("th")) p.push("table without headers");
  const ids = {};
  for (const e of document.querySelectorAll("[id]")) { if (ids[e.id]) p.push("duplicate id " + e.id); ids[e.id] = true; }
  return p;
})()`

func TestBrowserAccessibilityOfEveryPage(t *testing.T) {
	w := newWorld(t, opts{write: true})
	tw := newWorld(t, opts{token: "correct-horse-battery-staple"})
	c := tab(t)
	all := append(append([]string{}, pages...), "/jobs?state=running&limit=1", "/jobs/nope")
	for _, p := range all {
		do(t, c, chromedp.Navigate(w.http.URL+p), chromedp.WaitVisible(css("main")))
		require.Empty(t, get(t, c, chromedp.Evaluate[[]string](a11y)), p)
	}
	do(t, c, chromedp.Navigate(tw.http.URL+"/login"), chromedp.WaitVisible(css("#token")))
	require.Empty(t, get(t, c, chromedp.Evaluate[[]string](a11y)), "/login")
}

// TestBrowserLogin: with a token, a browser logs in once through the form
// and keeps a session cookie the page's script cannot read.
func TestBrowserLogin(t *testing.T) {
	const tok = "correct-horse-battery-staple"
	w := newWorld(t, opts{token: tok})
	c := tab(t)
	do(t, c,
		chromedp.Navigate(w.http.URL+"/leases"),
		chromedp.WaitVisible(css("#token")),
		chromedp.SendKeys(css("#token"), tok),
		chromedp.Submit(css("#token")),
		waitText("h1", "Leases and workers"),
	)
	require.Equal(t, w.http.URL+"/leases", get(t, c, chromedp.Location()))
	require.Empty(t, get(t, c, chromedp.Evaluate[string](`document.cookie`)), "the session cookie is HttpOnly")
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(t, err, "%q", s)
	return n
}

// TestScreenshots writes docs/console-*.png with -screenshots.
func TestScreenshots(t *testing.T) {
	if !*screenshots {
		t.Log("run with -screenshots to write docs/console-*.png")
		return
	}
	w := newWorld(t, opts{write: true, interval: time.Hour})
	c := tab(t)
	dir := filepath.Join("..", "..", "docs")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, p := range map[string]string{
		"overview": "/", "jobs": "/jobs", "job": "/jobs/" + jobRunning, "job-takeover": "/jobs/" + jobTakeover,
		"job-finished": "/jobs/" + jobDone, "leases": "/leases", "vendors": "/vendors", "dlq": "/dlq",
		"confirm": "/jobs/" + jobOther + "/abort", "replay": "/dlq/replay?reason=bad-json",
	} {
		do(t, c, chromedp.Navigate(w.http.URL+p), chromedp.WaitVisible(css("main")))
		png := get(t, c, chromedp.FullScreenshot(100))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644))
	}
}
