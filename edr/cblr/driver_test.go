package cblr_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	simcblr "github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

const (
	testToken  = "d91b00774b2b903b49d8d9caa57ce9fcde16973a"
	samplePath = `C:\Users\Bob\AppData\Local\Temp\dropper.exe`
	startPath  = "/api/v1/cblr/session"
	pollPath   = "/api/v1/cblr/session/"
)

var (
	sample    = []byte("MZ\x90\x00 the sample the tests hunt for")
	sampleSHA = sha(sample)
	otherSHA  = sha([]byte("found nowhere"))
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// infected is a Windows host running the sample from samplePath.
func infected(id int64, host string) simcblr.Sensor {
	return simcblr.Sensor{
		ID: id, Hostname: host, OS: "Windows 10 Enterprise",
		Processes: []simcblr.Process{
			{PID: 4, Username: `NT AUTHORITY\SYSTEM`},
			{PID: 276, Path: `c:\windows\system32\smss.exe`, CommandLine: `\systemroot\system32\smss.exe`},
			{PID: 4242, Path: strings.ToLower(samplePath), CommandLine: `"` + samplePath + `" -q`},
		},
		Files: map[string][]byte{samplePath: sample},
	}
}

// clean is a Windows host without the sample.
// driveHost drives the triage of host, the simulator's only sensor, to its
// end.
func driveHost(t *testing.T, host simcblr.Sensor) (*env, edr.Result, error) {
	t.Helper()
	e := setup(t, opts{}, host)
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(host.ID), nil)
	return e, res, err
}

func clean(id int64, host string) simcblr.Sensor {
	return simcblr.Sensor{
		ID: id, Hostname: host, OS: "Windows 10 Enterprise",
		Processes: []simcblr.Process{
			{PID: 4, Username: `NT AUTHORITY\SYSTEM`},
			{PID: 276, Path: `c:\windows\system32\smss.exe`},
		},
		Files: map[string][]byte{`C:\Windows\notepad.exe`: []byte("MZ notepad")},
	}
}

func target(sensors ...int64) edr.Target {
	return edr.Target{JobID: "job-1", SHA256: sampleSHA, Platform: "win", FileName: "dropper.exe", Sensors: sensors, Path: samplePath}
}

type opts struct {
	sim       simcblr.Config
	timeout   time.Duration
	maxFile   int64
	token     string
	transport func(http.RoundTripper) http.RoundTripper
	logger    *zap.Logger
	now       func() time.Time
	fileMeta  bool
	maxToken  int
}

type env struct {
	srv       *httptest.Server
	sim       *simcblr.Server
	kit       *simhttp.Kit
	drv       *cblr.Driver
	newDriver func() *cblr.Driver
}

func setup(t *testing.T, o opts, sensors ...simcblr.Sensor) *env {
	t.Helper()
	cfg := o.sim
	cfg.APIToken = testToken
	cfg.CheckInAfter = cmp.Or(cfg.CheckInAfter, 20*time.Millisecond)
	cfg.CommandTime = cmp.Or(cfg.CommandTime, 20*time.Millisecond)
	sim := simcblr.New(cfg)
	for _, s := range sensors {
		sim.AddSensor(s)
	}
	srv := simtest.Serve(t, sim)
	newDriver := func() *cblr.Driver {
		tr := srv.Client().Transport
		if o.transport != nil {
			tr = o.transport(tr)
		}
		d, err := cblr.New(cblr.Config{
			URL: srv.URL, APIToken: cmp.Or(o.token, testToken), UserAgent: "analysisfleet/test (w1)",
			Timeout: cmp.Or(o.timeout, 5*time.Second), MaxFile: o.maxFile,
			PollInterval: 10 * time.Millisecond, Transport: tr, Logger: o.logger, Now: o.now,
			FileMetadata: o.fileMeta, MaxToken: o.maxToken,
		})
		require.NoError(t, err)
		return d
	}
	return &env{srv: srv, sim: sim, kit: sim.Kit(), drv: newDriver(), newDriver: newDriver}
}

// retry repeats f while it fails with a retryable error, like the runner.
func retry[T any](t *testing.T, f func() (T, error)) (T, error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := f()
		if err == nil || !edr.IsRetryable(err) || time.Now().After(deadline) {
			return v, err
		}
		time.Sleep(max(edr.RetryAfter(err), 10*time.Millisecond)) // the runner's back-off, not a wait for a condition
	}
}

// pollUntil polls (as the runner does, checkpointing every new Ref) until
// cond holds for the Ref, and returns that Ref.
func pollUntil(t *testing.T, d edr.Driver, ref edr.Ref, cond func(refView) bool) edr.Ref {
	t.Helper()
	ctx := edrtest.Ctx(t)
	var got edr.Ref
	require.Eventually(t, func() bool {
		st, err := retry(t, func() (edr.Status, error) { return d.Poll(ctx, ref) })
		require.NoError(t, err)
		if st.Ref != nil {
			ref = st.Ref
		}
		if cond(view(t, ref)) {
			got = ref
			return true
		}
		return false
	}, 10*time.Second, 5*time.Millisecond)
	return got
}

// requireListThenGet checks that the first session ran two commands,
// "process list" then "get file"; msgAndArgs explain a wrong count.
func requireListThenGet(t *testing.T, e *env, msgAndArgs ...any) {
	t.Helper()
	cmds := e.sim.Sessions()[0].Commands
	require.Len(t, cmds, 2, msgAndArgs...)
	require.Equal(t, "process list", cmds[0].Name)
	require.Equal(t, "get file", cmds[1].Name)
}

// startUntilStep starts the task on sensor 1 with e's driver and polls
// until the sensor's step is step. It returns the Ref Start returned and
// the Ref at that step.
func startUntilStep(t *testing.T, e *env, step string) (started, at edr.Ref) {
	t.Helper()
	started, err := e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
	require.NoError(t, err)
	return started, pollUntil(t, e.drv, started, func(v refView) bool { return v.Sensors[0].Step == step })
}

// refView is the part of the Ref the tests look at. The Ref is opaque to
// the runner; tests peek to find the checkpoint they need.
type refView struct {
	Sensors []struct {
		SensorID  int64  `json:"sensorId"`
		SessionID string `json:"sessionId"`
		Step      string `json:"step"`
		CommandID any    `json:"commandId"`
	} `json:"sensors"`
}

func view(t *testing.T, ref edr.Ref) refView {
	t.Helper()
	var v refView
	require.NoError(t, json.Unmarshal(ref, &v))
	return v
}

func requireAllClosed(t *testing.T, sim *simcblr.Server) {
	t.Helper()
	require.Zero(t, sim.OpenSessions(), "no session may stay open")
	for _, s := range sim.Sessions() {
		require.True(t, s.CloseRequested, "session %d (sensor %d, %s) was not closed by the driver", s.ID, s.SensorID, s.Status)
	}
}

func TestContract(t *testing.T) {
	t.Parallel()
	edrtest.Run(t, edrtest.Harness{
		New: func(t *testing.T, o edrtest.Options) edrtest.Env {
			e := setup(t, opts{timeout: o.Timeout}, infected(1, "WIN-INFECTED"), clean(3, "WIN-CLEAN"))
			return edrtest.Env{Driver: e.drv, Kit: e.kit, NewDriver: func() edr.Driver { return e.newDriver() }}
		},
		Target:      target(1),
		EmptyTarget: edr.Target{SHA256: otherSHA, FileName: "nothing.exe", Sensors: []int64{3}},
		StartPath:   startPath,
		PollPath:    pollPath,
		Secrets:     []string{testToken},
		Findable:    true,
	})
}

func TestProcessListMatch(t *testing.T) {
	t.Parallel()
	host := clean(7, "WIN-MATCH")
	host.Processes = append(host.Processes,
		simcblr.Process{PID: 100, Path: `C:/USERS/BOB/APPDATA/LOCAL/TEMP/DROPPER.EXE`},    // same path, other case and slashes
		simcblr.Process{PID: 101, Path: `d:\share\copies\Dropper.exe`},                    // same file name elsewhere
		simcblr.Process{PID: 102, Path: `c:\windows\temp\renamed.bin`, SHA256: sampleSHA}, // same hash
		simcblr.Process{PID: 103, Path: `c:\windows\temp\dropper.exe.bak`},                // no match
	)
	e := setup(t, opts{}, host)
	tg := target(7)
	tg.Path = "" // no path: process list only
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
	require.NoError(t, err)
	require.EqualValues(t, 3, res.Rows)
	require.Equal(t, []string{"WIN-MATCH"}, res.Hosts)
	require.Equal(t, 1, res.HostsTotal)
	require.Empty(t, res.Files)
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "pid 100")
	require.Contains(t, res.Notes[0], "pid 101")
	require.Contains(t, res.Notes[0], "pid 102")
	require.NotContains(t, res.Notes[0], "pid 103")

	sessions := e.sim.Sessions()
	require.Len(t, sessions, 1)
	require.Len(t, sessions[0].Commands, 1, "without a path only process list runs")
	require.Equal(t, "process list", sessions[0].Commands[0].Name)
	requireAllClosed(t, e.sim)
}

func TestGetFile(t *testing.T) {
	t.Parallel()
	t.Run("Matches", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.Equal(t, []edr.File{{Host: "WIN-A", Path: samplePath, Size: int64(len(sample)), SHA256: sampleSHA, Matches: true}}, res.Files)
		require.Equal(t, []string{"WIN-A"}, res.Hosts)
		require.Equal(t, 1, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1/content"), "bytes come from the content route")
		require.Zero(t, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1"), "no metadata, as cbapi")
		cmds := e.sim.Sessions()[0].Commands
		require.Len(t, cmds, 2)
		require.Equal(t, "get file", cmds[1].Name)
		require.Equal(t, samplePath, cmds[1].Object)
		requireAllClosed(t, e.sim)
	})
	t.Run("DifferentContent", func(t *testing.T) {
		t.Parallel()
		host := clean(2, "WIN-B")
		host.Files[samplePath] = []byte("a different file at the same path")
		e := setup(t, opts{}, host)
		tg := target(2)
		tg.FileName = "other-name.exe"
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
		require.NoError(t, err)
		require.Zero(t, res.Rows)
		require.Empty(t, res.Hosts, "a file whose hash differs is not a sighting")
		require.Len(t, res.Files, 1)
		require.False(t, res.Files[0].Matches)
		require.Equal(t, sha(host.Files[samplePath]), res.Files[0].SHA256)
		require.EqualValues(t, len(host.Files[samplePath]), res.Files[0].Size)
	})
	t.Run("OverMaxFile", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{maxFile: 8}, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.Empty(t, res.Files)
		require.EqualValues(t, 1, res.Rows, "the process match still counts")
		require.Contains(t, strings.Join(res.Notes, "\n"), "sensor 1 (WIN-A): "+samplePath+" is over the size limit of 8 bytes; it was not retrieved or hashed")
		require.Equal(t, 1, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1/content"), "the download stops at the limit")
		requireAllClosed(t, e.sim)
	})
	t.Run("OverMaxFileFromMetadata", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{maxFile: 8, fileMeta: true}, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.Empty(t, res.Files)
		require.EqualValues(t, 1, res.Rows, "the process match still counts")
		require.Contains(t, strings.Join(res.Notes, "\n"), fmt.Sprintf("%s is over the size limit (%d bytes, limit 8)", samplePath, len(sample)))
		require.Equal(t, 1, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1"), "metadata from the file route")
		require.Zero(t, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1/content"), "the size is known from the metadata: no download")
		requireAllClosed(t, e.sim)
	})
	t.Run("MissingOnHost", func(t *testing.T) {
		t.Parallel()
		e := setup(t, opts{}, clean(3, "WIN-C"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(3), nil)
		require.NoError(t, err, "a path that is not on the host is an answer, not a failure")
		require.Zero(t, res.Rows)
		require.Empty(t, res.Files)
		require.Empty(t, res.Hosts)
		notes := strings.Join(res.Notes, "\n")
		require.Contains(t, notes, "sensor 3 (WIN-C): "+samplePath+" is not on the host")
		require.Contains(t, notes, "0x80070002")
		require.Equal(t, "error", e.sim.Sessions()[0].Commands[1].Status)
		requireAllClosed(t, e.sim)
	})
	t.Run("OtherErrorIsANote", func(t *testing.T) {
		t.Parallel()
		// Any error of "get file" on the sensor: the process list has
		// answered, so the sensor did not fail; the note says why there is
		// no file.
		for _, fail := range []simcblr.ErrorInfo{
			{Code: -2147024864, Type: "WinHresult", Desc: "The process cannot access the file because it is being used by another process."},
			{Code: 5, Type: "CbError", Desc: "upload failed"},
			{Code: 0x80070005, Type: "WinHresult"},
		} {
			host := infected(3, "WIN-C")
			host.CommandErrors = map[string]simcblr.ErrorInfo{"get file": fail}
			e, res, err := driveHost(t, host)
			require.NoError(t, err, "%+v", fail)
			require.EqualValues(t, 1, res.Rows, "the process list's match stands")
			require.Equal(t, []string{"WIN-C"}, res.Hosts)
			require.Empty(t, res.Files)
			notes := strings.Join(res.Notes, "\n")
			require.Contains(t, notes, "sensor 3 (WIN-C): could not retrieve "+samplePath+`: the "get file" command failed on the sensor: result_code `)
			require.Contains(t, notes, "result_type "+fail.Type)
			require.NotContains(t, notes, "failed:")
			requireAllClosed(t, e.sim)
		}
		host := infected(3, "WIN-C")
		host.CommandErrors = map[string]simcblr.ErrorInfo{"get file": {Code: -2147024864, Type: "WinHresult", Desc: "in use"}}
		_, res, err := driveHost(t, host)
		require.NoError(t, err)
		require.Contains(t, strings.Join(res.Notes, "\n"), `result_code -2147024864 (0x80070020), result_type WinHresult, result_desc "in use"`)
	})
	t.Run("FileStatusIsANote", func(t *testing.T) {
		t.Parallel()
		// The file object reports the request failed (status non-zero).
		failed := answering(func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/file/1")
		}, http.StatusOK, "application/json", `{"id":1,"file_name":"x","size":0,"size_uploaded":0,"status":5}`)
		e := setup(t, opts{transport: failed, fileMeta: true}, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Rows)
		require.Empty(t, res.Files)
		require.Contains(t, strings.Join(res.Notes, "\n"), "sensor 1 (WIN-A): could not retrieve "+samplePath+": the sensor could not upload it (file status 5)")
		require.Zero(t, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1/content"))
		requireAllClosed(t, e.sim)
	})
	t.Run("SessionClosedUnderIt", func(t *testing.T) {
		t.Parallel()
		// Someone closes the session while "get file" runs: the command is
		// cut short, and, as cbapi does for a session that went away, the
		// driver acquires another session and asks again. The process
		// list, done already, does not run again.
		e := setup(t, opts{sim: simcblr.Config{CommandTime: time.Second}}, infected(1, "WIN-A"))
		_, ref := startUntilStep(t, e, "get_file")
		closeSession(t, e, 1)

		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), ref)
		require.NoError(t, err)
		require.Equal(t, []edr.File{{Host: "WIN-A", Path: samplePath, Size: int64(len(sample)), SHA256: sampleSHA, Matches: true}}, res.Files)
		require.Contains(t, strings.Join(res.Notes, "\n"), `sensor 1 (WIN-A): the "get file" command failed on the sensor`)
		require.Contains(t, strings.Join(res.Notes, "\n"), "the Live Response session was closed; acquired another session")
		sessions := e.sim.Sessions()
		require.Len(t, sessions, 2)
		require.Equal(t, "error", sessions[0].Commands[1].Status)
		require.Len(t, sessions[1].Commands, 1, "only get file runs again")
		require.Equal(t, "get file", sessions[1].Commands[0].Name)
		requireAllClosed(t, e.sim)
	})
	t.Run("SessionTimedOutUnderIt", func(t *testing.T) {
		t.Parallel()
		// A session that times out under the command (keepalives lost)
		// fails the sensor: the host went away.
		o := opts{sim: simcblr.Config{SensorWaitTimeout: time.Second, CommandTime: 1500 * time.Millisecond}}
		e := setup(t, o, infected(1, "WIN-A"))
		_, ref := startUntilStep(t, e, "get_file")
		e.kit.Add(simhttp.Fault{Name: "swallow", Path: "/api/v1/cblr/session/1/keepalive", Status: http.StatusOK})
		_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), ref)
		edrtest.RequirePermanent(t, err, `sensor 1 (WIN-A): the "get file" command failed on the sensor`, "the Live Response session timed out")
		require.Len(t, e.sim.Sessions(), 1, "no other session")
	})
	t.Run("StalledUpload", func(t *testing.T) {
		t.Parallel()
		// size_uploaded never reaches size: after ten polls without
		// progress the content is read anyway, and hashed as ever.
		host := infected(1, "WIN-A")
		host.StalledUpload = true
		e := setup(t, opts{fileMeta: true}, host)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.Equal(t, []edr.File{{Host: "WIN-A", Path: samplePath, Size: int64(len(sample)), SHA256: sampleSHA, Matches: true}}, res.Files)
		require.Contains(t, strings.Join(res.Notes, "\n"),
			fmt.Sprintf("sensor 1 (WIN-A): the upload of %s stayed at %d of %d bytes (10 polls,", samplePath, len(sample)/2, len(sample)))
		require.Equal(t, 11, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1"), "one look, then ten without progress")
		require.Equal(t, 1, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1/content"))
		requireAllClosed(t, e.sim)
	})
	t.Run("StalledUploadByTime", func(t *testing.T) {
		t.Parallel()
		// The same bound in time: on a clock that runs a minute per
		// reading, the content is read after two minutes without progress,
		// well before ten polls.
		var ticks atomic.Int64
		clk := func() time.Time { return time.Unix(1_800_000_000, 0).Add(time.Duration(ticks.Add(1)) * time.Minute) }
		host := infected(1, "WIN-A")
		host.StalledUpload = true
		e := setup(t, opts{now: clk, fileMeta: true}, host)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
		require.NoError(t, err)
		require.Len(t, res.Files, 1)
		require.True(t, res.Files[0].Matches)
		require.Contains(t, strings.Join(res.Notes, "\n"), "stayed at")
		require.Less(t, edrtest.CountExact(e.kit, "GET", "/api/v1/cblr/session/1/file/1"), 11)
	})
}

func TestSessionClosedOnSuccess(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{}, infected(1, "WIN-A"), clean(2, "WIN-B"))
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1, 2), nil)
	require.NoError(t, err)
	require.Equal(t, []string{"WIN-A"}, res.Hosts)
	require.Len(t, e.sim.Sessions(), 2)
	requireAllClosed(t, e.sim)
}

func TestCommandErrorCarriesResult(t *testing.T) {
	t.Parallel()
	host := infected(1, "WIN-A")
	host.CommandErrors = map[string]simcblr.ErrorInfo{
		"process list": {Code: 2147942405, Type: "WinHresult", Desc: "Access is denied."},
	}
	e, _, err := driveHost(t, host)
	edrtest.RequirePermanent(t, err)
	for _, want := range []string{"sensor 1 (WIN-A)", `"process list"`, "result_code 2147942405 (0x80070005)", "result_type WinHresult", `result_desc "Access is denied."`} {
		require.Contains(t, err.Error(), want)
	}
	requireAllClosed(t, e.sim)
}

func TestKeepalive(t *testing.T) {
	t.Parallel()
	// The command runs three times longer than the session may stay idle:
	// without keepalives the sensor gives up on the session.
	slow := opts{sim: simcblr.Config{SensorWaitTimeout: 600 * time.Millisecond, CommandTime: 1800 * time.Millisecond}}
	tg := target(1)
	tg.Path = ""
	// keptAlive runs the task under o and checks the driver's keepalives,
	// every half of the timeout named by every, kept the session open
	// until the driver closed it.
	keptAlive := func(t *testing.T, o opts, every string) {
		t.Helper()
		e := setup(t, o, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Rows)
		s := e.sim.Sessions()[0]
		require.GreaterOrEqual(t, s.Keepalives, 2, "keepalives every half "+every)
		require.Equal(t, "close", s.Status, "closed by the driver, not timed out")
	}

	t.Run("KeepsSessionAlive", func(t *testing.T) {
		t.Parallel()
		keptAlive(t, slow, "sensor_wait_timeout")
	})
	t.Run("SessionTimeoutShorter", func(t *testing.T) {
		t.Parallel()
		// sensor_wait_timeout is long, but the sensor quits after
		// session_timeout: keepalives follow the shorter of the two.
		keptAlive(t, opts{sim: simcblr.Config{SensorWaitTimeout: time.Hour, SessionTimeout: 600 * time.Millisecond,
			EnforceSessionTimeout: true, CommandTime: 1800 * time.Millisecond}}, "session_timeout")
	})
	t.Run("WithoutKeepalivesTheSessionTimesOut", func(t *testing.T) {
		t.Parallel()
		e := setup(t, slow, infected(1, "WIN-A"))
		// Keepalives are answered 200 but never reach the simulator.
		e.kit.Add(simhttp.Fault{Name: "swallow", Path: "/api/v1/cblr/session/1/keepalive", Status: http.StatusOK})
		_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
		require.Error(t, err)
		require.Contains(t, err.Error(), "timed out")
		require.Equal(t, "timeout", e.sim.Sessions()[0].Status)
	})
}

// Before the sensor checks in no keepalive is sent: a keepalive closes a
// session that is not active yet.
func TestNoKeepaliveWhilePending(t *testing.T) {
	t.Parallel()
	// Keepalives would be due every 150 ms; the sensor checks in after
	// 600 ms.
	e := setup(t, opts{sim: simcblr.Config{SensorWaitTimeout: 300 * time.Millisecond, CheckInAfter: 600 * time.Millisecond}}, infected(1, "WIN-A"))
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
	require.Len(t, res.Files, 1)
	s := e.sim.Sessions()[0]
	for _, r := range e.kit.Requests() {
		if strings.HasSuffix(r.Path, "/keepalive") {
			require.False(t, r.Time.Before(s.Created.Add(600*time.Millisecond)), "keepalive at +%s, before check-in", r.Time.Sub(s.Created))
		}
	}
	requireAllClosed(t, e.sim)
}

func TestNeverCheckIn(t *testing.T) {
	t.Parallel()
	host := infected(1, "WIN-OFFLINE")
	host.NeverCheckIn = true
	e := setup(t, opts{sim: simcblr.Config{CheckInTimeout: 200 * time.Millisecond, MaxCheckInTimeout: 200 * time.Millisecond}}, host)
	_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
	edrtest.RequirePermanent(t, err, "sensor 1 (WIN-OFFLINE)")
	// The server forgets a session that timed out before check-in (404).
	require.Contains(t, err.Error(), "the Live Response session 1 no longer exists (HTTP 404): it expired or was closed before the sensor checked in")
	require.Zero(t, e.sim.OpenSessions())
	require.Zero(t, e.kit.Count("POST", "/api/v1/cblr/session/1/command"))
}

func TestUnsupportedCommand(t *testing.T) {
	t.Parallel()
	host := infected(1, "WIN-A")
	host.Unsupported = []string{"get file"}
	e, _, err := driveHost(t, host)
	edrtest.RequirePermanent(t, err, `does not support the Live Response command(s) "get file"`)
	require.Zero(t, e.kit.Count("POST", "/api/v1/cblr/session/1/command"), "checked before any command runs")
	requireAllClosed(t, e.sim)
}

// An active session whose supported_commands is empty says nothing about
// the sensor: the commands are tried, and a refusal is reported as such.
func TestEmptySupportedCommands(t *testing.T) {
	t.Parallel()
	t.Run("CommandsRun", func(t *testing.T) {
		t.Parallel()
		host := infected(1, "WIN-A")
		host.ListsNoCommands = true
		e, res, err := driveHost(t, host)
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Rows)
		require.Len(t, res.Files, 1)
		require.True(t, res.Files[0].Matches)
		requireAllClosed(t, e.sim)
	})
	t.Run("GetFileRefused", func(t *testing.T) {
		t.Parallel()
		host := infected(1, "WIN-A")
		host.ListsNoCommands = true
		host.Unsupported = []string{"get file"}
		e, res, err := driveHost(t, host)
		require.NoError(t, err, "the process list answered")
		require.EqualValues(t, 1, res.Rows)
		require.Empty(t, res.Files)
		require.Contains(t, strings.Join(res.Notes, "\n"),
			`sensor 1 (WIN-A): could not retrieve `+samplePath+`: POST command "get file" in session 1: command "get file" is not supported by sensor 1`)
		requireAllClosed(t, e.sim)
	})
	t.Run("ProcessListRefused", func(t *testing.T) {
		t.Parallel()
		host := infected(1, "WIN-A")
		host.ListsNoCommands = true
		host.Unsupported = []string{"process list"}
		e, _, err := driveHost(t, host)
		edrtest.RequirePermanent(t, err, `command "process list" is not supported by sensor 1`)
		requireAllClosed(t, e.sim)
	})
}

// A command list the driver cannot read only means it cannot look for a
// command an earlier attempt created: the command is created, and the
// oddity logged.
func TestUnreadableCommandList(t *testing.T) {
	t.Parallel()
	odd := answering(func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/command")
	}, http.StatusOK, "application/json", `{"commands":"not a list"}`)
	core, logs := observer.New(zap.DebugLevel)
	e := setup(t, opts{transport: odd, logger: zap.New(core)}, infected(1, "WIN-A"))
	res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1), nil)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
	require.Len(t, res.Files, 1)
	requireListThenGet(t, e)
	entries := logs.FilterMessageSnippet("unreadable command list").AllUntimed()
	require.Len(t, entries, 2, "once per command")
	require.Equal(t, zap.WarnLevel, entries[0].Level)
	require.Equal(t, "process list", entries[0].ContextMap()["command"])
	requireAllClosed(t, e.sim)
}

func TestSessionRefused(t *testing.T) {
	t.Parallel()
	t.Run("LiveResponseDisabled", func(t *testing.T) {
		t.Parallel()
		host := infected(1, "WIN-A")
		host.LiveResponseDisabled = true
		e, _, err := driveHost(t, host)
		edrtest.RequirePermanent(t, err, "sensor 1", "Live Response is disabled")
		var ee *edr.Error
		require.ErrorAs(t, err, &ee)
		require.Equal(t, http.StatusForbidden, ee.Status)
		require.Equal(t, 1, edrtest.CountExact(e.kit, "POST", startPath), "not retried")
	})
	t.Run("SessionLimit", func(t *testing.T) {
		t.Parallel()
		// The server refuses the sensor a second session: the second task
		// borrows the one it has (as cbapi would have done from the
		// start), and leaves it open.
		host := infected(1, "WIN-A")
		host.SessionLimit = 1
		e := setup(t, opts{sim: simcblr.Config{CheckInAfter: time.Hour}}, host)
		first, err := e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		require.NoError(t, err)
		second, err := e.newDriver().Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		require.NoError(t, err)
		require.Equal(t, 2, edrtest.CountExact(e.kit, "POST", startPath))
		require.Len(t, e.sim.Sessions(), 1)
		require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), second))
		require.Equal(t, 1, e.sim.OpenSessions(), "a borrowed session is not closed")
		require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), first))
		requireAllClosed(t, e.sim)

		// Nothing to borrow (the server will not list its sessions): the
		// refusal fails the sensor, with the vendor's words.
		e = setup(t, opts{sim: simcblr.Config{CheckInAfter: time.Hour}}, host)
		first, err = e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		require.NoError(t, err)
		e.kit.Add(simhttp.Fault{Name: "no list", Method: "GET", Path: startPath, Status: http.StatusForbidden, Count: 1})
		_, err = e.newDriver().Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
		edrtest.RequirePermanent(t, err, "session limit reached")
		var ee *edr.Error
		require.ErrorAs(t, err, &ee)
		require.Equal(t, http.StatusConflict, ee.Status)
		require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), first))
		requireAllClosed(t, e.sim)
	})
	t.Run("UnknownSensor", func(t *testing.T) {
		// A sensor the customer's server does not know — another
		// customer's, or a typo — is looked up and skipped with a note,
		// never given a session; the sensors that are the customer's run.
		t.Parallel()
		e := setup(t, opts{}, infected(1, "WIN-A"))
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(99, 1), nil)
		require.NoError(t, err)
		require.Equal(t, []string{"WIN-A"}, res.Hosts)
		notes := strings.Join(res.Notes, "\n")
		require.Contains(t, notes, "sensor 99 is not known to the customer's CB EDR server")
		require.NotContains(t, notes, "sensor 99 failed")
		require.Equal(t, 1, edrtest.CountExact(e.kit, "POST", startPath), "a session for sensor 1 only")
		require.Equal(t, 1, edrtest.CountExact(e.kit, "GET", "/api/v1/sensor/99"))

		// Only unknown sensors: nothing runs, nothing fails.
		res, err = edrtest.Drive(edrtest.Ctx(t), e.drv, target(99), nil)
		require.NoError(t, err)
		require.Zero(t, res.Rows)
		require.Equal(t, 1, edrtest.CountExact(e.kit, "POST", startPath))
	})
}

func TestCancel(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: time.Minute}}, infected(1, "WIN-A"))
	_, ref := startUntilStep(t, e, "process_list")

	require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), ref))
	s := e.sim.Sessions()[0]
	require.Len(t, s.Commands, 1)
	require.True(t, s.Commands[0].CancelRequested)
	require.Equal(t, "cancel", s.Commands[0].Status)
	requireAllClosed(t, e.sim)

	// Again, from another worker: everything is gone already.
	require.NoError(t, e.newDriver().Cancel(edrtest.Ctx(t), ref))
}

func TestCancelBeforeCheckIn(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CheckInAfter: time.Hour}}, infected(1, "WIN-A"), infected(2, "WIN-B"))
	ref, err := e.drv.Start(edrtest.Ctx(t), target(1, 2), edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.Equal(t, 2, e.sim.OpenSessions())
	require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), ref))
	requireAllClosed(t, e.sim)
}

func TestResumeMidCommand(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: 200 * time.Millisecond}}, infected(1, "WIN-A"))
	_, ref := startUntilStep(t, e, "process_list")
	require.NotNil(t, view(t, ref).Sensors[0].CommandID, "the checkpoint carries the command id")

	// The first worker dies; the checkpoint goes through the ledger.
	raw, err := json.Marshal(ref)
	require.NoError(t, err)
	res, err := edrtest.Drive(edrtest.Ctx(t), e.newDriver(), target(1), edr.Ref(raw))
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
	require.Len(t, res.Files, 1)
	require.True(t, res.Files[0].Matches)

	require.Equal(t, 1, edrtest.CountExact(e.kit, "POST", startPath), "no second session")
	require.Len(t, e.sim.Sessions(), 1)
	requireListThenGet(t, e, "process list once, get file once")
	requireAllClosed(t, e.sim)
}

func TestResumeAdoptsUncheckpointedCommand(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: 200 * time.Millisecond}}, infected(1, "WIN-A"))
	// The first worker gets process list accepted and dies before the
	// checkpoint: the ledger still holds the Ref from Start.
	ref, _ := startUntilStep(t, e, "process_list")

	res, err := edrtest.Drive(edrtest.Ctx(t), e.newDriver(), target(1), ref)
	require.NoError(t, err)
	require.EqualValues(t, 1, res.Rows)
	requireListThenGet(t, e, "the accepted process list is adopted, not issued again")
	requireAllClosed(t, e.sim)
}

func TestMultipleSensors(t *testing.T) {
	t.Parallel()
	t.Run("OneRefused", func(t *testing.T) {
		t.Parallel()
		disabled := infected(2, "WIN-LOCKED")
		disabled.LiveResponseDisabled = true
		e := setup(t, opts{}, infected(1, "WIN-A"), disabled)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1, 2), nil)
		require.NoError(t, err)
		require.Equal(t, []string{"WIN-A"}, res.Hosts)
		notes := strings.Join(res.Notes, "\n")
		require.Contains(t, notes, "sensor 2 (WIN-LOCKED) failed")
		require.Contains(t, notes, "Live Response is disabled")
		requireAllClosed(t, e.sim)
	})
	t.Run("OneFailsMidway", func(t *testing.T) {
		t.Parallel()
		broken := infected(2, "WIN-BROKEN")
		broken.CommandErrors = map[string]simcblr.ErrorInfo{"process list": {Code: 5, Type: "CbError", Desc: "listing failed"}}
		noFile := infected(4, "WIN-NOFILE")
		noFile.CommandErrors = map[string]simcblr.ErrorInfo{"get file": {Code: 5, Type: "CbError", Desc: "upload failed"}}
		e := setup(t, opts{}, infected(1, "WIN-A"), broken, clean(3, "WIN-C"), noFile)
		tg := target(1, 2, 3, 4)
		tg.FileName = "" // match by path only
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, tg, nil)
		require.NoError(t, err)
		require.EqualValues(t, 2, res.Rows, "the infected hosts whose process list answered ran the sample")
		require.ElementsMatch(t, []string{"WIN-A", "WIN-NOFILE"}, res.Hosts)
		notes := strings.Join(res.Notes, "\n")
		require.Contains(t, notes, "sensor 2 (WIN-BROKEN) failed")
		require.Contains(t, notes, `result_desc "listing failed"`)
		require.Contains(t, notes, "sensor 4 (WIN-NOFILE): could not retrieve")
		require.Contains(t, notes, `result_desc "upload failed"`)
		require.NotContains(t, notes, "sensor 4 (WIN-NOFILE) failed", "a failed get file is a note")
		require.NotContains(t, notes, "sensor 3 (WIN-C) failed", "the clean host is checked, not failed")
		require.Len(t, res.Files, 1, "WIN-A's file; WIN-C has none at that path")
		requireAllClosed(t, e.sim)
	})
	t.Run("AllFail", func(t *testing.T) {
		t.Parallel()
		a, b := infected(1, "WIN-A"), infected(2, "WIN-B")
		a.LiveResponseDisabled = true
		b.Unsupported = []string{"process list"}
		e := setup(t, opts{}, a, b)
		_, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1, 2), nil)
		edrtest.RequirePermanent(t, err, "failed on every sensor", "sensor 1", "Live Response is disabled", "sensor 2 (WIN-B)", `"process list"`)
		requireAllClosed(t, e.sim)
	})
}

// A Start that fails half way for a reason that may pass leaves the
// sessions it opened: the retry under the same intent takes them up again
// instead of opening more. A permanent failure closes them.
func TestStartFailureHalfWay(t *testing.T) {
	t.Parallel()
	t.Run("RetryReusesSessions", func(t *testing.T) {
		t.Parallel()
		var posts atomic.Int32
		flaky := func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method == http.MethodPost && r.URL.Path == startPath && posts.Add(1) == 2 {
					return nil, errors.New("connection reset by peer")
				}
				return next.RoundTrip(r)
			})
		}
		e := setup(t, opts{transport: flaky}, infected(1, "WIN-A"), infected(2, "WIN-B"))
		in := edrtest.NewIntent("t")
		_, err := e.drv.Start(edrtest.Ctx(t), target(1, 2), in)
		require.Error(t, err)
		require.True(t, edr.IsRetryable(err), "a network error is retryable: %v", err)
		require.Len(t, e.sim.Sessions(), 1)
		require.Equal(t, 1, e.sim.OpenSessions(), "left for the retry")

		ref, err := e.drv.Start(edrtest.Ctx(t), target(1, 2), in)
		require.NoError(t, err)
		res, err := edrtest.Drive(edrtest.Ctx(t), e.drv, target(1, 2), ref)
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"WIN-A", "WIN-B"}, res.Hosts)
		require.Len(t, e.sim.Sessions(), 2, "one session per sensor")
		requireAllClosed(t, e.sim)
	})
	t.Run("PermanentFailureCloses", func(t *testing.T) {
		t.Parallel()
		// The token is revoked between the two session POSTs.
		var posts atomic.Int32
		revoked := answering(func(r *http.Request) bool {
			return r.Method == http.MethodPost && r.URL.Path == startPath && posts.Add(1) == 2
		}, http.StatusUnauthorized, "", "Unauthorized")
		e := setup(t, opts{transport: revoked}, infected(1, "WIN-A"), infected(2, "WIN-B"))
		_, err := e.drv.Start(edrtest.Ctx(t), target(1, 2), edrtest.NewIntent("t"))
		edrtest.RequirePermanent(t, err)
		require.Len(t, e.sim.Sessions(), 1)
		requireAllClosed(t, e.sim)
	})
}

// closeSession closes session id behind the driver's back, as an analyst
// (or the session's owner) would.
func closeSession(t *testing.T, e *env, id int) {
	t.Helper()
	req, err := http.NewRequestWithContext(edrtest.Ctx(t), http.MethodPut, fmt.Sprintf("%s/api/v1/cblr/session/%d", e.srv.URL, id), strings.NewReader(`{"status":"close"}`))
	require.NoError(t, err)
	req.Header.Set("X-Auth-Token", testToken)
	resp, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// answering is an opts.transport: the requests match selects get a canned
// answer (status, a Content-Type of contentType unless it is "", body)
// without reaching the server; the others go on to next.
func answering(match func(*http.Request) bool, status int, contentType, body string) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if !match(r) {
				return next.RoundTrip(r)
			}
			h := http.Header{}
			if contentType != "" {
				h.Set("Content-Type", contentType)
			}
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
		})
	}
}

func TestRejectedToken(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{token: "wrong-token-value"}, infected(1, "WIN-A"))
	_, err := e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
	edrtest.RequirePermanent(t, err, "CB EDR rejected the API token (check CBLR_API_TOKEN)")
	require.NotContains(t, err.Error(), "wrong-token-value")
	require.NotContains(t, err.Error(), testToken)

	// A token rejected mid-way (rotated) fails the task at once too.
	good := setup(t, opts{sim: simcblr.Config{CheckInAfter: time.Hour}}, infected(1, "WIN-A"))
	ref, err := good.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
	require.NoError(t, err)
	good.kit.Add(simhttp.Fault{Path: pollPath, Status: http.StatusUnauthorized, Count: 1})
	_, err = good.drv.Poll(edrtest.Ctx(t), ref)
	edrtest.RequirePermanent(t, err, "check CBLR_API_TOKEN")
}

func TestRateLimitOnStart(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{}, infected(1, "WIN-A"))
	e.kit.Add(simhttp.Fault{Path: startPath, Method: "POST", Status: http.StatusTooManyRequests, RetryAfter: 2 * time.Second, Count: 1})
	_, err := e.drv.Start(edrtest.Ctx(t), target(1), edrtest.NewIntent("t"))
	require.Error(t, err)
	require.True(t, edr.IsRetryable(err))
	require.Equal(t, 2*time.Second, edr.RetryAfter(err))
	require.Empty(t, e.sim.Sessions())
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{}, infected(1, "WIN-A"))
	tg := target()
	_, err := e.drv.Start(edrtest.Ctx(t), tg, edrtest.NewIntent("t"))
	edrtest.RequirePermanent(t, err, "no sensors named in the submission (metaData sensorId/sensorIds)")

	tg = target(-4)
	_, err = e.drv.Start(edrtest.Ctx(t), tg, edrtest.NewIntent("t"))
	require.ErrorContains(t, err, "invalid sensor id")

	for _, ref := range []string{`{`, `{"v":1,"sensors":[]}`, `{"v":99,"sensors":[{"sensorId":1,"sessionId":"1","step":"wait"}]}`, `{"v":1,"sensors":[{"sensorId":1,"step":"wait"}]}`} {
		_, err = e.drv.Poll(edrtest.Ctx(t), edr.Ref(ref))
		require.Error(t, err, ref)
		require.False(t, edr.IsRetryable(err), ref)
	}
	require.Zero(t, e.kit.Count("", "/"), "nothing reaches the vendor")
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]cblr.Config{
		"no URL":        {APIToken: "t"},
		"relative URL":  {URL: "cb.example.com", APIToken: "t"},
		"ftp URL":       {URL: "ftp://cb.example.com", APIToken: "t"},
		"URL with user": {URL: "https://u:p@cb.example.com", APIToken: "t"},
		"no token":      {URL: "https://cb.example.com"},
		"bad token":     {URL: "https://cb.example.com", APIToken: "a\nb"},
		"negative":      {URL: "https://cb.example.com", APIToken: "t", MaxFile: -1},
	} {
		_, err := cblr.New(cfg)
		require.Error(t, err, name)
	}
	d, err := cblr.New(cblr.Config{URL: "https://cb.example.com/", APIToken: testToken})
	require.NoError(t, err)
	require.Equal(t, edr.KindCBLRTriage, d.Kind())
}

func TestSecretsNotPrinted(t *testing.T) {
	t.Parallel()
	cfg := cblr.Config{URL: "https://cb.example.com", APIToken: testToken}
	d, err := cblr.New(cfg)
	require.NoError(t, err)
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(d), fmt.Sprintf("%+v", d)} {
		require.NotContains(t, s, testToken)
	}
}

func TestUserAgentAndPacing(t *testing.T) {
	t.Parallel()
	lim := &countingLimiter{}
	e := setup(t, opts{}, infected(1, "WIN-A"))
	d, err := cblr.New(cblr.Config{
		URL: e.srv.URL, APIToken: testToken, UserAgent: "analysisfleet/9 (w7)", Limiter: lim,
		PollInterval: 10 * time.Millisecond, Transport: e.srv.Client().Transport,
	})
	require.NoError(t, err)
	_, err = edrtest.Drive(edrtest.Ctx(t), d, target(1), nil)
	require.NoError(t, err)
	reqs := e.kit.Requests()
	require.NotEmpty(t, reqs)
	for _, r := range reqs {
		require.Equal(t, "analysisfleet/9 (w7)", r.UserAgent)
	}
	require.EqualValues(t, len(reqs), lim.waits.Load(), "every request waits on the fleet limiter")
}

type countingLimiter struct{ waits atomic.Int64 }

func (l *countingLimiter) Wait(context.Context) error               { l.waits.Add(1); return nil }
func (l *countingLimiter) Throttled(context.Context, time.Duration) {}

func TestPollReturnsRightAfterCommandAccepted(t *testing.T) {
	t.Parallel()
	e := setup(t, opts{sim: simcblr.Config{CommandTime: time.Minute}}, infected(1, "WIN-A"), infected(2, "WIN-B"))
	ref, err := e.drv.Start(edrtest.Ctx(t), target(1, 2), edrtest.NewIntent("t"))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s := e.sim.Sessions()
		return s[0].Status == "active" && s[1].Status == "active"
	}, 5*time.Second, time.Millisecond)
	// From now on anything touching sensor 2's session fails: a Poll that
	// went on after sensor 1's command was accepted would lose its id.
	e.kit.Add(simhttp.Fault{Name: "down", Path: "/api/v1/cblr/session/2", Status: http.StatusServiceUnavailable})
	before := len(e.kit.Requests())
	st, err := e.drv.Poll(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.NotNil(t, st.Ref, "the new command must be checkpointed")
	v := view(t, st.Ref)
	require.Equal(t, "process_list", v.Sensors[0].Step)
	require.NotNil(t, v.Sensors[0].CommandID)
	require.Equal(t, "wait", v.Sensors[1].Step)
	for _, r := range e.kit.Requests()[before:] {
		require.NotContains(t, r.Path, "/session/2", "nothing else happens in the Poll that issued a command")
	}
	require.Len(t, e.sim.Sessions()[0].Commands, 1)
	e.kit.Remove("down")
	require.NoError(t, e.drv.Cancel(edrtest.Ctx(t), st.Ref))
	requireAllClosed(t, e.sim)
}
