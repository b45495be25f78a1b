package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/analysisfleet/analysisfleet/internal/testenv"
)

func TestVersionHelpAndUsageErrors(t *testing.T) {
	t.Parallel()
	env := map[string]string{}
	r := runEnv(env, "", "version")
	require.Equal(t, 0, r.code)
	require.Equal(t, "fleetctl dev\n", r.stdout)
	r = runEnv(env, "", "help")
	require.Equal(t, 0, r.code)
	for _, cmd := range []string{"status", "jobs", "job <id>", "dlq list", "dlq replay", "release <id>", "-o table|json"} {
		require.Contains(t, r.stdout, cmd)
	}
	r = runEnv(env, "", "jobs", "-h")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "--state")

	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"jobs", "--state", "sleeping"},
		{"jobs", "extra"},
		{"jobs", "-o", "yaml"},
		{"job"},
		{"job", "a", "b"},
		{"release"},
		{"dlq"},
		{"dlq", "purge"},
		{"dlq", "list", "--limit", "-1"},
		{"status", "--bogus"},
	} {
		r := runEnv(env, "", args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r)
		require.Empty(t, r.stdout, "%v", args)
	}
}

func TestConfigErrorIsOneLineNamingTheVariable(t *testing.T) {
	t.Parallel()
	base := func() map[string]string {
		return map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092", "REDIS_URL": "redis://127.0.0.1:6379/0"}
	}
	for _, c := range []struct {
		name string
		args []string
		set  map[string]string
		del  []string
		want string // the variable named
	}{
		{"no brokers", []string{"status"}, nil, []string{"KAFKA_BROKERS"}, "KAFKA_BROKERS"},
		{"no brokers for dlq", []string{"dlq", "list"}, nil, []string{"KAFKA_BROKERS"}, "KAFKA_BROKERS"},
		{"no redis", []string{"jobs"}, nil, []string{"REDIS_URL"}, "REDIS_URL"},
		{"no redis for release", []string{"release", "x"}, nil, []string{"REDIS_URL"}, "REDIS_URL"},
		{"bad redis url", []string{"job", "x"}, map[string]string{"REDIS_URL": "http://example.com"}, nil, "REDIS_URL"},
		{"bad lease ttl", []string{"status"}, map[string]string{"LEASE_TTL": "soon"}, nil, "LEASE_TTL"},
		{"bad namespace", []string{"jobs"}, map[string]string{"REDIS_NAMESPACE": "a:b"}, nil, "REDIS_NAMESPACE"},
		{"bad regex", []string{"status"}, map[string]string{"KAFKA_TOPIC_REGEX": "("}, nil, "KAFKA_TOPIC_REGEX"},
		{"bad mechanism", []string{"dlq", "list"}, map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USER": "u", "KAFKA_SASL_PASSWORD": "pw"}, nil, "KAFKA_SASL_MECHANISM"},
		{"sasl without user", []string{"status"}, map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": "pw"}, nil, "KAFKA_SASL_USER"},
		{"bad tls", []string{"status"}, map[string]string{"KAFKA_TLS": "maybe"}, nil, "KAFKA_TLS"},
		{"dlq disabled", []string{"dlq", "replay", "--dry-run"}, map[string]string{"KAFKA_DLQ_TOPIC": ""}, nil, "KAFKA_DLQ_TOPIC"},
		{"secret file missing", []string{"jobs"}, map[string]string{"REDIS_URL_FILE": "/nonexistent/redis-url"}, []string{"REDIS_URL"}, "REDIS_URL_FILE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			env := base()
			for k, v := range c.set {
				env[k] = v
			}
			for _, k := range c.del {
				delete(env, k)
			}
			r := runEnv(env, "", c.args...)
			require.Equal(t, 2, r.code, "%s", r)
			require.Empty(t, r.stdout)
			require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
			require.True(t, strings.HasPrefix(r.stderr, "fleetctl: configuration error: "+c.want+": "), "%q", r.stderr)
		})
	}
}

// TestNoSecretInAnyOutput runs every command against a Redis that wants an
// ACL password and a Kafka that wants SASL/PLAIN, successfully and with
// wrong credentials, and looks for the secrets in everything printed.
func TestNoSecretInAnyOutput(t *testing.T) {
	t.Parallel()
	const (
		kafkaPass = "kafka-pw-Zq8xVb3"
		redisPass = "redis-pw-Kp4mNw7"
		wrongPass = "wrong-pw-Hh2jLs9"
	)
	w := newWorld(t, worldOpts{sasl: &plain.Auth{User: "admin", Pass: kafkaPass}})
	user := "fleetctl-" + w.ns
	require.NoError(t, w.rdb.Do(ctx(t), "ACL", "SETUSER", user, "on", ">"+redisPass, "~*", "&*", "+@all").Err())
	t.Cleanup(func() { w.rdb.Do(ctx(t), "ACL", "DELUSER", user) })
	sock := testenv.Redis(t).Socket
	w.env["REDIS_URL"] = "unix://" + user + ":" + redisPass + "@" + sock
	w.env["KAFKA_SASL_MECHANISM"] = "PLAIN"
	w.env["KAFKA_SASL_USER"] = "admin"
	w.env["KAFKA_SASL_PASSWORD"] = kafkaPass
	w.seedLedger()
	w.seedKafka()
	w.seedDLQ()

	var outputs []result
	for _, args := range [][]string{
		{"status"}, {"status", "-o", "json"},
		{"jobs"}, {"jobs", "-o", "json"},
		{"job", "job-a"}, {"job", "job-a", "-o", "json"}, {"job", "job-e"},
		{"dlq", "list", "--show-values"}, {"dlq", "list", "-o", "json"},
		{"dlq", "replay", "--dry-run"}, {"dlq", "replay", "--yes"},
		{"release", "job-b"}, {"release", "job-b", "-o", "json"},
		{"version"}, {"help"},
	} {
		r := w.run("", args...)
		require.Equal(t, 0, r.code, "%v: %s", args, r)
		outputs = append(outputs, r)
	}
	status := outputs[0].stdout
	require.Contains(t, status, "redis         unix://"+sock+"\n", "REDIS_URL is shown without its credentials")
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(outputs[1].stdout), &rep))
	require.Equal(t, "unix://"+sock, rep.Redis)

	fail := func(set map[string]string, args ...string) {
		t.Helper()
		env := map[string]string{}
		for k, v := range w.env {
			env[k] = v
		}
		for k, v := range set {
			env[k] = v
		}
		r := runEnv(env, "", args...)
		require.NotEqual(t, 0, r.code, "%v: %s", args, r)
		t.Logf("%v: exit %d: %s", args, r.code, r.stderr)
		outputs = append(outputs, r)
	}
	fail(map[string]string{"REDIS_URL": "unix://" + user + ":" + wrongPass + "@" + sock}, "jobs")
	fail(map[string]string{"REDIS_URL": "unix://" + user + ":" + wrongPass + "@" + sock}, "status", "--timeout", "5s")
	fail(map[string]string{"KAFKA_SASL_PASSWORD": wrongPass}, "dlq", "list", "--timeout", "5s")
	fail(map[string]string{"KAFKA_SASL_PASSWORD": wrongPass}, "status", "--timeout", "5s")
	fail(map[string]string{"REDIS_URL": "redis://" + user + ":" + wrongPass + "@127.0.0.1:notaport/0"}, "jobs")
	fail(map[string]string{"REDIS_URL": "rediss://" + user + ":" + wrongPass + "@[::1"}, "jobs")
	fail(map[string]string{"KAFKA_SASL_MECHANISM": "NOPE"}, "status")
	secretFile := filepath.Join(t.TempDir(), "redis-url")
	require.NoError(t, os.WriteFile(secretFile, []byte("unix://"+user+":"+redisPass+"@"+sock+"\n"), 0o600))
	fail(map[string]string{"REDIS_URL_FILE": secretFile}, "jobs") // both REDIS_URL and REDIS_URL_FILE
	r := runEnv(map[string]string{"REDIS_URL_FILE": secretFile, "REDIS_NAMESPACE": w.ns}, "", "jobs")
	require.Equal(t, 0, r.code, "%s", r)
	outputs = append(outputs, r)

	for _, r := range outputs {
		for _, secret := range []string{kafkaPass, redisPass, wrongPass} {
			require.NotContains(t, r.stdout, secret)
			require.NotContains(t, r.stderr, secret)
		}
	}
}
