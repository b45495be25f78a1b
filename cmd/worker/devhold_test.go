package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// jobState asks the dev fleet's SampleDB simulator for a job's state, as an
// analyst would (GET with a viewer key).
func jobState(t *testing.T, sampledbURL, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sampledbURL+"/sampledb/v2/job/"+id, nil)
	require.NoError(t, err)
	req.Header.Set("Argus-API-Key", simstack.ViewerKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ""
	}
	require.Equal(t, http.StatusOK, resp.StatusCode, id)
	var env struct {
		Data sampledb.Job `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&env))
	return env.Data.State
}

// heldLines returns the IDs of the jobs the --hold trickle posted so far,
// and the largest number of unfinished ones it reported.
func heldLines(out string) (ids []string, most int) {
	re := regexp.MustCompile(`posted ([0-9a-f-]{36}) \(.*\) — (\d+) held jobs unfinished`)
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
		var n int
		for _, c := range m[2] {
			n = n*10 + int(c-'0')
		}
		most = max(most, n)
	}
	return ids, most
}

// `worker dev --hold` keeps a trickle of long jobs running (capped), its
// banner shows the first job IDs and how to submit one more, and `worker
// dev submit` (another process) finds the fleet by its state file, posts a
// job that the fleet runs to its end, and prints its ID. Both real binaries.
func TestDevHoldTrickleAndSubmit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const holdMax = 3
	dev := startChild(t, map[string]string{devDirEnv: dir}, "dev", "--short", "--quiet", "--redis", "embedded",
		"--hold", "--hold-every", "100ms", "--hold-vendor-time", "10m", "--hold-max", "3")

	require.Eventually(t, func() bool { return strings.Contains(dev.out(), "--hold: still running") },
		90*time.Second, 50*time.Millisecond)
	out := dev.out()
	require.Contains(t, out, "checks              OK")
	require.Contains(t, out, "Submit one more job:\n  go run ./cmd/worker dev submit\n")
	require.Contains(t, out, "go run ./cmd/fleetctl job <job id>")
	require.Regexp(t, `console: http://127\.0\.0\.1:\d+/\n`, out, "worker dev serves the console")
	_, first, ok := strings.Cut(out, "First jobs posted")
	require.True(t, ok, out)
	var firstIDs []string
	for _, l := range strings.Split(first, "\n")[1:] {
		if l = strings.TrimSpace(l); uuidRe.MatchString(l) {
			firstIDs = append(firstIDs, l)
		} else {
			break
		}
	}
	require.Len(t, firstIDs, firstJobsShown)

	states, err := filepath.Glob(filepath.Join(dir, "dev-*.json"))
	require.NoError(t, err)
	require.Len(t, states, 1)
	st, n, err := findDev(dir)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, dev.cmd.Process.Pid, st.PID)
	for _, id := range firstIDs {
		require.True(t, sampledb.IsTerminal(jobState(t, st.SampleDBURL, id)), id)
	}

	// The trickle: long jobs, executing, never more than holdMax unfinished.
	var held []string
	require.Eventually(t, func() bool {
		held, _ = heldLines(dev.out())
		return len(held) >= holdMax
	}, 30*time.Second, 20*time.Millisecond)
	for _, id := range held[:holdMax] {
		require.Eventually(t, func() bool { return jobState(t, st.SampleDBURL, id) == sampledb.StateExecuting },
			30*time.Second, 20*time.Millisecond, "held job %s runs", id)
	}
	// The console the banner names shows a held job's page.
	require.NotEmpty(t, st.ConsoleURL)
	require.Contains(t, out, "console: "+st.ConsoleURL+"\n")
	resp, err := http.Get(st.ConsoleURL + "jobs/" + held[0])
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", page)
	require.Contains(t, string(page), held[0])

	// One more job, from another process.
	sub := exec.Command(workerBinary(t), "dev", "submit")
	sub.Env = append(os.Environ(), devDirEnv+"="+dir)
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	require.NoError(t, sub.Run(), subErr.String())
	id := strings.TrimSpace(subOut.String())
	require.Regexp(t, uuidRe, id)
	require.Contains(t, subErr.String(), "fleetctl job "+id)
	require.Eventually(t, func() bool { return jobState(t, st.SampleDBURL, id) == sampledb.StateSuccess },
		60*time.Second, 50*time.Millisecond, "the submitted job runs to its end")

	// By now the trickle has ticked many times: still capped, because its
	// jobs run for 10 minutes.
	held, most := heldLines(dev.out())
	require.Len(t, held, holdMax, "no new held job while %d are unfinished", holdMax)
	require.Equal(t, holdMax, most)

	require.NoError(t, dev.stop(t, syscall.SIGINT))
	left, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	require.Empty(t, left, "the state file is removed when worker dev stops")
}

// Without a running worker dev, submit says so and how to start one; state
// files of processes that are gone are ignored and removed.
func TestDevSubmitWithoutAFleet(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gone := exec.Command("true")
	require.NoError(t, gone.Run())
	stale := filepath.Join(dir, "dev-1-x.json")
	b, _ := json.Marshal(devState{PID: gone.Process.Pid, KafkaBrokers: []string{"127.0.0.1:1"}, Topics: []string{"t"}})
	require.NoError(t, os.WriteFile(stale, b, 0o600))

	var out, errb bytes.Buffer
	require.Equal(t, 1, realMain([]string{"dev", "submit", "--state-dir", dir}, &out, &errb))
	require.Empty(t, out.String())
	require.Contains(t, errb.String(), "worker dev submit: no worker dev is running (no state file in "+dir+")")
	require.Contains(t, errb.String(), "worker dev --hold")
	require.NoFileExists(t, stale)

	require.Equal(t, 2, realMain([]string{"dev", "submit", "--platform", "beos"}, &out, &errb))
	require.Equal(t, 0, realMain([]string{"dev", "submit", "--help"}, &out, &errb))
	require.True(t, strings.HasPrefix(out.String(), "usage: worker dev submit"), out.String())
}

// The banner's console line appears when a console URL is set, and only
// then.
func TestDevBannerConsoleLine(t *testing.T) {
	t.Parallel()
	d := &dev{stack: &simstack.Stack{SampleDBURL: "http://127.0.0.1:18080"}, brokers: []string{"127.0.0.1:9092"},
		redisURLUsed: "redis://127.0.0.1:6379/0", ns: "dev-1"}
	var w bytes.Buffer
	d.tryLines(&w)
	require.NotContains(t, w.String(), "console")
	require.Contains(t, w.String(), "export KAFKA_BROKERS=127.0.0.1:9092 REDIS_URL=redis://127.0.0.1:6379/0 REDIS_NAMESPACE=dev-1\n")

	d.consoleURL = "http://127.0.0.1:8099/"
	w.Reset()
	d.tryLines(&w)
	require.True(t, strings.HasPrefix(w.String(), "console: http://127.0.0.1:8099/\n"), w.String())
}
