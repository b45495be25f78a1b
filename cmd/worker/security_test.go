package main

// End-to-end checks of the secure transports through the real configuration
// path: environment → loadConfig → the options the worker builds its clients
// from (c.node.KafkaOpts for franz-go, c.redis for go-redis). Kafka is an
// in-process kfake cluster with TLS and SASL; Redis is a real redis-server
// with a TLS port and ACL users. Certificates are generated per test.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/internal/envconf/pkitest"
	"github.com/analysisfleet/analysisfleet/internal/testenv"
	"github.com/analysisfleet/analysisfleet/state"
)

const (
	secTopic    = "security-test"
	secUser     = "fleet"
	secPassword = "s3cret-K4fka-and-Redis"
	badPassword = "s3cret-but-wrong"
)

// requireCertError checks err is a failed verification of the server's
// certificate chain (not, say, a timeout).
func requireCertError(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	require.True(t, errors.As(err, &ua) || errors.As(err, &cv), "want a certificate verification error, got %T: %v", err, err)
}

// requireFast checks a failed attempt failed by itself, well before ctx's
// deadline: the client was refused, it did not give up waiting.
func requireFast(t *testing.T, ctx context.Context, err error) {
	t.Helper()
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "the attempt must fail, not time out: %v", err)
}

// ---- Kafka ----

// secureKafka starts a one-broker kfake cluster serving TLS only, with SASL
// on and one superuser with mech.
func secureKafka(t *testing.T, p *pkitest.PKI, mech string, clientAuth tls.ClientAuthType) string {
	t.Helper()
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.TLS(p.ServerTLS(clientAuth)),
		kfake.EnableSASL(),
		kfake.Superuser(mech, secUser, secPassword),
		kfake.SeedTopics(1, secTopic),
	)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return strings.Join(c.ListenAddrs(), ",")
}

// kafkaEnv is a full worker environment pointing at brokers with TLS
// trusting p's CA and SASL mech as the superuser.
func kafkaEnv(p *pkitest.PKI, brokers, mech string) map[string]string {
	env := baseEnv()
	env["KAFKA_BROKERS"] = brokers
	env["KAFKA_TLS"] = "true"
	env["KAFKA_TLS_CA_FILE"] = p.CAFile
	env["KAFKA_SASL_MECHANISM"] = mech
	env["KAFKA_SASL_USER"] = secUser
	env["KAFKA_SASL_PASSWORD"] = secPassword
	return env
}

// kafkaFromEnv loads the worker configuration and builds a franz-go client
// the way the node does: the configured security options plus the seeds.
func kafkaFromEnv(t *testing.T, env map[string]string, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := load(env)
	require.NoError(t, err)
	opts := append(append([]kgo.Opt{}, c.node.KafkaOpts...), kgo.SeedBrokers(c.node.Brokers...))
	cl, err := kgo.NewClient(append(opts, extra...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// kafkaPing makes one metadata request, with a deadline.
func kafkaPing(t *testing.T, cl *kgo.Client) (context.Context, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx, cl.Ping(ctx)
}

// kafkaPingFails pings with a client built from env the way the node builds
// one, checks the ping failed by itself (requireFast) and returns its error.
func kafkaPingFails(t *testing.T, env map[string]string) error {
	t.Helper()
	ctx, err := kafkaPing(t, kafkaFromEnv(t, env))
	requireFast(t, ctx, err)
	return err
}

// requireRoundTrip produces a record and consumes it back.
func requireRoundTrip(t *testing.T, env map[string]string) {
	t.Helper()
	cl := kafkaFromEnv(t, env, kgo.ConsumeTopics(secTopic), kgo.DefaultProduceTopic(secTopic))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	want := fmt.Sprintf("hello over %s/%s at %d", env["KAFKA_SASL_MECHANISM"], "TLS", time.Now().UnixNano())
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: []byte(want)}).FirstErr())
	for {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "the record did not come back")
		for _, e := range fs.Errors() {
			require.NoError(t, e.Err, "fetch %s/%d", e.Topic, e.Partition)
		}
		for _, r := range fs.Records() {
			if string(r.Value) == want {
				return
			}
		}
	}
}

func TestKafkaTLSAndSASLEndToEnd(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			brokers := secureKafka(t, p, mech, tls.NoClientCert)

			t.Run("produce and consume", func(t *testing.T) {
				t.Parallel()
				requireRoundTrip(t, kafkaEnv(p, brokers, mech))
			})
			t.Run("password from a file", func(t *testing.T) {
				t.Parallel()
				f := filepath.Join(t.TempDir(), "kafka-password")
				require.NoError(t, os.WriteFile(f, []byte(secPassword+"\n"), 0o600))
				env := kafkaEnv(p, brokers, mech)
				delete(env, "KAFKA_SASL_PASSWORD")
				env["KAFKA_SASL_PASSWORD_FILE"] = f
				requireRoundTrip(t, env)
			})
			t.Run("server name override", func(t *testing.T) {
				t.Parallel()
				env := kafkaEnv(p, brokers, mech)
				env["KAFKA_TLS_SERVER_NAME"] = pkitest.ServerName
				_, err := kafkaPing(t, kafkaFromEnv(t, env))
				require.NoError(t, err)

				env["KAFKA_TLS_SERVER_NAME"] = "kafka.elsewhere.test"
				err = kafkaPingFails(t, env)
				var he x509.HostnameError
				require.ErrorAs(t, err, &he, "the override is the name checked")
			})
			t.Run("wrong password", func(t *testing.T) {
				t.Parallel()
				env := kafkaEnv(p, brokers, mech)
				env["KAFKA_SASL_PASSWORD"] = badPassword
				err := kafkaPingFails(t, env)
				require.NotContains(t, err.Error(), badPassword)
			})
			t.Run("wrong user", func(t *testing.T) {
				t.Parallel()
				env := kafkaEnv(p, brokers, mech)
				env["KAFKA_SASL_USER"] = "intruder"
				kafkaPingFails(t, env)
			})
			t.Run("no SASL", func(t *testing.T) {
				t.Parallel()
				env := kafkaEnv(p, brokers, mech)
				delete(env, "KAFKA_SASL_MECHANISM")
				err := kafkaPingFails(t, env)
				var eof *kgo.ErrFirstReadEOF
				require.ErrorAs(t, err, &eof)
				require.ErrorContains(t, err, "SASL")
			})
		})
	}

	brokers := secureKafka(t, p, "SCRAM-SHA-512", tls.NoClientCert)
	t.Run("TLS without the CA", func(t *testing.T) {
		t.Parallel()
		env := kafkaEnv(p, brokers, "SCRAM-SHA-512")
		delete(env, "KAFKA_TLS_CA_FILE")
		err := kafkaPingFails(t, env)
		requireCertError(t, err)
	})
	t.Run("TLS with another CA", func(t *testing.T) {
		t.Parallel()
		env := kafkaEnv(p, brokers, "SCRAM-SHA-512")
		env["KAFKA_TLS_CA_FILE"] = p.OtherCAFile
		err := kafkaPingFails(t, env)
		requireCertError(t, err)
	})
	t.Run("plaintext client", func(t *testing.T) {
		t.Parallel()
		env := kafkaEnv(p, brokers, "SCRAM-SHA-512")
		delete(env, "KAFKA_TLS")
		delete(env, "KAFKA_TLS_CA_FILE")
		err := kafkaPingFails(t, env)
		var eof *kgo.ErrFirstReadEOF
		require.ErrorAs(t, err, &eof)
		require.ErrorContains(t, err, "TLS")
		require.NotContains(t, err.Error(), secPassword)
	})
}

func TestKafkaMutualTLSEndToEnd(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	brokers := secureKafka(t, p, "SCRAM-SHA-256", tls.RequireAndVerifyClientCert)
	t.Run("with the client certificate", func(t *testing.T) {
		t.Parallel()
		env := kafkaEnv(p, brokers, "SCRAM-SHA-256")
		env["KAFKA_TLS_CERT_FILE"] = p.ClientCertFile
		env["KAFKA_TLS_KEY_FILE"] = p.ClientKeyFile
		requireRoundTrip(t, env)
	})
	t.Run("without", func(t *testing.T) {
		t.Parallel()
		err := kafkaPingFails(t, kafkaEnv(p, brokers, "SCRAM-SHA-256"))
		require.ErrorContains(t, err, "certificate required")
	})
}

// ---- Redis ----

// secureRedis is a redis-server of the test's own, listening only on a TLS
// port on 127.0.0.1, with the default user off and one ACL user.
type secureRedis struct {
	addr string
	log  string
}

// redisACL is the ACL of the fleet's user: its namespaces only (the default
// one and the tests' t…), no dangerous commands.
const redisACL = "user " + secUser + " on >" + secPassword + " ~{analysisfleet}* ~{t*}* resetchannels +@all -@dangerous"

// startSecureRedis starts the server (retrying on another port if the one
// picked was taken meanwhile) and waits until the fleet user can PING it.
// authClients is redis's tls-auth-clients: "optional" or "yes".
func startSecureRedis(t *testing.T, p *pkitest.PKI, authClients string) *secureRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	require.NoError(t, err, "install the Debian package redis-server")
	var lastErr error
	for range 3 {
		r, err := tryStartSecureRedis(t, bin, p, authClients)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatal(lastErr)
	return nil
}

func tryStartSecureRedis(t *testing.T, bin string, p *pkitest.PKI, authClients string) (*secureRedis, error) {
	dir := t.TempDir()
	port := freePort(t)
	r := &secureRedis{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), log: filepath.Join(dir, "redis.log")}
	conf := strings.Join([]string{
		"port 0",
		"bind 127.0.0.1",
		"tls-port " + strconv.Itoa(port),
		"tls-cert-file " + p.ServerCertFile,
		"tls-key-file " + p.ServerKeyFile,
		"tls-ca-cert-file " + p.CAFile,
		"tls-auth-clients " + authClients,
		"save \"\"",
		"appendonly no",
		"dir " + dir,
		"logfile " + r.log,
		"maxmemory-policy noeviction",
		"user default off",
		redisACL,
	}, "\n") + "\n"
	cf := filepath.Join(dir, "redis.conf")
	require.NoError(t, os.WriteFile(cf, []byte(conf), 0o600))

	cmd := exec.Command(bin, cf)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	// Ready when the fleet user gets PONG over TLS with the right CA and,
	// if required, the client certificate.
	tc := &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12, RootCAs: x509.NewCertPool()}
	ca, err := os.ReadFile(p.CAFile)
	require.NoError(t, err)
	tc.RootCAs.AppendCertsFromPEM(ca)
	pair, err := tls.LoadX509KeyPair(p.ClientCertFile, p.ClientKeyFile)
	require.NoError(t, err)
	tc.Certificates = []tls.Certificate{pair}
	cl := redis.NewClient(&redis.Options{Addr: r.addr, Username: secUser, Password: secPassword, TLSConfig: tc, MaxRetries: -1})
	defer cl.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			return nil, fmt.Errorf("redis-server exited (%v): %s", err, r.tail())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := cl.Ping(ctx).Err()
		cancel()
		if err == nil {
			t.Cleanup(stop)
			return r, nil
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("redis-server did not answer: %v: %s", err, r.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *secureRedis) tail() string {
	b, _ := os.ReadFile(r.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// redisEnv is a full worker environment with REDIS_URL on the TLS port as
// the fleet user, trusting p's CA.
func (r *secureRedis) env(p *pkitest.PKI, password string) map[string]string {
	env := baseEnv()
	env["REDIS_URL"] = "rediss://" + secUser + ":" + password + "@" + r.addr + "/0"
	env["REDIS_TLS_CA_FILE"] = p.CAFile
	return env
}

// redisFromEnv loads the worker configuration and builds the go-redis
// client the way the worker does.
func redisFromEnv(t *testing.T, env map[string]string) (*redis.Client, *config) {
	t.Helper()
	c, err := load(env)
	require.NoError(t, err)
	require.NotNil(t, c.redis.Server.TLSConfig, "rediss:// means TLS")
	rdb := redis.NewClient(c.redis.Server)
	t.Cleanup(func() { rdb.Close() })
	return rdb, c
}

// redisReachable is redisFromEnv for a Redis the client must reach (a
// PING answered).
func redisReachable(t *testing.T, env map[string]string) (*redis.Client, *config) {
	t.Helper()
	rdb, c := redisFromEnv(t, env)
	_, err := redisPing(t, rdb)
	require.NoError(t, err)
	return rdb, c
}

func redisPing(t *testing.T, rdb redis.UniversalClient) (context.Context, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx, rdb.Ping(ctx).Err()
}

// redisPingFails pings with a client built from env (redisFromEnv), checks
// the ping failed by itself (requireFast) and returns its error.
func redisPingFails(t *testing.T, env map[string]string) error {
	t.Helper()
	rdb, _ := redisFromEnv(t, env)
	ctx, err := redisPing(t, rdb)
	requireFast(t, ctx, err)
	return err
}

// requireLedgerRoundTrip does what a worker does with the ledger at start
// and for one job (load the scripts, epoch, admit, renew, checkpoint, read
// back) through a state.Store over rdb, in a fresh namespace.
func requireLedgerRoundTrip(t *testing.T, rdb redis.UniversalClient, c *config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := state.New(rdb, state.Config{Namespace: testenv.Namespace(t), LeaseTTL: c.leaseTTL})
	require.NoError(t, err)
	require.NoError(t, st.Load(ctx))
	epoch, err := st.Epoch(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, epoch)
	w1, _, err := st.OpenSession(ctx, "w1")
	require.NoError(t, err)
	w2, _, err := st.OpenSession(ctx, "w2")
	require.NoError(t, err)
	res, _, err := st.Admit(ctx, w1, []state.AdmitRequest{{ID: "job-1", Msg: []byte(`{"id":"job-1"}`), Source: secTopic + "/0@1"}})
	require.NoError(t, err)
	require.Len(t, res, 1)
	require.Equal(t, state.Admitted, res[0].Outcome)
	again, _, err := st.Admit(ctx, w2, []state.AdmitRequest{{ID: "job-1", Msg: []byte(`{"id":"job-1"}`)}})
	require.NoError(t, err)
	require.Equal(t, state.Running, again[0].Outcome, "held by w1")
	rr, err := st.Renew(ctx, w1, 1)
	require.NoError(t, err)
	require.True(t, rr.Alive)
	require.Equal(t, epoch, rr.Epoch)
	require.NoError(t, st.Checkpoint(ctx, w1, res[0].Lease, "step", "1"))
	rec, err := st.Get(ctx, "job-1")
	require.NoError(t, err)
	require.Equal(t, "w1", rec.Owner)
	require.Equal(t, "1", rec.Fields["step"])
	sum, err := st.LeaseSummary(ctx, time.Minute, 10)
	require.NoError(t, err)
	require.Equal(t, int64(1), sum.Held)
	hist, _, err := st.LeaseHistory(ctx, "", 10)
	require.NoError(t, err)
	require.NotEmpty(t, hist)
}

func TestRedisTLSAndACLEndToEnd(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	r := startSecureRedis(t, p, "optional")

	t.Run("ping and ledger", func(t *testing.T) {
		t.Parallel()
		rdb, c := redisReachable(t, r.env(p, secPassword))
		requireLedgerRoundTrip(t, rdb, c)
	})
	t.Run("the ACL is in force", func(t *testing.T) {
		t.Parallel()
		rdb, _ := redisFromEnv(t, r.env(p, secPassword))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := rdb.Set(ctx, "outside:the:namespace", "x", 0).Err()
		require.ErrorContains(t, err, "NOPERM")
		require.ErrorContains(t, rdb.FlushAll(ctx).Err(), "NOPERM")
	})
	t.Run("URL from a file", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		f := filepath.Join(t.TempDir(), "redis-url")
		require.NoError(t, os.WriteFile(f, []byte(env["REDIS_URL"]+"\n"), 0o600))
		delete(env, "REDIS_URL")
		env["REDIS_URL_FILE"] = f
		rdb, c := redisReachable(t, env)
		requireLedgerRoundTrip(t, rdb, c)
	})
	t.Run("client certificate offered", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_TLS_CERT_FILE"] = p.ClientCertFile
		env["REDIS_TLS_KEY_FILE"] = p.ClientKeyFile
		redisReachable(t, env)
	})
	t.Run("server name override", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_TLS_SERVER_NAME"] = pkitest.ServerName
		redisReachable(t, env)

		env["REDIS_TLS_SERVER_NAME"] = "redis.elsewhere.test"
		err := redisPingFails(t, env)
		var he x509.HostnameError
		require.ErrorAs(t, err, &he, "the override is the name checked")
	})
	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		err := redisPingFails(t, r.env(p, badPassword))
		require.ErrorContains(t, err, "WRONGPASS")
		require.NotContains(t, err.Error(), badPassword)
		require.NotContains(t, err.Error(), secPassword)
	})
	t.Run("default user is off", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_URL"] = "rediss://" + r.addr + "/0"
		err := redisPingFails(t, env)
		require.ErrorContains(t, err, "NOAUTH")
	})
	t.Run("without the CA", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		delete(env, "REDIS_TLS_CA_FILE")
		err := redisPingFails(t, env)
		requireCertError(t, err)
		require.NotContains(t, err.Error(), secPassword)
	})
	t.Run("with another CA", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_TLS_CA_FILE"] = p.OtherCAFile
		err := redisPingFails(t, env)
		requireCertError(t, err)
	})
	t.Run("plaintext client", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_URL"] = "redis://" + secUser + ":" + secPassword + "@" + r.addr + "/0"
		delete(env, "REDIS_TLS_CA_FILE")
		c, err := load(env)
		require.NoError(t, err)
		opts := *c.redis.Server
		opts.MaxRetries = -1
		rdb := redis.NewClient(&opts)
		t.Cleanup(func() { rdb.Close() })
		// The TLS port closes the connection on a plaintext PING.
		ctx, err := redisPing(t, rdb)
		requireFast(t, ctx, err)
		require.NotContains(t, err.Error(), secPassword)
	})
}

func TestRedisMutualTLSEndToEnd(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	r := startSecureRedis(t, p, "yes")
	t.Run("with the client certificate", func(t *testing.T) {
		t.Parallel()
		env := r.env(p, secPassword)
		env["REDIS_TLS_CERT_FILE"] = p.ClientCertFile
		env["REDIS_TLS_KEY_FILE"] = p.ClientKeyFile
		rdb, c := redisReachable(t, env)
		requireLedgerRoundTrip(t, rdb, c)
	})
	t.Run("without", func(t *testing.T) {
		t.Parallel()
		err := redisPingFails(t, r.env(p, secPassword))
		require.ErrorContains(t, err, "certificate required")
		require.NotContains(t, err.Error(), secPassword)
	})
}
