package main

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// A full run (every vendor, aborts, bad records) logs at debug level; no
// configured secret, no bearer token a vendor issued and no pre-signed URL
// signature may appear in the logs, and none but the simulators' own dev
// API keys (printed on purpose, for the curl lines) in the output.
func TestNoSecretInLogsOrOutput(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	d := &dev{o: devOptions{jobs: 40, bad: 6, aborts: 4, workers: 2, inflight: 200, redis: "embedded",
		short: true, logLevel: "debug", timeout: 5 * time.Minute, customers: 2}, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code, err := d.run(ctx, simstack.TestTiming)
	require.NoError(t, err)
	require.Equal(t, 0, code, out.String())
	logs, err := os.ReadFile(d.logPath)
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(d.logPath) })
	require.NotEmpty(t, logs)
	require.Contains(t, string(logs), `"level":"debug"`, "the run really logged at debug level")

	b := simstack.OtherCredentials
	secrets := []string{simstack.AnalyzerKey, simstack.UserKey, simstack.ViewerKey, simstack.CBCAPISecret,
		simstack.CBLRToken, simstack.CytomicPassword, simstack.CytomicClientSecret, simstack.SophosClientSecret,
		b.CBCAPISecret, b.CBLRToken, b.CytomicPassword, b.CytomicClientSecret, b.SophosClientSecret}
	var signatures []string
	for _, a := range d.stack.Accounts {
		for _, u := range a.CBC.IssuedURLs() {
			pu, err := url.Parse(u)
			require.NoError(t, err)
			signatures = append(signatures, pu.Query().Get("X-Amz-Signature"), pu.Query().Get("X-Amz-Security-Token"))
		}
	}
	var tokens []string
	for _, a := range d.stack.Accounts {
		signatures = append(signatures, a.Cytomic.DownloadSignatures()...)
		tokens = append(append(tokens, a.Cytomic.Tokens()...), a.Sophos.Tokens()...)
	}
	require.NotEmpty(t, signatures, "the run downloaded pre-signed results")
	require.NotEmpty(t, tokens, "the run used bearer tokens")

	for _, s := range append(append(append([]string{}, secrets...), signatures...), tokens...) {
		if s == "" {
			continue
		}
		require.NotContains(t, string(logs), s, "a secret, token or signature reached the log")
	}
	for _, s := range append(append([]string{simstack.CBCAPISecret, simstack.CBLRToken, simstack.CytomicPassword,
		simstack.SophosClientSecret}, signatures...), tokens...) {
		if s != "" && strings.Contains(out.String(), s) {
			t.Fatalf("the dev output shows a secret, token or signature")
		}
	}
}
