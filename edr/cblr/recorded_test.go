package cblr_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
)

// recorded replays the answers a real CB EDR server gave cbapi-python
// (testdata/recorded, see its README): every request the recording holds is
// answered with its recorded body, status and Content-Type; anything else is
// 404 and listed, so a test can say which unrecorded routes the driver used.
// A command POST is told apart by the command's name.
type recorded struct {
	*edrtest.Replay
}

func loadRecorded(t *testing.T) *recorded {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "recorded", "SOURCES.tsv"))
	require.NoError(t, err)
	defer f.Close()
	rec := &recorded{edrtest.NewReplay(t, "not in the recording")}
	answer := func(file, ctype string) http.HandlerFunc {
		body := edrtest.Testdata(t, "recorded", file)
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", ctype)
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(body)
		}
	}
	commands := map[string]map[string]http.HandlerFunc{} // route → command name → answer
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		require.Len(t, cols, 6, sc.Text())
		require.Equal(t, "200", cols[4])
		route := cols[1] + " " + cols[2]
		n++
		if cols[3] == "" {
			rec.Handle(route, answer(cols[0], cols[5]))
			continue
		}
		var body struct{ Name string }
		require.NoError(t, json.Unmarshal([]byte(cols[3]), &body))
		if commands[route] == nil {
			commands[route] = map[string]http.HandlerFunc{}
		}
		commands[route][body.Name] = answer(cols[0], cols[5])
	}
	require.NoError(t, sc.Err())
	require.Equal(t, 8, n)
	for route, byName := range commands {
		rec.Handle(route, func(w http.ResponseWriter, r *http.Request) {
			var body struct{ Name string }
			_ = json.NewDecoder(r.Body).Decode(&body)
			if h, ok := byName[body.Name]; ok {
				h(w, r)
				return
			}
			rec.NotFound(w, r)
		})
	}
	return rec
}

// requests returns every request ("METHOD /path?query") and those the
// recording does not hold ("METHOD /path").
func (rec *recorded) requests() (all, unrecorded []string) {
	for _, q := range rec.Requests() {
		all = append(all, q.Method+" "+q.URI)
	}
	return all, rec.Unrouted()
}

// The recorded session 1 of sensor 1 was created at 1517942461.155622 (its
// create_time); the recorded test file C:\test.txt was empty.
const (
	recordedCreated = 1517942461155 // ms
	emptySHA256     = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

func recordedTarget() edr.Target {
	return edr.Target{JobID: "job-rec", SHA256: emptySHA256, Platform: "win", FileName: "test.txt", Sensors: []int64{1}, Path: `C:\test.txt`}
}

func recordedDriver(t *testing.T, rec *recorded) *cblr.Driver {
	t.Helper()
	srv := rec.Server
	// As cbapi did when the answers were recorded: the sensor's active
	// session is reused.
	d, err := cblr.New(cblr.Config{URL: srv.URL, APIToken: testToken, PollInterval: time.Millisecond, Transport: srv.Client().Transport, ReuseSessions: true})
	require.NoError(t, err)
	return d
}

// startRecorded starts the recorded triage, a minute after the recorded
// session was created.
func startRecorded(t *testing.T) (*recorded, *cblr.Driver, edr.Ref) {
	t.Helper()
	rec := loadRecorded(t)
	d := recordedDriver(t, rec)
	ref, err := d.Start(edrtest.Ctx(t), recordedTarget(), edr.Intent{Key: "job-rec/cblr.triage/1.1", At: recordedCreated + 60_000})
	require.NoError(t, err)
	return rec, d, ref
}

// TestRecordedAnswers drives a whole triage against the real server's
// answers and nothing else: Start borrows the sensor's active session (no
// POST, as cbapi did), process list and get file run on it, the file comes
// from …/content alone (cbapi never asks for the file metadata), and the
// borrowed session is left open.
func TestRecordedAnswers(t *testing.T) {
	t.Parallel()
	rec, d, ref := startRecorded(t)
	res, err := edrtest.Drive(edrtest.Ctx(t), d, recordedTarget(), ref)
	require.NoError(t, err)

	require.Zero(t, res.Rows, "no recorded process ran from C:\\test.txt")
	require.Equal(t, []edr.File{{Host: "WIN7-HYPERV-2", Path: `C:\test.txt`, Size: 0, SHA256: emptySHA256, Matches: true}}, res.Files)
	require.Equal(t, []string{"WIN7-HYPERV-2"}, res.Hosts)
	require.Contains(t, strings.Join(res.Notes, "\n"), "Live Response session 1 was already open when the triage took it; it is left open for whoever opened it")

	all, unrecorded := rec.requests()
	require.Empty(t, unrecorded, "every request was one the recording answers")
	require.Equal(t, []string{
		"GET /api/v1/cblr/session?active_only=true",
		"GET /api/v1/sensor/1", // the customer's server knows the sensor
		"GET /api/v1/cblr/session/1",
		"POST /api/v1/cblr/session/1/command", // process list
		"GET /api/v1/cblr/session/1/command/4",
		"POST /api/v1/cblr/session/1/command", // get file
		"GET /api/v1/cblr/session/1/command/3",
		"GET /api/v1/cblr/session/1/file/2/content",
	}, all)
}

// TestRecordedFind reads the recorded session list: the session there was
// not opened under any intent of this driver (its check_in_timeout is the
// default 1200, no tag), so Find answers ErrNotStarted.
func TestRecordedFind(t *testing.T) {
	t.Parallel()
	rec := loadRecorded(t)
	d := recordedDriver(t, rec)
	_, err := d.Find(edrtest.Ctx(t), recordedTarget(), edr.Intent{Key: "job-rec/cblr.triage/1.1", At: recordedCreated - 300})
	require.ErrorIs(t, err, edr.ErrNotStarted)
	all, unrecorded := rec.requests()
	require.Equal(t, []string{"GET /api/v1/cblr/session?active_only=true"}, all)
	require.Empty(t, unrecorded)
}

// TestRecordedCancel cancels mid-way: the followed command has completed
// (nothing to cancel), and the borrowed session is left to its owner.
func TestRecordedCancel(t *testing.T) {
	t.Parallel()
	rec, d, ref := startRecorded(t)
	st, err := d.Poll(edrtest.Ctx(t), ref)
	require.NoError(t, err)
	require.NotNil(t, st.Ref, "process list accepted")
	require.NoError(t, d.Cancel(edrtest.Ctx(t), st.Ref))
	all, unrecorded := rec.requests()
	require.Empty(t, unrecorded)
	require.Equal(t, "GET /api/v1/cblr/session/1/command/4", all[len(all)-1], "a completed command is not cancelled, a borrowed session not closed")
}
