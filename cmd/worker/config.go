package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/consumer"
	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/state"
	"github.com/analysisfleet/analysisfleet/worker"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// config is the worker's whole configuration, read from the environment
// contract of DESIGN.md (plus a few documented extras).
type config struct {
	node     node.Config
	redis    *redis.Options
	ns       string
	leaseTTL time.Duration
	logLevel zapcore.Level
	insecure bool

	sampledb sampledb.Config
	download httpc.DownloadConfig
	vendors  []vendorConfig
}

// vendorConfig builds one driver once the store (for fleet rate limits) exists.
type vendorConfig struct {
	kind  string
	rate  float64
	burst int
	// key names the credential for the fleet-wide limiter (hashed: no
	// credential material in Redis keys).
	key   string
	build func(lim httpc.Limiter, dl *httpc.Downloader) (edr.Driver, error)
}

func userAgent(workerID string) string {
	return fmt.Sprintf("analysisfleet/%s (%s)", version, workerID)
}

// loadConfig reads and validates the environment. The error names the
// variable.
func loadConfig(e *env) (*config, error) {
	c := &config{}
	c.insecure = e.boolean("INSECURE_HTTP", false)
	workerID := e.str("WORKER_ID", hostname())
	ua := userAgent(workerID)

	// Kafka.
	brokers := e.list("KAFKA_BROKERS", nil)
	if len(brokers) == 0 {
		e.fail("KAFKA_BROKERS", "is required (comma-separated host:port list)")
	}
	topics := e.list("KAFKA_TOPICS", consumer.DefaultTopics)
	regex := e.str("KAFKA_TOPIC_REGEX", "")
	dlq, noDLQ := e.optional("KAFKA_DLQ_TOPIC", consumer.DefaultDLQTopic)
	res, noRes := e.optional("KAFKA_RESULT_TOPIC", consumer.DefaultResultTopic)
	kopts, err := kafkaSecurity(e)
	if err != nil {
		return nil, err
	}
	c.node = node.Config{
		WorkerID: workerID, Brokers: brokers, Topics: topics, TopicRegex: regex,
		Group:    e.str("KAFKA_GROUP", consumer.DefaultGroup),
		DLQTopic: dlq, NoDLQ: noDLQ, ResultTopic: res, NoResults: noRes,
		MaxMessageBytes:   e.integer("MAX_MESSAGE_BYTES", consumer.DefaultMaxMessageBytes, 1024, 64<<20),
		SessionTimeout:    e.duration("KAFKA_SESSION_TIMEOUT", consumer.DefaultSessionTimeout, 6*time.Second, 30*time.Minute),
		KafkaOpts:         kopts,
		MaxInflight:       e.integer("MAX_INFLIGHT", worker.DefaultMaxInflight, 1, 100000),
		JobTimeout:        e.duration("JOB_TIMEOUT", worker.DefaultJobTimeout, time.Second, 30*24*time.Hour),
		AbortPollInterval: e.duration("ABORT_POLL_INTERVAL", worker.DefaultAbortPollInterval, 100*time.Millisecond, time.Hour),
		DrainTimeout:      e.duration("DRAIN_TIMEOUT", worker.DefaultDrainTimeout, 0, 10*time.Minute),
		HTTPAddr:          e.str("HTTP_ADDR", ":8080"),
	}
	if p := e.str("PLAYBOOK_FILE", ""); p != "" {
		pb, err := worker.LoadPlaybook(p)
		if err != nil {
			e.fail("PLAYBOOK_FILE", "%v", err)
		}
		c.node.Playbook = pb
	}

	// Redis.
	c.ns = e.str("REDIS_NAMESPACE", state.DefaultNamespace)
	c.leaseTTL = e.duration("LEASE_TTL", state.DefaultLeaseTTL, time.Second, 10*time.Minute)
	if redisURL := e.requiredSecret("REDIS_URL"); redisURL != "" {
		opts, err := redis.ParseURL(redisURL)
		if err != nil {
			e.fail("REDIS_URL", "not a redis://, rediss:// or unix:// URL (%s)", scrubRedisErr(err, redisURL))
		}
		c.redis = opts
	}

	// SampleDB.
	c.sampledb = sampledb.Config{
		URL:       e.httpURL("SAMPLEDB_URL", e.required("SAMPLEDB_URL"), c.insecure),
		APIKey:    e.requiredSecret("SAMPLEDB_API_KEY"),
		UserAgent: ua,
		// The runner re-checks the lease between attempts: keep each call's
		// own retrying short.
		MaxElapsed: 30 * time.Second,
	}

	// Downloads of pre-signed URLs.
	c.download = httpc.DownloadConfig{
		Hosts: e.list("DOWNLOAD_HOSTS", []string{".amazonaws.com"}), Insecure: c.insecure,
		UserAgent: ua, MaxBody: 512 << 20, Timeout: 10 * time.Minute,
	}

	c.vendors = vendors(e, ua, c.insecure)

	lvl, lerr := zapcore.ParseLevel(e.str("LOG_LEVEL", "info"))
	if lerr != nil {
		e.fail("LOG_LEVEL", "%q is not one of debug, info, warn, error", e.str("LOG_LEVEL", ""))
	}
	c.logLevel = lvl
	if e.err != nil {
		return nil, e.err
	}
	if len(c.vendors) == 0 {
		return nil, fmt.Errorf("no EDR vendor configured: set CBC_*, CBLR_*, CYTOMIC_* or SOPHOS_* (see README)")
	}
	return c, nil
}

// vendors reads each vendor's group of variables: all unset = vendor off;
// partly set = an error naming the missing variable.
func vendors(e *env, ua string, insecure bool) []vendorConfig {
	var out []vendorConfig
	group := func(prefix string, names ...string) bool {
		any := false
		for _, n := range names {
			if v, _ := e.raw(n); v != "" {
				any = true
			}
			if v, _ := e.raw(n + "_FILE"); v != "" {
				any = true
			}
		}
		return any
	}
	if group("CBC", "CBC_URL", "CBC_ORG_KEY", "CBC_API_ID", "CBC_API_SECRET") {
		url := e.httpURL("CBC_URL", e.required("CBC_URL"), insecure)
		org, id, secret := e.required("CBC_ORG_KEY"), e.required("CBC_API_ID"), e.requiredSecret("CBC_API_SECRET")
		out = append(out, vendorConfig{
			kind: edr.KindCBCEventExport, key: "cbc:" + digest(org+"/"+id),
			rate: e.float("CBC_RATE_LIMIT", 20, 0, 10000), burst: e.integer("CBC_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, dl *httpc.Downloader) (edr.Driver, error) {
				return cbc.New(cbc.Config{URL: url, OrgKey: org, APIID: id, APISecret: secret,
					UserAgent: ua, Limiter: lim, Downloader: dl})
			},
		})
	}
	if group("CBLR", "CBLR_URL", "CBLR_API_TOKEN") {
		url := e.httpURL("CBLR_URL", e.required("CBLR_URL"), insecure)
		token := e.requiredSecret("CBLR_API_TOKEN")
		every := e.duration("CBLR_POLL_INTERVAL", 0, 10*time.Millisecond, 10*time.Minute)
		out = append(out, vendorConfig{
			kind: edr.KindCBLRTriage, key: "cblr:" + digest(url+"/"+token),
			rate: e.float("CBLR_RATE_LIMIT", 20, 0, 10000), burst: e.integer("CBLR_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, _ *httpc.Downloader) (edr.Driver, error) {
				return cblr.New(cblr.Config{URL: url, APIToken: token, UserAgent: ua, Limiter: lim, PollInterval: every})
			},
		})
	}
	if group("CYTOMIC", "CYTOMIC_URL", "CYTOMIC_TOKEN_URL", "CYTOMIC_USER", "CYTOMIC_PASSWORD", "CYTOMIC_CLIENT_IDS") {
		url := e.httpURL("CYTOMIC_URL", e.required("CYTOMIC_URL"), insecure)
		tokenURL := e.httpURL("CYTOMIC_TOKEN_URL", e.required("CYTOMIC_TOKEN_URL"), insecure)
		user, pass := e.required("CYTOMIC_USER"), e.requiredSecret("CYTOMIC_PASSWORD")
		clients := e.list("CYTOMIC_CLIENT_IDS", nil)
		round := e.duration("CYTOMIC_ROUND", 0, 10*time.Millisecond, 10*time.Minute)
		ttl := e.duration("CYTOMIC_TTL", 0, time.Second, 7*24*time.Hour)
		if len(clients) == 0 {
			e.fail("CYTOMIC_CLIENT_IDS", "is required (comma-separated client IDs)")
		}
		out = append(out, vendorConfig{
			kind: edr.KindCytomicOSQuery, key: "cytomic:" + digest(url+"/"+user),
			rate: e.float("CYTOMIC_RATE_LIMIT", 10, 0, 10000), burst: e.integer("CYTOMIC_RATE_BURST", 3, 1, 1000),
			build: func(lim httpc.Limiter, dl *httpc.Downloader) (edr.Driver, error) {
				return cytomic.New(cytomic.Config{URL: url, TokenURL: tokenURL, User: user, Password: pass,
					ClientIDs: clients, Round: round, TTL: ttl, UserAgent: ua, Limiter: lim, Downloader: dl})
			},
		})
	}
	if group("SOPHOS", "SOPHOS_URL", "SOPHOS_AUTH_URL", "SOPHOS_CLIENT_ID", "SOPHOS_CLIENT_SECRET", "SOPHOS_TENANT_ID") {
		url := e.httpURL("SOPHOS_URL", e.required("SOPHOS_URL"), insecure)
		auth := e.httpURL("SOPHOS_AUTH_URL", e.required("SOPHOS_AUTH_URL"), insecure)
		id, secret, tenant := e.required("SOPHOS_CLIENT_ID"), e.requiredSecret("SOPHOS_CLIENT_SECRET"), e.required("SOPHOS_TENANT_ID")
		every := e.duration("SOPHOS_POLL_INTERVAL", 0, 10*time.Millisecond, 10*time.Minute)
		out = append(out, vendorConfig{
			kind: edr.KindSophosXDR, key: "sophos:" + digest(tenant+"/"+id),
			rate: e.float("SOPHOS_RATE_LIMIT", 1.5, 0, 10000), burst: e.integer("SOPHOS_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, _ *httpc.Downloader) (edr.Driver, error) {
				return sophos.New(sophos.Config{URL: url, AuthURL: auth, ClientID: id, ClientSecret: secret,
					TenantID: tenant, PollEvery: every, UserAgent: ua, Limiter: lim})
			},
		})
	}
	return out
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// kafkaSecurity reads KAFKA_TLS* and KAFKA_SASL_*.
func kafkaSecurity(e *env) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if e.boolean("KAFKA_TLS", false) {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: e.str("KAFKA_TLS_SERVER_NAME", "")}
		if ca := e.str("KAFKA_TLS_CA_FILE", ""); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				e.fail("KAFKA_TLS_CA_FILE", "cannot read: %v", errNoPath(err))
			} else {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					e.fail("KAFKA_TLS_CA_FILE", "no PEM certificates in the file")
				}
				tc.RootCAs = pool
			}
		}
		cert, key := e.str("KAFKA_TLS_CERT_FILE", ""), e.str("KAFKA_TLS_KEY_FILE", "")
		if (cert == "") != (key == "") {
			e.fail("KAFKA_TLS_CERT_FILE", "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together")
		} else if cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				e.fail("KAFKA_TLS_CERT_FILE", "cannot load the client certificate: %v", errNoPath(err))
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	mech := strings.ToUpper(e.str("KAFKA_SASL_MECHANISM", ""))
	if mech != "" {
		user, pass := e.required("KAFKA_SASL_USER"), e.requiredSecret("KAFKA_SASL_PASSWORD")
		switch mech {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
		default:
			e.fail("KAFKA_SASL_MECHANISM", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mech)
		}
	}
	return opts, e.err
}

func scrubRedisErr(err error, url string) string {
	s := err.Error()
	return strings.ReplaceAll(s, url, "<REDIS_URL>")
}

func newLogger(level zapcore.Level) *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.Sampling = nil
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
