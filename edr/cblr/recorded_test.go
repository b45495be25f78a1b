package cblr_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
// 404 and logged, so a test can say which unrecorded routes the driver used.
type recorded struct {
	t       *testing.T
	answers map[string]recordedAnswer // "GET /api/v1/cblr/session/1", "POST …/command process list"

	mu         sync.Mutex
	log        []string
	unrecorded []string
}

type recordedAnswer struct {
	file, ctype string
	status      int
}

func loadRecorded(t *testing.T) *recorded {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "recorded", "SOURCES.tsv"))
	require.NoError(t, err)
	defer f.Close()
	rec := &recorded{t: t, answers: map[string]recordedAnswer{}}
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		require.Len(t, cols, 6, sc.Text())
		key := cols[1] + " " + cols[2]
		if cols[3] != "" {
			var body struct{ Name string }
			require.NoError(t, json.Unmarshal([]byte(cols[3]), &body))
			key += " " + body.Name
		}
		status := http.StatusOK
		require.Equal(t, "200", cols[4])
		rec.answers[key] = recordedAnswer{file: cols[0], ctype: cols[5], status: status}
	}
	require.NoError(t, sc.Err())
	require.Len(t, rec.answers, 8)
	return rec
}

func (rec *recorded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.Path
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/command") {
		var body struct{ Name string }
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &body)
		key += " " + body.Name
	}
	rec.mu.Lock()
	rec.log = append(rec.log, r.Method+" "+r.URL.RequestURI())
	a, ok := rec.answers[key]
	if !ok {
		rec.unrecorded = append(rec.unrecorded, r.Method+" "+r.URL.Path)
	}
	rec.mu.Unlock()
	if !ok {
		http.Error(w, "not in the recording", http.StatusNotFound)
		return
	}
	body, err := os.ReadFile(filepath.Join("testdata", "recorded", a.file))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", a.ctype)
	w.WriteHeader(a.status)
	_, _ = w.Write(body)
}

func (rec *recorded) requests() (all, unrecorded []string) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.log...), append([]string(nil), rec.unrecorded...)
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
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
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
