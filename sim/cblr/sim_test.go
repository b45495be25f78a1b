package cblr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "sim-test-token"

type fixture struct {
	t   *testing.T
	sim *cblr.Server
	srv *httptest.Server
	clk *testutil.Clock
}

func setup(t *testing.T, sensors ...cblr.Sensor) *fixture {
	t.Helper()
	return setupWith(t, nil, sensors...)
}

// setupWith is setup with mod applied to the configuration.
func setupWith(t *testing.T, mod func(*cblr.Config), sensors ...cblr.Sensor) *fixture {
	t.Helper()
	clk := testutil.NewClock(time.Unix(1_700_000_000, 0))
	cfg := cblr.Config{
		APIToken: token, Now: clk.Now,
		CheckInAfter: 10 * time.Second, CommandTime: 4 * time.Second,
		CheckInTimeout: 60 * time.Second, SensorWaitTimeout: 30 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	sim := cblr.New(cfg)
	for _, s := range sensors {
		sim.AddSensor(s)
	}
	srv := simtest.Serve(t, sim)
	return &fixture{t: t, sim: sim, srv: srv, clk: clk}
}

// do sends a request and decodes a JSON answer into a generic map (or
// slice); it returns the status and the decoded body. A 404 is plain text
// (what cbapi reads), returned as a string.
func (f *fixture) do(method, path string, body any) (int, any) {
	f.t.Helper()
	status, raw := f.raw(method, path, body, token)
	if status == http.StatusNotFound {
		return status, string(raw)
	}
	var v any
	if len(raw) > 0 {
		require.NoError(f.t, json.Unmarshal(raw, &v), "%s %s answered %s", method, path, raw)
	}
	return status, v
}

func (f *fixture) raw(method, path string, body any, tok string) (int, []byte) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(f.t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, f.srv.URL+path, rd)
	require.NoError(f.t, err)
	if tok != "" {
		req.Header.Set("X-Auth-Token", tok)
	}
	resp, b := simtest.Do(f.t, f.srv.Client(), req)
	return resp.StatusCode, b
}

func obj(t *testing.T, v any) map[string]any {
	t.Helper()
	m, ok := v.(map[string]any)
	require.True(t, ok, "expected a JSON object, got %#v", v)
	return m
}

func host(id int64) cblr.Sensor {
	return cblr.Sensor{
		ID: id, Hostname: fmt.Sprintf("WIN-%d", id), OS: "Windows 10",
		Processes: []cblr.Process{{PID: 4}, {PID: 4242, Path: `c:\temp\evil.exe`, SHA256: "ab"}},
		Files:     map[string][]byte{`C:\Temp\evil.exe`: []byte("MZ evil")},
	}
}

func (f *fixture) openSession(sensor int64) string {
	f.t.Helper()
	st, v := f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": sensor})
	require.Equal(f.t, http.StatusOK, st, "%v", v)
	return fmt.Sprint(obj(f.t, v)["id"])
}

// activeSession opens a session on sensor and advances the clock by the
// fixture's CheckInAfter, so that the sensor has checked in. It returns the
// session's path.
func (f *fixture) activeSession(sensor int64) string {
	f.t.Helper()
	path := "/api/v1/cblr/session/" + f.openSession(sensor)
	f.clk.Advance(10 * time.Second)
	return path
}

// command posts a command on the session at path, requires a 200, and
// returns the command's path and the command object answered.
func (f *fixture) command(path string, body map[string]any) (string, map[string]any) {
	f.t.Helper()
	st, v := f.do("POST", path+"/command", body)
	require.Equal(f.t, http.StatusOK, st, "%v", v)
	c := obj(f.t, v)
	return fmt.Sprintf("%s/command/%v", path, c["id"]), c
}

// get fetches the JSON object at path, requiring a 200.
func (f *fixture) get(path string) map[string]any {
	f.t.Helper()
	st, v := f.do("GET", path, nil)
	require.Equal(f.t, http.StatusOK, st, "%v", v)
	return obj(f.t, v)
}

func (f *fixture) status(path string) string {
	f.t.Helper()
	return f.get(path)["status"].(string)
}

func TestSessionLifecycle(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	st, v := f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10})
	require.Equal(t, http.StatusOK, st)
	s := obj(t, v)
	for _, field := range []string{"id", "sensor_id", "status", "supported_commands", "drives", "storage_size", "create_time",
		"sensor_wait_timeout", "address", "check_in_timeout", "hostname", "storage_ttl", "os_version", "session_timeout",
		"current_working_directory"} {
		require.Contains(t, s, field)
	}
	require.Equal(t, "pending", s["status"])
	require.Empty(t, s["supported_commands"], "no endpoint context before check-in")
	require.Nil(t, s["address"])
	require.EqualValues(t, 30, s["sensor_wait_timeout"])
	require.EqualValues(t, 60, s["check_in_timeout"])
	require.EqualValues(t, 1_700_000_000, s["create_time"], "times are float epoch seconds")
	path := fmt.Sprintf("/api/v1/cblr/session/%v", s["id"])

	f.clk.Advance(10 * time.Second)
	s = f.get(path)
	require.Equal(t, "active", s["status"])
	require.Contains(t, s["supported_commands"], "process list")
	require.Equal(t, `C:\Windows\CarbonBlack`, s["current_working_directory"])
	require.Equal(t, 1, f.sim.OpenSessions())

	// Idle for sensor_wait_timeout: still active; a moment more: timeout,
	// unless a keepalive came in between.
	f.clk.Advance(29 * time.Second)
	st, _ = f.do("GET", path+"/keepalive", nil)
	require.Equal(t, http.StatusOK, st)
	f.clk.Advance(29 * time.Second)
	require.Equal(t, "active", f.status(path), "the keepalive reset the idle clock")
	f.clk.Advance(2 * time.Second)
	require.Equal(t, "timeout", f.status(path))
	require.Zero(t, f.sim.OpenSessions())
	st, v = f.do("GET", path+"/keepalive", nil)
	require.Equal(t, http.StatusNotFound, st, "keepalive on an ended session")
	require.Equal(t, "Session 1 is not active (status timeout)", v, "plain text beginning \"Session\", as cbapi expects")
	st, _ = f.do("POST", path+"/command", map[string]any{"name": "process list"})
	require.Equal(t, http.StatusNotFound, st, "command on an ended session")

	snap := f.sim.Sessions()
	require.Len(t, snap, 1)
	require.Equal(t, 1, snap[0].Keepalives)
	require.False(t, snap[0].CloseRequested)
}

func TestSessionClose(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	id := f.openSession(10)
	path := "/api/v1/cblr/session/" + id
	s := f.get(path)

	s["status"] = "active"
	st, _ := f.do("PUT", path, s)
	require.Equal(t, http.StatusBadRequest, st, "only close can be PUT")

	s["status"] = "close"
	st, v := f.do("PUT", path, s)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "close", obj(t, v)["status"])
	require.Zero(t, f.sim.OpenSessions())
	f.clk.Advance(time.Hour)
	require.Equal(t, "close", f.status(path), "a closed session stays closed")
	require.True(t, f.sim.Sessions()[0].CloseRequested)

	st, _ = f.do("GET", "/api/v1/cblr/session/999", nil)
	require.Equal(t, http.StatusNotFound, st)
	st, v = f.do("GET", "/api/v1/cblr/session", nil)
	require.Equal(t, http.StatusOK, st)
	require.Len(t, v, 1)
}

func TestNeverCheckIn(t *testing.T) {
	t.Parallel()
	h := host(10)
	h.NeverCheckIn = true
	f := setup(t, h)
	path := "/api/v1/cblr/session/" + f.openSession(10)
	f.clk.Advance(59 * time.Second)
	require.Equal(t, "pending", f.status(path))
	st, _ := f.do("POST", path+"/command", map[string]any{"name": "process list"})
	require.Equal(t, http.StatusBadRequest, st, "command on a pending session")
	f.clk.Advance(time.Second)
	// Timed out before check-in: the server forgets the session (404, as
	// cbapi's comment says), and lists it no more.
	st, v := f.do("GET", path, nil)
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, "Session 1 not found", v)
	require.Equal(t, "timeout", f.sim.Sessions()[0].Status)
	_, v = f.do("GET", "/api/v1/cblr/session", nil)
	require.Empty(t, v)
}

func TestCheckInTimeoutFromRequest(t *testing.T) {
	t.Parallel()
	h := host(10)
	h.NeverCheckIn = true
	f := setup(t, h)
	st, v := f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": "10", "checkin_timeout": 5, "sensor_wait_timeout": 7})
	require.Equal(t, http.StatusOK, st, "sensor_id as a string is accepted")
	s := obj(t, v)
	require.EqualValues(t, 5, s["check_in_timeout"])
	require.EqualValues(t, 7, s["sensor_wait_timeout"])
	f.clk.Advance(5 * time.Second)
	st, _ = f.do("GET", fmt.Sprintf("/api/v1/cblr/session/%v", s["id"]), nil)
	require.Equal(t, http.StatusNotFound, st, "timed out before check-in: forgotten")
	require.Equal(t, "timeout", f.sim.Sessions()[0].Status)

	// MaxCheckInTimeout caps what a POST may ask for.
	capped := setupWith(t, func(c *cblr.Config) { c.MaxCheckInTimeout = 3 * time.Second }, h)
	_, v = capped.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10, "checkin_timeout": 1500})
	require.EqualValues(t, 3, obj(t, v)["check_in_timeout"])
	_, v = capped.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10, "checkin_timeout": 2})
	require.EqualValues(t, 2, obj(t, v)["check_in_timeout"], "a request under the cap is granted as asked")
}

func TestSessionRefusals(t *testing.T) {
	t.Parallel()
	disabled, limited := host(1), host(2)
	disabled.LiveResponseDisabled = true
	limited.SessionLimit = 1
	f := setup(t, disabled, limited)

	st, v := f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 1})
	require.Equal(t, http.StatusForbidden, st)
	require.Contains(t, obj(t, v)["error"], "Live Response is disabled")

	id := f.openSession(2)
	st, v = f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 2})
	require.Equal(t, http.StatusConflict, st)
	require.Contains(t, obj(t, v)["error"], "session limit reached")
	st, _ = f.do("PUT", "/api/v1/cblr/session/"+id, map[string]any{"status": "close"})
	require.Equal(t, http.StatusOK, st)
	f.openSession(2) // the slot is free again

	st, v = f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 77})
	require.Equal(t, http.StatusNotFound, st)
	require.Equal(t, "Sensor 77 not found", v)

	st, _ = f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": "x"})
	require.Equal(t, http.StatusBadRequest, st)
}

func TestAuth(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	for _, tok := range []string{"", "wrong"} {
		st, _ := f.raw("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10}, tok)
		require.Equal(t, http.StatusUnauthorized, st)
	}
	require.Empty(t, f.sim.Sessions())
}

func TestProcessListCommand(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := f.activeSession(10)
	cmd, c := f.command(path, map[string]any{"session_id": 1, "name": "process list"})
	require.Equal(t, "pending", c["status"])
	require.Nil(t, c["object"])
	require.Equal(t, "admin", c["username"])
	require.NotContains(t, c, "processes")

	f.clk.Advance(2 * time.Second)
	require.Equal(t, "in progress", f.status(cmd))
	f.clk.Advance(2 * time.Second)
	c = f.get(cmd)
	require.Equal(t, "complete", c["status"])
	require.EqualValues(t, 1_700_000_014, c["completion"])
	procs := c["processes"].([]any)
	require.Len(t, procs, 2)
	p := obj(t, procs[1])
	for _, field := range []string{"pid", "create_time", "proc_guid", "path", "command_line", "sid", "username", "parent", "parent_guid"} {
		require.Contains(t, p, field)
	}
	require.Equal(t, `c:\temp\evil.exe`, p["path"])
	require.Equal(t, "ab", p["sha256"])
	require.NotContains(t, obj(t, procs[0]), "sha256", "hash fields only when known")

	_, v := f.do("GET", path+"/command", nil)
	require.Len(t, v, 1)
	_, v = f.do("GET", path+"/command?status=in%20progress", nil)
	require.Empty(t, v)

	st, _ := f.do("PUT", cmd, map[string]any{"status": "cancel"})
	require.Equal(t, http.StatusBadRequest, st, "a complete command cannot be cancelled")
	st, _ = f.do("GET", path+"/command/99", nil)
	require.Equal(t, http.StatusNotFound, st)
}

func TestCommandIdleTimeout(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := f.activeSession(10)
	// A command running longer than sensor_wait_timeout, with no keepalive.
	cmd, _ := f.command(path, map[string]any{"name": "process list"})
	// The command completes at +4s, which counts as activity: idle from
	// there.
	f.clk.Advance(4*time.Second + 30*time.Second)
	require.Equal(t, "active", f.status(path))
	require.Equal(t, "complete", f.status(cmd))
	f.clk.Advance(time.Second)
	require.Equal(t, "timeout", f.status(path))
}

// With EnforceSessionTimeout a session idle for longer than session_timeout
// times out, even when sensor_wait_timeout is longer; keepalives count as
// activity.
func TestSessionTimeoutEnforced(t *testing.T) {
	t.Parallel()
	f := setupWith(t, func(c *cblr.Config) {
		c.SessionTimeout = 10 * time.Second
		c.EnforceSessionTimeout = true
	}, host(10))
	path := f.activeSession(10)
	_, v := f.do("GET", path, nil)
	require.EqualValues(t, 10, obj(t, v)["session_timeout"])
	require.EqualValues(t, 30, obj(t, v)["sensor_wait_timeout"])
	f.clk.Advance(9 * time.Second)
	st, _ := f.do("GET", path+"/keepalive", nil)
	require.Equal(t, http.StatusOK, st)
	f.clk.Advance(9 * time.Second)
	require.Equal(t, "active", f.status(path), "the keepalive reset the idle clock")
	f.clk.Advance(2 * time.Second)
	require.Equal(t, "timeout", f.status(path))

	// Not enforced (the default): only sensor_wait_timeout counts.
	g := setupWith(t, func(c *cblr.Config) { c.SessionTimeout = 10 * time.Second }, host(10))
	path = "/api/v1/cblr/session/" + g.openSession(10)
	g.clk.Advance(10*time.Second + 29*time.Second)
	require.Equal(t, "active", g.status(path))
}

// Choices another server could make: supported_commands left empty on an
// active session, and a file whose size_uploaded never reaches its size.
func TestOtherServersChoices(t *testing.T) {
	t.Parallel()
	h := host(10)
	h.ListsNoCommands = true
	h.StalledUpload = true
	f := setup(t, h)
	path := f.activeSession(10)
	s := f.get(path)
	require.Equal(t, "active", s["status"])
	require.Equal(t, []any{}, s["supported_commands"])
	st, v := f.do("POST", path+"/command", map[string]any{"name": "get file", "object": `C:\Temp\evil.exe`})
	require.Equal(t, http.StatusOK, st, "the commands run all the same: %v", v)
	f.clk.Advance(4 * time.Second)
	_, v = f.do("GET", path+"/file/1", nil)
	require.Equal(t, map[string]any{"id": 1.0, "file_name": `C:\Temp\evil.exe`, "size": 7.0, "size_uploaded": 3.0, "status": 0.0, "delete": false}, v)
	_, v = f.do("GET", path+"/file", nil)
	require.Equal(t, 3.0, obj(t, v.([]any)[0])["size_uploaded"])
	st, raw := f.raw("GET", path+"/file/1/content", nil, token)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "MZ evil", string(raw), "the content is whole")
}

func TestCommandOutlivesSession(t *testing.T) {
	t.Parallel()
	fx := setup(t, host(10))
	path := fx.activeSession(10)
	cmd, _ := fx.command(path, map[string]any{"name": "get file", "object": `C:\Temp\evil.exe`})
	st, _ := fx.do("PUT", path, map[string]any{"status": "close"})
	require.Equal(t, http.StatusOK, st)
	fx.clk.Advance(time.Minute)
	c := fx.get(cmd)
	require.Equal(t, "error", c["status"], "a command cut short by the session's end")
	require.Equal(t, "CbError", c["result_type"])
	require.Contains(t, c["result_desc"], "closed before the command completed")
}

func TestGetFileCommand(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := f.activeSession(10)
	cmd, c := f.command(path, map[string]any{"name": "get file", "object": `c:\TEMP\evil.exe`})
	require.EqualValues(t, 1, c["file_id"], "file_id from creation on, as cbapi expects")
	st, _ := f.do("GET", path+"/file/1", nil)
	require.Equal(t, http.StatusNotFound, st, "no file object before the upload completed")

	f.clk.Advance(4 * time.Second)
	require.Equal(t, "complete", f.status(cmd))
	st, v := f.do("GET", path+"/file/1", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, map[string]any{"id": 1.0, "file_name": `c:\TEMP\evil.exe`, "size": 7.0, "size_uploaded": 7.0, "status": 0.0, "delete": false}, v)
	st, raw := f.raw("GET", path+"/file/1/content", nil, token)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "MZ evil", string(raw))
	_, v = f.do("GET", path+"/file", nil)
	require.Len(t, v, 1)

	// Partial get: offset and get_count.
	_, c = f.command(path, map[string]any{"name": "get file", "object": `C:\Temp\evil.exe`, "offset": 3, "get_count": 2})
	f.clk.Advance(4 * time.Second)
	_, raw = f.raw("GET", fmt.Sprintf("%s/file/%v/content", path, c["file_id"]), nil, token)
	require.Equal(t, "ev", string(raw))

	// Deleting the file from the server's store.
	st, _ = f.do("DELETE", path+"/file/1", nil)
	require.Equal(t, http.StatusOK, st)
	st, _ = f.do("GET", path+"/file/1/content", nil)
	require.Equal(t, http.StatusNotFound, st)

	// A path the host does not have.
	cmd, _ = f.command(path, map[string]any{"name": "get file", "object": `C:\nope.exe`})
	f.clk.Advance(4 * time.Second)
	c = f.get(cmd)
	require.Equal(t, "error", c["status"])
	require.EqualValues(t, 0x80070002, c["result_code"])
	require.Equal(t, "WinHresult", c["result_type"])

	st, _ = f.do("POST", path+"/command", map[string]any{"name": "get file"})
	require.Equal(t, http.StatusBadRequest, st, "get file needs an object")
}

func TestCancelCommand(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := f.activeSession(10)
	cmd, c := f.command(path, map[string]any{"name": "process list"})
	c["status"] = "cancel"
	st, v := f.do("PUT", cmd, c)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "cancel", obj(t, v)["status"])
	f.clk.Advance(time.Minute)
	require.Equal(t, "cancel", f.status(cmd), "stays cancelled")
	snap := f.sim.Sessions()[0].Commands[0]
	require.True(t, snap.CancelRequested)
	require.Equal(t, "cancel", snap.Status)
}

func TestUnsupportedAndFailingCommands(t *testing.T) {
	t.Parallel()
	h := host(10)
	h.Unsupported = []string{"get file"}
	h.CommandErrors = map[string]cblr.ErrorInfo{"process list": {Code: 5, Type: "CbError", Desc: "boom"}}
	f := setup(t, h)
	path := f.activeSession(10)
	require.NotContains(t, f.get(path)["supported_commands"], "get file")
	st, _ := f.do("POST", path+"/command", map[string]any{"name": "get file", "object": `C:\x`})
	require.Equal(t, http.StatusBadRequest, st)
	cmd, _ := f.command(path, map[string]any{"name": "process list"})
	f.clk.Advance(4 * time.Second)
	c := f.get(cmd)
	require.Equal(t, "error", c["status"])
	require.EqualValues(t, 5, c["result_code"])
	require.Equal(t, "CbError", c["result_type"])
	require.Equal(t, "boom", c["result_desc"])
}

func TestDefaultSensors(t *testing.T) {
	t.Parallel()
	f := setup(t, cblr.DefaultSensors()...)
	require.True(t, f.sim.PlantSample(3, `C:\x\late.exe`, []byte("late")))
	require.False(t, f.sim.PlantSample(42, `C:\x`, nil))
	path := f.activeSession(1)
	cmd, _ := f.command(path, map[string]any{"name": "process list"})
	f.clk.Advance(4 * time.Second)
	_, v := f.do("GET", cmd, nil)
	var found bool
	for _, p := range obj(t, v)["processes"].([]any) {
		if strings.EqualFold(obj(t, p)["path"].(string), cblr.DefaultSamplePath) {
			require.Equal(t, cblr.DefaultSampleSHA256(), obj(t, p)["sha256"])
			found = true
		}
	}
	require.True(t, found, "sensor 1 runs the default sample")
}

func TestFaultsAndClose(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	f.sim.Kit().Add(simhttp.Fault{Path: "/api/v1/cblr/session", Status: http.StatusTooManyRequests, RetryAfter: time.Second, Count: 1})
	st, _ := f.raw("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10}, token)
	require.Equal(t, http.StatusTooManyRequests, st)
	require.Empty(t, f.sim.Sessions(), "a faulted request never reaches the simulator")

	// A hung request is released by Close.
	f.sim.Kit().Add(simhttp.Fault{Path: "/api/v1/cblr/session", Hang: true, Count: 1})
	req, err := http.NewRequest("GET", f.srv.URL+"/api/v1/cblr/session", nil)
	require.NoError(t, err)
	req.Header.Set("X-Auth-Token", token)
	simtest.CloseReleases(t, f.sim, f.srv.Client(), req, func() bool { return f.sim.Kit().Count("GET", "/api/v1/cblr/session") == 1 })
}

func TestArchiveNotSimulated(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := "/api/v1/cblr/session/" + f.openSession(10)
	st, _ := f.do("GET", path+"/archive", nil)
	require.Equal(t, http.StatusNotImplemented, st)
	st, _ = f.raw("GET", "/api/v1/nothing", nil, token)
	require.Equal(t, http.StatusNotFound, st)
	st, _ = f.raw("DELETE", path, nil, token)
	require.Equal(t, http.StatusMethodNotAllowed, st)
}

// The shapes the recorded answers of a real server show (edr/cblr/testdata/
// recorded): storage_size a string once checked in, memdump supported, no
// command_timeout, a completed get file with its success result fields, and
// GET /session?active_only=true listing only pending and active sessions.
func TestRecordedShapes(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10), host(11))
	st, v := f.do("POST", "/api/v1/cblr/session", map[string]any{"sensor_id": 10})
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, 0.0, obj(t, v)["storage_size"], "a pending session: the number 0, as the document")
	path := fmt.Sprintf("/api/v1/cblr/session/%v", obj(t, v)["id"])
	closed := "/api/v1/cblr/session/" + f.openSession(11)
	st, _ = f.do("PUT", closed, map[string]any{"status": "close"})
	require.Equal(t, http.StatusOK, st)
	f.clk.Advance(10 * time.Second)

	s := f.get(path)
	require.Equal(t, "0", s["storage_size"], "checked in: a string, as recorded")
	require.Contains(t, s["supported_commands"], "memdump")

	cmd, c := f.command(path, map[string]any{"session_id": 1, "name": "get file", "object": `C:\Temp\evil.exe`})
	require.NotContains(t, c, "command_timeout")
	require.NotContains(t, c, "completion")
	require.NotContains(t, c, "result_code", "a pending command has no result yet")
	f.clk.Advance(4 * time.Second)
	c = f.get(cmd)
	require.Equal(t, "complete", c["status"])
	require.EqualValues(t, 0, c["result_code"])
	require.Equal(t, "WinHresult", c["result_type"])
	require.Equal(t, "", c["result_desc"])
	require.EqualValues(t, 1_700_000_014, c["completion"])
	_, v = f.do("GET", path, nil)
	require.Equal(t, "7", obj(t, v)["storage_size"])

	_, all := f.do("GET", "/api/v1/cblr/session", nil)
	require.Len(t, all, 2, "every session the server remembers")
	_, live := f.do("GET", "/api/v1/cblr/session?active_only=true", nil)
	require.Len(t, live, 1, "pending and active sessions only")
	require.Equal(t, "active", obj(t, live.([]any)[0])["status"])
	require.EqualValues(t, 10, obj(t, live.([]any)[0])["sensor_id"], "sensor_id is a number")
}

// A keepalive on a session that is not active yet closes it (cbinterface2:
// "keepalives will automatically close any sessions NOT in an active
// state").
func TestKeepaliveClosesPendingSession(t *testing.T) {
	t.Parallel()
	f := setup(t, host(10))
	path := "/api/v1/cblr/session/" + f.openSession(10)
	st, _ := f.do("GET", path+"/keepalive", nil)
	require.Equal(t, http.StatusOK, st)
	require.Equal(t, "close", f.status(path))
	f.clk.Advance(10 * time.Second)
	require.Equal(t, "close", f.status(path), "it never becomes active")
	require.Zero(t, f.sim.OpenSessions())
}
