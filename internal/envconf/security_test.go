package envconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/envconf/pkitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const password = "s3cret-Pa55"

// security declares what KafkaSecurity, Redis and RedisConfig read.
var security = envconf.Table{envconf.KafkaTLS, envconf.KafkaSASL, envconf.RedisURL, envconf.RedisCluster, envconf.RedisTLS}

func fromMap(m map[string]string) *envconf.Env { return envconf.FromMap(security, m) }

// kafkaSecurity reads m's Kafka security variables; err is every problem.
func kafkaSecurity(m map[string]string) ([]kgo.Opt, error) {
	e := fromMap(m)
	opts := e.KafkaSecurity()
	return opts, e.Err()
}

// requireProblem checks err is one line naming the variable, without the
// password, any PEM content or the PEM files' paths' contents.
func requireProblem(t *testing.T, err error, name string) {
	t.Helper()
	require.Error(t, err)
	msg := err.Error()
	require.True(t, strings.HasPrefix(msg, name+":"), "the error names %s first: %q", name, msg)
	require.NotContains(t, msg, password)
	require.NotContains(t, msg, "s3cret")
	require.NotContains(t, msg, "BEGIN")
	require.NotContains(t, msg, "\n")
}

// problemCase is an environment (env) whose problem names the variable want.
type problemCase struct {
	name string
	env  map[string]string
	want string
}

// withVars applies kv, (name, value) pairs, to m in order and returns m: a
// value "-" removes the name, any other value sets it.
func withVars(m map[string]string, kv ...string) map[string]string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "-" {
			delete(m, kv[i])
		} else {
			m[kv[i]] = kv[i+1]
		}
	}
	return m
}

// kafkaClient builds (without connecting) a client from opts so the
// options' values can be read back.
func kafkaClient(t *testing.T, opts []kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// verifies reports whether tc trusts the test server certificate for name.
func verifies(t *testing.T, p *pkitest.PKI, roots *x509.CertPool, name string) bool {
	t.Helper()
	b, err := os.ReadFile(p.ServerCertFile)
	require.NoError(t, err)
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	require.NoError(t, err)
	_, err = cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name})
	return err == nil
}

func TestKafkaSecurityOffByDefault(t *testing.T) {
	t.Parallel()
	opts, err := kafkaSecurity(map[string]string{
		// Safe to set always (the base deployment does): read only with a
		// mechanism.
		"KAFKA_SASL_PASSWORD_FILE": "/nonexistent/password",
	})
	require.NoError(t, err)
	require.Empty(t, opts)
}

func TestKafkaTLSAndSASLVariables(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	pwFile := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(password+"\n"), 0o600))
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			opts, err := kafkaSecurity(map[string]string{
				"KAFKA_TLS": "true", "KAFKA_TLS_CA_FILE": p.CAFile,
				"KAFKA_TLS_CERT_FILE": p.ClientCertFile, "KAFKA_TLS_KEY_FILE": p.ClientKeyFile,
				"KAFKA_TLS_SERVER_NAME": pkitest.ServerName,
				"KAFKA_SASL_MECHANISM":  mech, "KAFKA_SASL_USER": "fleet", "KAFKA_SASL_PASSWORD_FILE": pwFile,
			})
			require.NoError(t, err)
			cl := kafkaClient(t, opts)
			tc, _ := cl.OptValue(kgo.DialTLSConfig).(*tls.Config)
			require.NotNil(t, tc)
			require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
			require.Equal(t, pkitest.ServerName, tc.ServerName)
			require.Len(t, tc.Certificates, 1)
			require.True(t, verifies(t, p, tc.RootCAs, pkitest.ServerName), "the CA file is trusted")
			mechs, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism)
			require.Len(t, mechs, 1)
			require.Equal(t, strings.ToUpper(mech), mechs[0].Name())
		})
	}
}

func TestKafkaTLSWithoutCAUsesSystemRoots(t *testing.T) {
	t.Parallel()
	opts, err := kafkaSecurity(map[string]string{"KAFKA_TLS": "true"})
	require.NoError(t, err)
	tc, _ := kafkaClient(t, opts).OptValue(kgo.DialTLSConfig).(*tls.Config)
	require.NotNil(t, tc)
	require.Nil(t, tc.RootCAs, "system roots")
	require.Empty(t, tc.ServerName, "kgo sets each broker's host")
	require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
}

func TestKafkaSecurityProblemsNameTheVariable(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello "+password), 0o600))
	pwFile := filepath.Join(dir, "pw")
	require.NoError(t, os.WriteFile(pwFile, []byte(password), 0o600))
	tlsOn := func(kv ...string) map[string]string {
		return withVars(map[string]string{"KAFKA_TLS": "true"}, kv...)
	}
	sasl := func(kv ...string) map[string]string {
		m := map[string]string{"KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USER": "fleet", "KAFKA_SASL_PASSWORD": password}
		return withVars(m, kv...)
	}
	cases := []problemCase{
		{"bad bool", map[string]string{"KAFKA_TLS": "sure"}, "KAFKA_TLS"},
		{"missing CA", tlsOn("KAFKA_TLS_CA_FILE", filepath.Join(dir, "nope.pem")), "KAFKA_TLS_CA_FILE"},
		{"CA not PEM", tlsOn("KAFKA_TLS_CA_FILE", notPEM), "KAFKA_TLS_CA_FILE"},
		{"CA is a key", tlsOn("KAFKA_TLS_CA_FILE", p.ClientKeyFile), "KAFKA_TLS_CA_FILE"},
		{"cert without key", tlsOn("KAFKA_TLS_CERT_FILE", p.ClientCertFile), "KAFKA_TLS_KEY_FILE"},
		{"key without cert", tlsOn("KAFKA_TLS_KEY_FILE", p.ClientKeyFile), "KAFKA_TLS_CERT_FILE"},
		{"key does not match", tlsOn("KAFKA_TLS_CERT_FILE", p.ClientCertFile, "KAFKA_TLS_KEY_FILE", p.ServerKeyFile), "KAFKA_TLS_CERT_FILE"},
		{"cert not PEM", tlsOn("KAFKA_TLS_CERT_FILE", notPEM, "KAFKA_TLS_KEY_FILE", p.ClientKeyFile), "KAFKA_TLS_CERT_FILE"},
		{"CA without TLS", map[string]string{"KAFKA_TLS_CA_FILE": p.CAFile}, "KAFKA_TLS_CA_FILE"},
		{"server name with TLS off", map[string]string{"KAFKA_TLS": "false", "KAFKA_TLS_SERVER_NAME": "x"}, "KAFKA_TLS_SERVER_NAME"},
		{"unknown mechanism", sasl("KAFKA_SASL_MECHANISM", "GSSAPI"), "KAFKA_SASL_MECHANISM"},
		{"no user", sasl("KAFKA_SASL_USER", "-"), "KAFKA_SASL_USER"},
		{"no password", sasl("KAFKA_SASL_PASSWORD", "-"), "KAFKA_SASL_PASSWORD"},
		{"password twice", sasl("KAFKA_SASL_PASSWORD_FILE", pwFile), "KAFKA_SASL_PASSWORD"},
		{"missing password file", sasl("KAFKA_SASL_PASSWORD", "-", "KAFKA_SASL_PASSWORD_FILE", filepath.Join(dir, "nope")), "KAFKA_SASL_PASSWORD_FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := kafkaSecurity(c.env)
			requireProblem(t, err, c.want)
		})
	}
}

// A redis:// or unix:// REDIS_URL: its user, password and database, and
// no TLS.
func TestRedisURLWithoutTLS(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, url, network, addr string
		db                       int
	}{
		{"redis", "redis://fleet:" + password + "@10.0.0.5:6380/2?dial_timeout=3s", "tcp", "10.0.0.5:6380", 2},
		{"unix", "unix://fleet:" + password + "@/run/redis.sock?db=3", "unix", "/run/redis.sock", 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := fromMap(map[string]string{"REDIS_URL": c.url})
			o := e.Redis()
			require.NoError(t, e.Err())
			require.Equal(t, c.network, o.Network)
			require.Equal(t, c.addr, o.Addr)
			require.Equal(t, "fleet", o.Username)
			require.Equal(t, password, o.Password)
			require.Equal(t, c.db, o.DB)
			require.Nil(t, o.TLSConfig)
		})
	}
}

func TestRedisTLSVariables(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	urlFile := filepath.Join(t.TempDir(), "redis-url")
	require.NoError(t, os.WriteFile(urlFile, []byte("rediss://fleet:"+password+"@127.0.0.1:6380/0\n"), 0o600))

	t.Run("system roots by default", func(t *testing.T) {
		t.Parallel()
		e := fromMap(map[string]string{"REDIS_URL": "rediss://fleet:" + password + "@redis.example.net:6380/0"})
		o := e.Redis()
		require.NoError(t, e.Err())
		require.NotNil(t, o.TLSConfig)
		require.Nil(t, o.TLSConfig.RootCAs)
		require.Empty(t, o.TLSConfig.Certificates)
		require.Equal(t, "redis.example.net", o.TLSConfig.ServerName)
		require.Equal(t, uint16(tls.VersionTLS12), o.TLSConfig.MinVersion)
	})
	t.Run("private CA, client certificate, server name, URL from a file", func(t *testing.T) {
		t.Parallel()
		e := fromMap(map[string]string{
			"REDIS_URL_FILE":        urlFile,
			"REDIS_TLS_CA_FILE":     p.CAFile,
			"REDIS_TLS_CERT_FILE":   p.ClientCertFile,
			"REDIS_TLS_KEY_FILE":    p.ClientKeyFile,
			"REDIS_TLS_SERVER_NAME": pkitest.ServerName,
		})
		o := e.Redis()
		require.NoError(t, e.Err())
		require.Equal(t, "127.0.0.1:6380", o.Addr)
		require.Equal(t, password, o.Password)
		require.Equal(t, pkitest.ServerName, o.TLSConfig.ServerName)
		require.Equal(t, uint16(tls.VersionTLS12), o.TLSConfig.MinVersion)
		require.Len(t, o.TLSConfig.Certificates, 1)
		require.True(t, verifies(t, p, o.TLSConfig.RootCAs, pkitest.ServerName), "the CA file is trusted")
	})
	t.Run("only the given CA is trusted", func(t *testing.T) {
		t.Parallel()
		e := fromMap(map[string]string{"REDIS_URL": "rediss://127.0.0.1:6380", "REDIS_TLS_CA_FILE": p.OtherCAFile})
		o := e.Redis()
		require.NoError(t, e.Err())
		require.False(t, verifies(t, p, o.TLSConfig.RootCAs, "localhost"))
	})
}

func TestRedisProblemsNameTheVariableAndHideThePassword(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	urlFile := filepath.Join(dir, "url")
	require.NoError(t, os.WriteFile(urlFile, []byte("rediss://fleet:"+password+"@h:1/0"), 0o600))
	tlsURL := "rediss://fleet:" + password + "@127.0.0.1:6380/0"
	with := func(u string, kv ...string) map[string]string {
		return withVars(map[string]string{"REDIS_URL": u}, kv...)
	}
	cases := []problemCase{
		{"unset", map[string]string{}, "REDIS_URL"},
		{"wrong scheme", with("http://fleet:" + password + "@h"), "REDIS_URL"},
		{"no scheme", with("fleet:" + password + "@h:6379"), "REDIS_URL"},
		{"unparseable user info", with(`redis://fleet:` + password + `"x@h:6379/0`), "REDIS_URL"},
		{"space in the password", with(`redis://fleet:` + password + ` x@h:6379/0`), "REDIS_URL"},
		{"slash in the password", with("redis://fleet:" + password + "/x@h:6379/0"), "REDIS_URL"},
		{"slash in a password only", with("redis://:1234/" + password + "@h:6379/0"), "REDIS_URL"},
		{"question mark in the password", with("redis://fleet:" + password + "@?x@h:6379/0"), "REDIS_URL"},
		{"hash in the password", with("redis://fleet:" + password + "@#x@h:6379/0"), "REDIS_URL"},
		{"bad port", with("redis://fleet:" + password + "@h:port/0"), "REDIS_URL"},
		{"bad db", with("redis://fleet:" + password + "@h:6379/zero"), "REDIS_URL"},
		{"unknown option", with("redis://fleet:" + password + "@h:6379/0?colour=blue"), "REDIS_URL"},
		{"bad option", with("redis://fleet:" + password + "@h:6379/0?dial_timeout=soon"), "REDIS_URL"},
		{"bad db option", with("redis://fleet:" + password + "@h:6379/0?db=" + password), "REDIS_URL"},
		{"skip_verify", with(tlsURL + "?skip_verify=true"), "REDIS_URL"},
		{"URL twice", with(tlsURL, "REDIS_URL_FILE", urlFile), "REDIS_URL"},
		{"missing URL file", map[string]string{"REDIS_URL_FILE": filepath.Join(dir, "nope")}, "REDIS_URL_FILE"},
		{"CA with redis://", with("redis://fleet:"+password+"@h:6379/0", "REDIS_TLS_CA_FILE", p.CAFile), "REDIS_TLS_CA_FILE"},
		{"cert with unix://", with("unix://fleet:"+password+"@/run/redis.sock", "REDIS_TLS_CERT_FILE", p.ClientCertFile), "REDIS_TLS_CERT_FILE"},
		{"key with redis://", with("redis://h:6379", "REDIS_TLS_KEY_FILE", p.ClientKeyFile), "REDIS_TLS_KEY_FILE"},
		{"server name with unix://", with("unix:///run/redis.sock", "REDIS_TLS_SERVER_NAME", "x"), "REDIS_TLS_SERVER_NAME"},
		{"missing CA", with(tlsURL, "REDIS_TLS_CA_FILE", filepath.Join(dir, "nope.pem")), "REDIS_TLS_CA_FILE"},
		{"CA not PEM", with(tlsURL, "REDIS_TLS_CA_FILE", notPEM), "REDIS_TLS_CA_FILE"},
		{"cert without key", with(tlsURL, "REDIS_TLS_CERT_FILE", p.ClientCertFile), "REDIS_TLS_KEY_FILE"},
		{"key without cert", with(tlsURL, "REDIS_TLS_KEY_FILE", p.ClientKeyFile), "REDIS_TLS_CERT_FILE"},
		{"key does not match", with(tlsURL, "REDIS_TLS_CERT_FILE", p.ClientCertFile, "REDIS_TLS_KEY_FILE", p.ServerKeyFile), "REDIS_TLS_CERT_FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := fromMap(c.env)
			o := e.Redis()
			require.Nil(t, o)
			requireProblem(t, e.Err(), c.want)
			require.NotContains(t, e.Err().Error(), "x@h", "no piece of the user info")
		})
	}
}

// Whatever an operator writes in REDIS_URL, the problem reported never
// carries the password or a piece of it.
func FuzzRedisURLProblemsHideThePassword(f *testing.F) {
	for _, s := range []string{"", "pw", "p/w", "p@w", "p:w", "p?w", "p#w", `p"w`, "p w", "p%w", "p%2Fw", "p\x00w", "p/1", "1/0"} {
		f.Add("redis", s, "/0")
		f.Add("rediss", s, "/0?skip_verify=true")
	}
	f.Add("unix", "pw", "")
	f.Add("redis", "pw", "/0?db=XQ7")
	f.Add("redis", "@?", "0")
	f.Fuzz(func(t *testing.T, scheme, pw, tail string) {
		// Markers at both ends: no piece of the password may show.
		secret := "XQ7" + pw + "XQ8"
		if strings.Contains(scheme+tail, "XQ") {
			return
		}
		for _, host := range []string{"@h:6379", "@/run/redis.sock"} {
			e := fromMap(map[string]string{"REDIS_URL": scheme + "://fleet:" + secret + host + tail})
			e.Redis()
			if err := e.Err(); err != nil {
				require.NotContains(t, err.Error(), "XQ7")
				require.NotContains(t, err.Error(), "XQ8")
				require.NotContains(t, err.Error(), "\n")
			}
		}
	})
}
