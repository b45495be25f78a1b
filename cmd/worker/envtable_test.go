package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/envconf/envdoc"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite README.md's Configuration table from runVars")

func TestRunVarsTableIsValid(t *testing.T) {
	t.Parallel()
	require.NoError(t, runVars.Check())
}

// TestReadmeConfigurationTable: the README documents exactly the variables
// `worker run` reads (parsed from its Configuration table, several per row
// where a row names several), and its table is the one runVars renders, so
// a default or meaning cannot drift either. -update rewrites it.
func TestReadmeConfigurationTable(t *testing.T) {
	path := filepath.Join("..", "..", "README.md")
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	readme := string(b)
	if *update {
		readme, err = envdoc.Update(readme, runVars.Markdown())
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, []byte(readme), 0o644))
	}
	documented, err := envdoc.Documented(readme)
	require.NoError(t, err)
	undocumented, unread := envdoc.Diff(documented, runVars.Names())
	require.Empty(t, undocumented, "read by `worker run` but not documented in README.md's Configuration table")
	require.Empty(t, unread, "documented in README.md's Configuration table but not read by `worker run`")
	got, err := envdoc.Generated(readme)
	require.NoError(t, err)
	require.Equal(t, runVars.Markdown(), got,
		"README.md's Configuration table is not runVars': go test ./cmd/worker -run TestReadmeConfigurationTable -update")
}

// fullEnv sets every variable of runVars to a value that lets its reader
// go on to the variables read after it (a mechanism before its user, a
// rediss:// URL before its TLS files, a vendor's group before its members).
func fullEnv() map[string]string {
	env := testutil.FullEnv(runVars)
	env["KAFKA_SASL_MECHANISM"] = "PLAIN"
	env["REDIS_URL"] = "rediss://redis.example.net:6380/0"
	return env
}

// TestRunReadsEveryDeclaredVariableAndNoOther: loadConfig looks up every
// variable of runVars (and every secret's <NAME>_FILE), and nothing else: a
// variable read ad hoc, or declared and no longer read, fails here.
func TestRunReadsEveryDeclaredVariableAndNoOther(t *testing.T) {
	t.Parallel()
	testutil.RequireReadsExactly(t, runVars, fullEnv(), func(lookup func(string) (string, bool)) {
		_, _ = loadConfig(envconf.New(runVars, lookup))
	})
}

func TestReadingAnUndeclaredVariablePanics(t *testing.T) {
	t.Parallel()
	e := envconf.FromMap(runVars, nil)
	require.PanicsWithValue(t, "envconf: NOT_DECLARED is read but not declared in the table", func() { e.Str("NOT_DECLARED") })
	require.Panics(t, func() { e.Duration("MAX_INFLIGHT") }, "an Int read as a Duration")
}

// Every problem of a configuration is reported at once, each naming its
// variable, in the README's order; none quotes a secret.
func TestConfigReportsEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	env := baseEnv()
	delete(env, "KAFKA_BROKERS")
	env["KAFKA_SASL_MECHANISM"] = "GSSAPI"
	env["KAFKA_SASL_PASSWORD"] = "s3cr3t-kafka"
	env["REDIS_URL"] = "redis://fleet:s3cr3t-redis@h:port/0"
	env["SAMPLEDB_URL"] = "http://api.mnemonic.no"
	env["CBC_API_SECRET_FILE"] = "/nonexistent/cbc"
	env["SOPHOS_WINDOW"] = "1m"
	env["MAX_INFLIGHT"] = "lots"
	env["LEASE_TTL"] = "soon"
	env["POLL_INTERVAL_MIN"] = "2m"
	env["LOG_LEVEL"] = "loud"
	_, err := load(env)
	require.Error(t, err)
	var ps envconf.Problems
	require.True(t, errors.As(err, &ps))
	var vars []string
	for _, p := range ps {
		vars = append(vars, p.Var)
	}
	require.Equal(t, []string{"KAFKA_BROKERS", "KAFKA_SASL_MECHANISM", "REDIS_URL", "SAMPLEDB_URL", "CBC_API_SECRET",
		"SOPHOS_WINDOW", "MAX_INFLIGHT", "LEASE_TTL", "POLL_INTERVAL_MIN", "LOG_LEVEL"}, vars)
	require.NotContains(t, err.Error(), "s3cr3t")
	require.NotContains(t, err.Error(), "KAFKA_SASL_USER", "an unknown mechanism is the one SASL problem")
}
