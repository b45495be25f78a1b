package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf/envdoc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

// TestEnvVarsAreTheWorkers: fleetctl reads nothing the README's
// Configuration table (the worker's contract) does not document, and
// reads every variable it declares.
func TestEnvVarsAreTheWorkers(t *testing.T) {
	t.Parallel()
	require.NoError(t, envVars.Check())
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	require.NoError(t, err)
	documented, err := envdoc.Documented(string(b))
	require.NoError(t, err)
	undocumented, _ := envdoc.Diff(documented, envVars.Names())
	require.Empty(t, undocumented, "read by fleetctl but not documented in README.md's Configuration table")

	// Every variable set, so that each reader goes on to the variables
	// read after it (a mechanism before its user, rediss:// before its TLS
	// files).
	env := testutil.FullEnv(envVars)
	env["KAFKA_SASL_MECHANISM"], env["REDIS_URL"] = "PLAIN", "rediss://redis.example.net:6380/0"
	testutil.RequireReadsExactly(t, envVars, env, func(lookup func(string) (string, bool)) {
		_, _ = (&cli{env: lookup}).loadConfig(needs{kafka: true, redis: true})
	})
}

// Every problem at once, on the one error line, each naming its variable.
func TestConfigErrorListsEveryProblem(t *testing.T) {
	t.Parallel()
	r := runEnv(map[string]string{"LEASE_TTL": "soon", "REDIS_NAMESPACE": "a:b", "KAFKA_SASL_MECHANISM": "GSSAPI",
		"KAFKA_TOPICS": "a", "KAFKA_TOPIC_REGEX": "^b$"}, "", "status")
	require.Equal(t, 2, r.code, "%s", r)
	require.Empty(t, r.stdout)
	require.Equal(t, "fleetctl: configuration error: KAFKA_BROKERS: is required (a comma-separated list); "+
		"KAFKA_TOPIC_REGEX: is set together with KAFKA_TOPICS: set one of the two (the regex would replace the list); "+
		`KAFKA_SASL_MECHANISM: "GSSAPI" is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; `+
		"REDIS_URL: is required (or REDIS_URL_FILE; or REDIS_CLUSTER_ADDRS for a Redis Cluster); "+
		`REDIS_NAMESPACE: "a:b" may not contain braces, colons or spaces; `+
		`LEASE_TTL: "soon" is not a duration (examples: 30s, 5m, 4h)`+"\n", r.stderr)
}

// Every command's -h and --help exit 0 without reading the environment
// (an empty one would be a configuration error).
func TestEveryCommandHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, cmd := range [][]string{{"status"}, {"jobs"}, {"job"}, {"dlq"}, {"dlq", "list"}, {"dlq", "replay"}, {"release"}, {}} {
		for _, h := range []string{"-h", "--help", "-help"} {
			args := append(slices.Clone(cmd), h)
			r := runEnv(map[string]string{}, "", args...)
			require.Equal(t, 0, r.code, "%v: %s", args, r)
			require.NotContains(t, r.stdout+r.stderr, "fleetctl: configuration error", "%v", args)
			require.Contains(t, r.stdout+r.stderr, "usage: fleetctl ", "%v", args)
		}
	}
	r := runEnv(map[string]string{}, "", "help")
	require.Equal(t, 0, r.code)
	for _, name := range []string{"KAFKA_BROKERS", "REDIS_URL", "LEASE_TTL"} {
		require.Contains(t, r.stdout, name)
	}
	require.True(t, strings.HasPrefix(r.stdout, "usage: fleetctl <command>"))
}
