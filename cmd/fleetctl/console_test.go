package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/stretchr/testify/require"
)

func TestConsoleHelpAndRefusals(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"-h", "--help"} {
		r := runEnv(map[string]string{}, "", "console", h)
		require.Equal(t, 0, r.code, "%s", r)
		require.Contains(t, r.stdout, "--token-file")
		require.Contains(t, r.stdout, "read-only unless started with --write")
	}
	r := runEnv(map[string]string{"REDIS_URL": "redis://127.0.0.1:1"}, "", "console", "--addr", "0.0.0.0:8089")
	require.Equal(t, 2, r.code, "%s", r)
	require.Contains(t, r.stderr, "not a loopback address: give --token-file or --proxy-header")
	r = runEnv(map[string]string{"REDIS_URL": "redis://127.0.0.1:1"}, "", "console", "--addr", "nope")
	require.Equal(t, 2, r.code, "%s", r)
	r = runEnv(map[string]string{}, "", "console")
	require.Equal(t, 2, r.code, "%s", r)
	require.Contains(t, r.stderr, "REDIS_URL")
}

// TestConsoleServesTheFleetAndStops: fleetctl console serves the ledger
// and Kafka's lag and dead letters on loopback, and returns when its
// context ends.
func TestConsoleServesTheFleetAndStops(t *testing.T) {
	t.Parallel()
	w := newWorld(t, worldOpts{})
	w.seedLedger()
	w.seedDLQ()
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan result, 1)
	go func() {
		var errb strings.Builder
		lookup := func(k string) (string, bool) { v, ok := w.env[k]; return v, ok }
		code := run(c, []string{"console", "--addr", "127.0.0.1:0"}, lookup, strings.NewReader(""), pw, &errb)
		pw.Close()
		done <- result{code: code, stderr: errb.String()}
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	base := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "console: "), "/")
	require.True(t, strings.HasPrefix(base, "http://127.0.0.1:"), line)

	get := func(path string) string {
		req, err := http.NewRequestWithContext(c, http.MethodGet, base+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
		return string(b)
	}
	body := get("/jobs")
	require.Contains(t, body, `<a href="/jobs/job-a">job-a</a>`)
	body = get("/")
	require.Contains(t, body, "Lag of the workers")
	require.Contains(t, body, "in "+testutil.TopicDLQ)
	body = get("/dlq")
	require.Contains(t, body, `invalid_sample_hash <span class="count">(2; 2 replayable)</span>`)
	require.Contains(t, body, `not_json <span class="count">(1; 1 replayable)</span>`)
	require.Contains(t, body, `oversized <span class="count">(1; 0 replayable)</span>`)
	require.Contains(t, body, `missing_job_id <span class="count">(1; 0 replayable)</span>`)
	require.Contains(t, body, `<strong id="replayable">3</strong>`)
	require.Contains(t, body, "Sample.Analysis.Job.SVG/1@7")

	// A live stream open at shutdown does not hold it up.
	req, err := http.NewRequestWithContext(c, http.MethodGet, base+"/live?u=/", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	cancel()
	r := <-done
	require.Equal(t, 0, r.code, "%s", r)
}
