package main

import (
	"bytes"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/tenant"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchWorkerEnv) != "" {
		// The worker a bench test started: this test binary is `worker run`.
		os.Exit(realMain([]string{"run"}, os.Stdout, os.Stderr))
	}
	testenv.Main(m)
}

// The README's quick start runs `worker dev`; this keeps it from rotting.
func TestDevRunsToItsSummary(t *testing.T) {
	t.Parallel()
	for _, redisMode := range []string{"auto", "embedded"} {
		t.Run(redisMode, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			dir := t.TempDir()
			code := realMain([]string{"dev", "--short", "--quiet", "--redis", redisMode, "--state-dir", dir}, &out, &errb)
			require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
			require.Contains(t, out.String(), "── summary")
			require.Contains(t, out.String(), "checks              OK")
			require.Contains(t, out.String(), "curl -s -X DELETE")
			require.Contains(t, out.String(), "go run ./cmd/worker dev submit --state-dir "+dir)
			left, err := filepath.Glob(filepath.Join(dir, "*"))
			require.NoError(t, err)
			require.Empty(t, left, "the state file is removed when worker dev stops")
		})
	}
}

func baseEnv() map[string]string {
	return map[string]string{
		"KAFKA_BROKERS":    "127.0.0.1:9092",
		"REDIS_URL":        "redis://127.0.0.1:6379/0",
		"SAMPLEDB_URL":     "https://api.mnemonic.no",
		"SAMPLEDB_API_KEY": "s3cr3t-sampledb-key",
		"CBC_URL":          "https://defense.conferdeploy.net",
		"CBC_ORG_KEY":      "ORG",
		"CBC_API_ID":       "ID",
		"CBC_API_SECRET":   "s3cr3t-cbc",
	}
}

func load(env map[string]string) (*config, error) {
	return loadConfig(envconf.FromMap(runVars, env))
}

// loadBase loads baseEnv with the variables of set added or replaced, and
// requires it to be valid.
func loadBase(t *testing.T, set map[string]string) *config {
	t.Helper()
	env := baseEnv()
	maps.Copy(env, set)
	c, err := load(env)
	require.NoError(t, err)
	return c
}

func TestConfigDefaultsFromTheContract(t *testing.T) {
	t.Parallel()
	c, err := load(baseEnv())
	require.NoError(t, err)
	require.Equal(t, []string{"Sample.Analysis.Job.OSL", "Sample.Analysis.Job.SVG"}, c.node.Intake.Topics)
	require.Equal(t, "sample-analysis-workers", c.node.Intake.Group)
	require.Equal(t, "Sample.Analysis.Job.DLQ", c.node.Intake.DLQTopic)
	require.Equal(t, "Sample.Analysis.Result", c.node.ResultTopic)
	require.Equal(t, 1000, c.node.Runner.MaxInflight)
	require.Equal(t, 1<<20, c.node.Intake.MaxMessageBytes)
	require.Equal(t, ":8080", c.node.HTTPAddr)
	require.Equal(t, "30s", c.leaseTTL.String())
	require.Equal(t, "4h0m0s", c.node.Runner.JobTimeout.String())
	require.Equal(t, "5s", c.node.Runner.AbortPollInterval.String())
	require.Equal(t, "45s", c.node.Intake.SessionTimeout.String())
	require.Equal(t, []string{".amazonaws.com"}, c.download.Hosts)
	require.Equal(t, []string{tenant.Default}, c.tenants.Customers(), "the single-account variables are the default tenant")
	var kinds []string
	c.tenants[tenant.Default].Each(func(kind string, _ any) { kinds = append(kinds, kind) })
	require.Equal(t, []string{edr.KindCBCEventExport}, kinds)
	require.Contains(t, c.sampledb.UserAgent, "analysisfleet/")
}

func TestConfigEmptyTopicDisables(t *testing.T) {
	t.Parallel()
	c := loadBase(t, map[string]string{"KAFKA_DLQ_TOPIC": "", "KAFKA_RESULT_TOPIC": ""})
	require.True(t, c.node.Intake.NoDLQ)
	require.True(t, c.node.NoResults)
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	secretFile := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(secretFile, []byte("from-file\n"), 0o600))
	cases := []struct {
		name string
		edit func(map[string]string)
		want string
	}{
		{"no brokers", func(e map[string]string) { delete(e, "KAFKA_BROKERS") }, "KAFKA_BROKERS"},
		{"no redis", func(e map[string]string) { delete(e, "REDIS_URL") }, "REDIS_URL"},
		{"bad redis", func(e map[string]string) { e["REDIS_URL"] = "http://x" }, "REDIS_URL"},
		{"no sampledb", func(e map[string]string) { delete(e, "SAMPLEDB_URL") }, "SAMPLEDB_URL"},
		{"plain http sampledb", func(e map[string]string) { e["SAMPLEDB_URL"] = "http://api.mnemonic.no" }, "SAMPLEDB_URL"},
		{"loopback sampledb", func(e map[string]string) { e["SAMPLEDB_URL"] = "https://127.0.0.1:8443" }, "SAMPLEDB_URL"},
		{"no key", func(e map[string]string) { delete(e, "SAMPLEDB_API_KEY") }, "SAMPLEDB_API_KEY"},
		{"key twice", func(e map[string]string) { e["SAMPLEDB_API_KEY_FILE"] = secretFile }, "SAMPLEDB_API_KEY"},
		{"missing key file", func(e map[string]string) {
			delete(e, "SAMPLEDB_API_KEY")
			e["SAMPLEDB_API_KEY_FILE"] = "/nonexistent/key"
		}, "SAMPLEDB_API_KEY_FILE"},
		{"lease ttl", func(e map[string]string) { e["LEASE_TTL"] = "soon" }, "LEASE_TTL"},
		{"lease ttl range", func(e map[string]string) { e["LEASE_TTL"] = "1ms" }, "LEASE_TTL"},
		{"max inflight", func(e map[string]string) { e["MAX_INFLIGHT"] = "-3" }, "MAX_INFLIGHT"},
		{"job timeout", func(e map[string]string) { e["JOB_TIMEOUT"] = "forever" }, "JOB_TIMEOUT"},
		{"partial vendor", func(e map[string]string) { e["SOPHOS_URL"] = "https://api-eu01.central.sophos.com" }, "SOPHOS_CLIENT_ID"},
		{"insecure flag", func(e map[string]string) { e["INSECURE_HTTP"] = "maybe" }, "INSECURE_HTTP"},
		{"sasl", func(e map[string]string) { e["KAFKA_SASL_MECHANISM"] = "GSSAPI" }, "KAFKA_SASL"},
		{"no vendor", func(e map[string]string) {
			for _, k := range []string{"CBC_URL", "CBC_ORG_KEY", "CBC_API_ID", "CBC_API_SECRET"} {
				delete(e, k)
			}
		}, "no EDR vendor configured"},
		{"log level", func(e map[string]string) { e["LOG_LEVEL"] = "loud" }, "LOG_LEVEL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv()
			c.edit(env)
			_, err := load(env)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			require.NotContains(t, err.Error(), "s3cr3t", "secrets never appear in configuration errors")
			require.NotContains(t, err.Error(), "\n", "one line")
		})
	}
}

func TestConfigSecretFromFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "key")
	require.NoError(t, os.WriteFile(f, []byte("from-file\n"), 0o600))
	env := baseEnv()
	delete(env, "SAMPLEDB_API_KEY")
	env["SAMPLEDB_API_KEY_FILE"] = f
	c, err := load(env)
	require.NoError(t, err)
	require.Equal(t, "from-file", c.sampledb.APIKey)
}

func TestConfigInsecureAllowsLoopbackHTTP(t *testing.T) {
	t.Parallel()
	c := loadBase(t, map[string]string{"INSECURE_HTTP": "true", "SAMPLEDB_URL": "http://127.0.0.1:18080"})
	require.Equal(t, "http://127.0.0.1:18080", c.sampledb.URL)
	require.True(t, c.download.Insecure)
}

// `worker run` with a bad configuration prints every problem, one line
// each naming the variable, in the README's order, and exits 2 (not a
// crash loop with a stack trace).
func TestRunWithBadConfigExitsTwo(t *testing.T) {
	for k := range baseEnv() {
		t.Setenv(k, "")
	}
	t.Setenv("KAFKA_BROKERS", "127.0.0.1:9092")
	t.Setenv("LEASE_TTL", "eventually")
	var out, errb bytes.Buffer
	code := realMain([]string{"run"}, &out, &errb)
	require.Equal(t, 2, code)
	require.Empty(t, out.String())
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	want := []string{"REDIS_URL: ", "SAMPLEDB_URL: ", "SAMPLEDB_API_KEY: ", "LEASE_TTL: ", "no EDR vendor configured"}
	require.Len(t, lines, len(want), errb.String())
	for i, w := range want {
		require.True(t, strings.HasPrefix(lines[i], "worker: configuration error: "+w), "line %d: %q", i, lines[i])
	}
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	require.Equal(t, 2, realMain([]string{"bogus"}, &out, &errb))
	require.Contains(t, errb.String(), "unknown command")
	require.Equal(t, 0, realMain([]string{"version"}, &out, &errb))
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	ready := true
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.URL.Path != "/readyz" || !ready {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	var out, errb bytes.Buffer
	require.Equal(t, 0, realMain([]string{"healthcheck", addr}, &out, &errb), errb.String())
	mu.Lock()
	ready = false
	mu.Unlock()
	require.Equal(t, 1, realMain([]string{"healthcheck", addr}, &out, &errb))
	require.Contains(t, errb.String(), "draining")
	require.Equal(t, 1, realMain([]string{"healthcheck", "127.0.0.1:1"}, &out, &errb), "nothing listening")
}
