package cblr_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	simcblr "github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Two tasks on one sensor each open, use and close a session of their own:
// nothing one does (a command, a cancel, a close) touches the other's.
func TestTasksKeepToTheirSessions(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: 100 * time.Millisecond}}, infected(1, "WIN-A"))
	first := edrtest.NewIntent("job-a")
	refA, err := e.drv.Start(edrtest.Ctx(t), target(1), first)
	require.NoError(t, err)
	second := edrtest.NewIntent("job-b")
	refB, err := e.newDriver().Start(edrtest.Ctx(t), target(1), second)
	require.NoError(t, err)
	require.Equal(t, 2, edrtest.CountExact(e.kit, "POST", startPath))

	// The second task's Find does not take the first's session, and the
	// first's Find does not take the second's.
	found, err := e.newDriver().Find(edrtest.Ctx(t), target(1), second)
	require.NoError(t, err)
	require.Equal(t, "2", view(t, found).Sensors[0].SessionID)
	found, err = e.newDriver().Find(edrtest.Ctx(t), target(1), first)
	require.NoError(t, err)
	require.Equal(t, "1", view(t, found).Sensors[0].SessionID)

	resB, err := edrtest.Drive(edrtest.Ctx(t), e.newDriver(), target(1), refB)
	require.NoError(t, err)
	require.EqualValues(t, 1, resB.Rows)
	require.Equal(t, 1, e.sim.OpenSessions(), "the first task's session is still open")
	require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), refA))
	for _, s := range e.sim.Sessions() {
		require.True(t, s.CloseRequested)
		if s.ID == 2 {
			require.Len(t, s.Commands, 2, "the second task ran its own commands")
		}
	}
}

// With Config.ReuseSessions a sensor's open session is borrowed, as cbapi
// does, used, and left open for whoever opened it.
func TestReuseSessions(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: 100 * time.Millisecond}}, infected(1, "WIN-A"))
	refA, err := e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("job-a"))
	require.NoError(t, err)
	borrower, err := cblr.New(cblr.Config{URL: e.srv.URL, APIToken: testToken, PollInterval: 10 * time.Millisecond,
		Transport: e.srv.Client().Transport, ReuseSessions: true})
	require.NoError(t, err)
	refB, err := borrower.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("job-b"))
	require.NoError(t, err)
	require.Equal(t, 1, edrtest.CountExact(e.kit, "POST", startPath), "the second task borrows the session")

	resB, err := edrtest.Drive(edrtest.Ctx(t), borrower, target(1), refB)
	require.NoError(t, err)
	require.EqualValues(t, 1, resB.Rows)
	require.Len(t, resB.Files, 1)
	require.Contains(t, strings.Join(resB.Notes, "\n"), "Live Response session 1 was already open when the triage took it; it is left open for whoever opened it")
	require.Equal(t, 1, e.sim.OpenSessions(), "the borrower does not close it")

	resA, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), refA)
	require.NoError(t, err)
	require.EqualValues(t, 1, resA.Rows)
	requireAllClosed(t, e.sim)
}

// A command refused with 404 because the session went away (cbapi:
// re-create the session and retry) runs in another session.
func TestCommandRefusedSessionGone(t *testing.T) {
	t.Parallel()
	t.Run("Reopens", func(t *testing.T) {
		t.Parallel()
		var srvURL atomic.Value
		var posts atomic.Int32
		// Someone closes session 1 just before the first command arrives.
		closer := func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method == http.MethodPost && r.URL.Path == "/api/v1/cblr/session/1/command" && posts.Add(1) == 1 {
					req, _ := http.NewRequestWithContext(r.Context(), http.MethodPut, srvURL.Load().(string)+"/api/v1/cblr/session/1", strings.NewReader(`{"status":"close"}`))
					req.Header.Set("X-Auth-Token", testToken)
					resp, err := next.RoundTrip(req)
					require.NoError(t, err)
					resp.Body.Close()
				}
				return next.RoundTrip(r)
			})
		}
		e := setup(t, opts{transport: closer}, infected(1, "WIN-A"))
		srvURL.Store(e.srv.URL)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Rows)
		require.Len(t, res.Files, 1)
		notes := strings.Join(res.Notes, "\n")
		require.Contains(t, notes, `CB EDR refused the "process list" command (HTTP 404: Session 1 is not active (status close))`)
		require.Contains(t, notes, "acquired another session")
		require.Len(t, e.sim.Sessions(), 2)
		require.Empty(t, e.sim.Sessions()[0].Commands)
		requireAllClosed(t, e.sim)
	})
	t.Run("Bounded", func(t *testing.T) {
		t.Parallel()
		// A server that answers every command POST "Session … not found"
		// while listing the session as active: five more sessions, then
		// the sensor fails.
		refuse := answering(func(r *http.Request) bool {
			return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/command")
		}, http.StatusNotFound, "text/plain", "Session not found")
		e := setup(t, opts{transport: refuse}, infected(1, "WIN-A"))
		_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		edrtest.RequirePermanent(t, err, `CB EDR refused the "process list" command (HTTP 404: Session not found) (gave up after 6 sessions)`)
		require.Len(t, e.sim.Sessions(), 6)
		requireAllClosed(t, e.sim)
	})
}

func TestFind(t *testing.T) {
	t.Parallel()
	t.Run("SensorWithoutSessionGetsOne", func(t *testing.T) {
		t.Parallel()
		// Start opened sensor 1's session and died before sensor 3's.
		e := setup(t, opts{}, infected(1, "WIN-A"), clean(3, "WIN-C"))
		in := edrtest.NewIntent("t")
		_, err := e.drv.Start(edrtest.Ctx(t), target(1), in)
		require.NoError(t, err)
		ref, err := e.newDriver().Find(edrtest.Ctx(t), target(1, 3), in)
		require.NoError(t, err)
		v := view(t, ref)
		require.Equal(t, "wait", v.Sensors[0].Step)
		require.Equal(t, "open", v.Sensors[1].Step)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.newDriver(), target(1, 3), ref)
		require.NoError(t, err)
		require.Equal(t, []string{"WIN-A"}, res.Hosts)
		require.Equal(t, 2, edrtest.CountExact(e.kit, "POST", startPath), "one session per sensor")
		requireAllClosed(t, e.sim)
	})
	t.Run("EndedSessionIsNotResumed", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		in := edrtest.NewIntent("t")
		_, err := e.drv.Start(edrtest.Ctx(t), target(1), in)
		require.NoError(t, err)
		closeSession(t, e, 1)
		_, err = e.drv.Find(edrtest.Ctx(t), target(1), in)
		require.ErrorIs(t, err, edr.ErrNotStarted)
	})
	t.Run("CannotTell", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		e.kit.Add(simhttp.Fault{Name: "refused", Method: "GET", Path: startPath, Status: http.StatusForbidden, Count: 1})
		_, err := e.drv.Find(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		require.Error(t, err)
		require.NotErrorIs(t, err, edr.ErrNotStarted)
		require.False(t, edr.IsRetryable(err))
		e.kit.Add(simhttp.Fault{Name: "down", Method: "GET", Path: startPath, Status: http.StatusBadGateway, Count: 1})
		_, err = e.drv.Find(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		require.True(t, edr.IsRetryable(err), "%v", err)
	})
	t.Run("BadInputNeverSent", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		_, err := e.drv.Find(edrtest.Ctx(t), target(), edrtest.NewIntent("t"))
		require.ErrorContains(t, err, "no sensors named")
		require.Zero(t, e.kit.Count("", "/"))
	})
}

// The submission's path reaches "get file" only when it is an absolute
// local path of sane length and characters; anything else skips "get file"
// with a note saying why, and the process list still runs.
func TestHostilePathNeverSent(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ platform, path, why string }{
		"UNC":          {"win", `\\attacker\share\payload.exe`, "a UNC or device-namespace path"},
		"device":       {"win", `\\.\PhysicalDrive0`, "a UNC or device-namespace path"},
		"long UNC":     {"win", `\\?\UNC\attacker\share\x.exe`, "a UNC or device-namespace path"},
		"relative":     {"win", `..\..\Windows\System32\config\SAM`, "neither a drive-letter path"},
		"climbing":     {"win", `C:\Users\..\Windows\System32\config\SAM`, `a ".." segment`},
		"control":      {"win", "C:\\Temp\\a\x07b.exe", "control or format character U+0007"},
		"bidi":         {"win", "C:\\Temp\\invoice\u202Eexe.pdf", "control or format character U+202E"},
		"huge":         {"win", `C:\` + strings.Repeat("a", 64<<10), "longer than 1024 bytes"},
		"DOS device":   {"win", `C:\Temp\CON.txt`, `the DOS device name "CON.txt"`},
		"stream":       {"win", `C:\Temp\a.exe:hidden`, `reserved character ':'`},
		"POSIX on win": {"win", `/tmp/dropper`, "a POSIX path for a win target"},
		"dev":          {"linux", `/dev/sda`, "a device or kernel file system (/dev)"},
		"win on linux": {"linux", `C:\Temp\x.exe`, "a Windows path for a linux target"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, opts{}, infected(1, "WIN-A"))
			tg := target(1)
			tg.Platform, tg.Path = c.platform, c.path
			res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
			require.NoError(t, err)
			require.EqualValues(t, 1, res.Rows, "the process list ran (match by file name)")
			require.Empty(t, res.Files)
			notes := strings.Join(res.Notes, "\n")
			require.Contains(t, notes, "get file skipped: the submitted path ")
			require.Contains(t, notes, c.why)
			require.Contains(t, notes, "only the process list ran")
			require.Less(t, len(notes), 2000, "the path is clipped in the note")
			cmds := e.sim.Sessions()[0].Commands
			require.Len(t, cmds, 1)
			require.Equal(t, "process list", cmds[0].Name, "get file is never sent")
			requireAllClosed(t, e.sim)
		})
	}
	t.Run("POSIX", func(t *testing.T) {
		t.Parallel()
		const p = "/home/bob/.cache/dropper"
		host := clean(2, "lin-01")
		host.Files = map[string][]byte{p: sample}
		e := setup(t, opts{}, host)
		tg := target(2)
		tg.Platform, tg.Path = "linux", p
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
		require.NoError(t, err)
		require.Equal(t, []edr.File{{Host: "lin-01", Path: p, Size: int64(len(sample)), SHA256: sampleSHA, Matches: true}}, res.Files)
	})
}

// A process list holding a value over MaxToken fails the sensor, clearly,
// before it is decoded.
func TestProcessListTokenCap(t *testing.T) {
	t.Parallel()
	host := infected(1, "WIN-A")
	host.Processes = append(host.Processes, simcblr.Process{PID: 666, Path: `C:\` + strings.Repeat("x", cblrMaxToken+1)})
	e, _, err := driveHost(t, host)
	edrtest.RequirePermanent(t, err, "sensor 1 (WIN-A)")
	require.Contains(t, err.Error(), fmt.Sprintf("the answer holds a JSON value of %d bytes, over the limit of %d bytes", cblrMaxToken+5, cblrMaxToken))
	requireAllClosed(t, e.sim)

	// The cap is configurable.
	e = setup(t, opts{maxToken: 4 << 20}, host)
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
}

const cblrMaxToken = 256 << 10

// A session opened under an intent asks for a check-in timeout carrying
// the intent's tag, which the session reports back: Find tells intents
// decided at the same instant apart by it.
func TestSessionTag(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{}, infected(1, "WIN-A"))
	in := edr.Intent{Key: "job-x/cblr.triage/7.1", At: time.Now().UnixMilli()}
	_, err := e.drv.Start(edrtest.Ctx(t), target(1), in)
	require.NoError(t, err)
	got := getJSON(t, e, "/api/v1/cblr/session/1")
	tag := got["check_in_timeout"].(float64)
	require.Less(t, tag, 1200.0, "the document's default less the tag")
	require.Greater(t, tag, 600.0)

	_, err = e.drv.Find(edrtest.Ctx(t), target(1), edr.Intent{Key: "job-y/cblr.triage/7.1", At: in.At})
	require.ErrorIs(t, err, edr.ErrNotStarted, "same instant, another intent")
	_, err = e.drv.Find(edrtest.Ctx(t), target(1), in)
	require.NoError(t, err)

	t.Run("Untagged", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		d, err := cblr.New(cblr.Config{URL: e.srv.URL, APIToken: testToken, Transport: e.srv.Client().Transport, UntaggedSessions: true})
		require.NoError(t, err)
		in := edrtest.NewIntent("t")
		_, err = d.Start(edrtest.Ctx(t), target(1), in)
		require.NoError(t, err)
		require.EqualValues(t, 1200, getJSON(t, e, "/api/v1/cblr/session/1")["check_in_timeout"], "nothing asked: the server's default")
		_, err = d.Find(edrtest.Ctx(t), target(1), in)
		require.ErrorIs(t, err, edr.ErrFindUnsupported)
	})
}

func getJSON(t *testing.T, e *env, path string) map[string]any {
	t.Helper()
	req, err := http.NewRequestWithContext(edrtest.Ctx(t), http.MethodGet, e.srv.URL+path, nil)
	require.NoError(t, err)
	req.Header.Set("X-Auth-Token", testToken)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	return m
}
