package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/consumer"
	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/redact"
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
	// failpoints arms internal/failpoint (fault-injection tests only).
	failpoints string

	sampledb sampledb.Config
	download httpc.DownloadConfig
	vendors  []vendorConfig
	// secrets are every credential read, in all their wire forms: the
	// logger and the runner mask them (internal/redact).
	secrets *redact.Set
}

// vendorConfig builds one driver once the store (for fleet rate limits) exists.
type vendorConfig struct {
	kind  string
	rate  float64
	burst int
	// key names the credential for the fleet-wide limiter (hashed: no
	// credential material in Redis keys).
	key   string
	build func(lim httpc.Limiter, dl *httpc.Downloader, tr http.RoundTripper, log *zap.Logger) (edr.Driver, error)
}

func userAgent(workerID string) string {
	return fmt.Sprintf("analysisfleet/%s (%s)", version, workerID)
}

// loadConfig reads and validates the environment. The error names the
// variable.
func loadConfig(e *envconf.Env) (*config, error) {
	c := &config{}
	c.insecure = e.Bool("INSECURE_HTTP", false)
	workerID := e.Str("WORKER_ID", envconf.Hostname())
	ua := userAgent(workerID)

	// Kafka.
	brokers := e.List("KAFKA_BROKERS", nil)
	if len(brokers) == 0 {
		e.Fail("KAFKA_BROKERS", "is required (comma-separated host:port list)")
	}
	topics := e.List("KAFKA_TOPICS", consumer.DefaultTopics)
	regex := e.Str("KAFKA_TOPIC_REGEX", "")
	dlq, noDLQ := e.Optional("KAFKA_DLQ_TOPIC", consumer.DefaultDLQTopic)
	res, noRes := e.Optional("KAFKA_RESULT_TOPIC", consumer.DefaultResultTopic)
	kopts, err := e.KafkaSecurity()
	if err != nil {
		return nil, err
	}
	c.node = node.Config{
		WorkerID: workerID, Brokers: brokers, Topics: topics, TopicRegex: regex,
		Group:    e.Str("KAFKA_GROUP", consumer.DefaultGroup),
		DLQTopic: dlq, NoDLQ: noDLQ, ResultTopic: res, NoResults: noRes,
		MaxMessageBytes:   e.Int("MAX_MESSAGE_BYTES", consumer.DefaultMaxMessageBytes, 1024, 64<<20),
		SessionTimeout:    e.Duration("KAFKA_SESSION_TIMEOUT", consumer.DefaultSessionTimeout, 6*time.Second, 30*time.Minute),
		KafkaOpts:         kopts,
		MaxInflight:       e.Int("MAX_INFLIGHT", worker.DefaultMaxInflight, 1, 100000),
		JobTimeout:        e.Duration("JOB_TIMEOUT", worker.DefaultJobTimeout, time.Second, 30*24*time.Hour),
		AbortPollInterval: e.Duration("ABORT_POLL_INTERVAL", worker.DefaultAbortPollInterval, 100*time.Millisecond, time.Hour),
		DrainTimeout:      e.Duration("DRAIN_TIMEOUT", worker.DefaultDrainTimeout, 0, 10*time.Minute),
		PollMin:           e.Duration("POLL_INTERVAL_MIN", worker.DefaultPollMin, time.Millisecond, time.Hour),
		PollMax:           e.Duration("POLL_INTERVAL_MAX", worker.DefaultPollMax, time.Millisecond, 24*time.Hour),
		ClaimInterval:     e.Duration("CLAIM_INTERVAL", worker.DefaultClaimInterval, 10*time.Millisecond, 10*time.Minute),
		RetryMin:          e.Duration("RETRY_BACKOFF_MIN", worker.DefaultRetryMin, time.Millisecond, time.Hour),
		RetryMax:          e.Duration("RETRY_BACKOFF_MAX", worker.DefaultRetryMax, time.Millisecond, 24*time.Hour),
		StartConcurrency:  e.Int("START_CONCURRENCY", worker.DefaultStartConcurrency, 1, 10000),
		ReconcileInterval: e.Duration("RECONCILE_INTERVAL", worker.DefaultReconcileInterval, time.Second, 24*time.Hour),
		HTTPAddr:          e.Str("HTTP_ADDR", ":8080"),
	}
	if p := e.Str("PLAYBOOK_FILE", ""); p != "" {
		pb, err := worker.LoadPlaybook(p)
		if err != nil {
			e.Fail("PLAYBOOK_FILE", "%v", err)
		}
		c.node.Playbook = pb
	}

	// Redis.
	c.ns = e.Str("REDIS_NAMESPACE", state.DefaultNamespace)
	c.leaseTTL = e.Duration("LEASE_TTL", state.DefaultLeaseTTL, time.Second, 10*time.Minute)
	c.redis = e.Redis()

	// SampleDB.
	c.sampledb = sampledb.Config{
		URL:       e.URL("SAMPLEDB_URL", e.Required("SAMPLEDB_URL"), c.insecure),
		APIKey:    e.RequiredSecret("SAMPLEDB_API_KEY"),
		UserAgent: ua,
		// The runner re-checks the lease between attempts: keep each call's
		// own retrying short.
		MaxElapsed: 30 * time.Second,
	}

	// Downloads of pre-signed URLs.
	c.download = httpc.DownloadConfig{
		Hosts: e.List("DOWNLOAD_HOSTS", []string{".amazonaws.com"}), Insecure: c.insecure,
		UserAgent: ua, MaxBody: 512 << 20, Timeout: 10 * time.Minute,
	}

	c.vendors = vendors(e, ua, c.insecure)

	lvl, lerr := zapcore.ParseLevel(e.Str("LOG_LEVEL", "info"))
	if lerr != nil {
		e.Fail("LOG_LEVEL", "%q is not one of debug, info, warn, error", e.Str("LOG_LEVEL", ""))
	}
	c.logLevel = lvl
	c.failpoints = e.Str("ANALYSISFLEET_FAILPOINTS", "")
	if err := e.Err(); err != nil {
		return nil, err
	}
	c.secrets = redact.New(e.Secrets()...)
	for _, v := range []string{"SOPHOS", "CYTOMIC"} {
		if id, secret := e.Str(v+"_CLIENT_ID", ""), e.Secret(v+"_CLIENT_SECRET"); secret != "" {
			c.secrets.AddBasic(id, secret)
		}
	}
	c.node.Redact = c.secrets
	if len(c.vendors) == 0 {
		return nil, fmt.Errorf("no EDR vendor configured: set CBC_*, CBLR_*, CYTOMIC_* or SOPHOS_* (see README)")
	}
	return c, nil
}

// vendors reads each vendor's group of variables: all unset = vendor off;
// partly set = an error naming the missing variable.
func vendors(e *envconf.Env, ua string, insecure bool) []vendorConfig {
	var out []vendorConfig
	group := func(prefix string, names ...string) bool {
		any := false
		for _, n := range names {
			if v, _ := e.Raw(n); v != "" {
				any = true
			}
			if v, _ := e.Raw(n + "_FILE"); v != "" {
				any = true
			}
		}
		return any
	}
	if group("CBC", "CBC_URL", "CBC_ORG_KEY", "CBC_API_ID", "CBC_API_SECRET") {
		url := e.URL("CBC_URL", e.Required("CBC_URL"), insecure)
		org, id, secret := e.Required("CBC_ORG_KEY"), e.Required("CBC_API_ID"), e.RequiredSecret("CBC_API_SECRET")
		out = append(out, vendorConfig{
			kind: edr.KindCBCEventExport, key: "cbc:" + digest(org+"/"+id),
			rate: e.Float("CBC_RATE_LIMIT", 20, 0, 10000), burst: e.Int("CBC_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, dl *httpc.Downloader, tr http.RoundTripper, log *zap.Logger) (edr.Driver, error) {
				return cbc.New(cbc.Config{URL: url, OrgKey: org, APIID: id, APISecret: secret,
					UserAgent: ua, Limiter: lim, Downloader: dl, Transport: tr, Logger: log})
			},
		})
	}
	if group("CBLR", "CBLR_URL", "CBLR_API_TOKEN") {
		url := e.URL("CBLR_URL", e.Required("CBLR_URL"), insecure)
		token := e.RequiredSecret("CBLR_API_TOKEN")
		every := e.Duration("CBLR_POLL_INTERVAL", 0, 10*time.Millisecond, 10*time.Minute)
		out = append(out, vendorConfig{
			kind: edr.KindCBLRTriage, key: "cblr:" + digest(url+"/"+token),
			rate: e.Float("CBLR_RATE_LIMIT", 20, 0, 10000), burst: e.Int("CBLR_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, _ *httpc.Downloader, tr http.RoundTripper, log *zap.Logger) (edr.Driver, error) {
				return cblr.New(cblr.Config{URL: url, APIToken: token, UserAgent: ua, Limiter: lim, PollInterval: every, Transport: tr, Logger: log})
			},
		})
	}
	if group("CYTOMIC", "CYTOMIC_URL", "CYTOMIC_TOKEN_URL", "CYTOMIC_USER", "CYTOMIC_PASSWORD", "CYTOMIC_CLIENT_IDS",
		"CYTOMIC_CLIENT_ID", "CYTOMIC_CLIENT_SECRET") {
		url := e.URL("CYTOMIC_URL", e.Str("CYTOMIC_URL", cytomic.DefaultURL), insecure)
		tokenURL := e.URL("CYTOMIC_TOKEN_URL", e.Str("CYTOMIC_TOKEN_URL", cytomic.DefaultTokenURL), insecure)
		user, pass := e.Required("CYTOMIC_USER"), e.RequiredSecret("CYTOMIC_PASSWORD")
		clientID, clientSecret := e.Str("CYTOMIC_CLIENT_ID", ""), e.Secret("CYTOMIC_CLIENT_SECRET")
		if (clientID == "") != (clientSecret == "") {
			e.Fail("CYTOMIC_CLIENT_ID", "set CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET together (the OAuth client's Basic credentials)")
		}
		scope := e.Str("CYTOMIC_SCOPE", "")
		prefix := e.Str("CYTOMIC_API_PREFIX", "")
		field := e.Str("CYTOMIC_CLIENTS_FIELD", "")
		var unit time.Duration
		switch u := e.Str("CYTOMIC_TTL_UNIT", "minutes"); u {
		case "minutes":
			unit = time.Minute
		case "seconds":
			unit = time.Second
		default:
			e.Fail("CYTOMIC_TTL_UNIT", "%q is not minutes or seconds", u)
		}
		clients := e.List("CYTOMIC_CLIENT_IDS", nil)
		round := e.Duration("CYTOMIC_ROUND", 0, 10*time.Millisecond, 10*time.Minute)
		ttl := e.Duration("CYTOMIC_TTL", 0, time.Minute, 7*24*time.Hour)
		if len(clients) == 0 {
			e.Fail("CYTOMIC_CLIENT_IDS", "is required (comma-separated client IDs)")
		}
		out = append(out, vendorConfig{
			kind: edr.KindCytomicOSQuery, key: "cytomic:" + digest(url+"/"+user),
			rate: e.Float("CYTOMIC_RATE_LIMIT", 10, 0, 10000), burst: e.Int("CYTOMIC_RATE_BURST", 3, 1, 1000),
			build: func(lim httpc.Limiter, dl *httpc.Downloader, tr http.RoundTripper, log *zap.Logger) (edr.Driver, error) {
				return cytomic.New(cytomic.Config{URL: url, TokenURL: tokenURL, User: user, Password: pass,
					ClientID: clientID, ClientSecret: clientSecret, Scope: scope, APIPrefix: prefix, ClientsField: field, TTLUnit: unit,
					ClientIDs: clients, Round: round, TTL: ttl, UserAgent: ua, Limiter: lim, Downloader: dl, Transport: tr, Logger: log})
			},
		})
	}
	if group("SOPHOS", "SOPHOS_URL", "SOPHOS_AUTH_URL", "SOPHOS_CLIENT_ID", "SOPHOS_CLIENT_SECRET", "SOPHOS_TENANT_ID") {
		// SOPHOS_URL and SOPHOS_TENANT_ID may be left out: a tenant
		// credential learns both from whoami.
		url := e.URL("SOPHOS_URL", e.Str("SOPHOS_URL", ""), insecure)
		auth := e.URL("SOPHOS_AUTH_URL", e.Str("SOPHOS_AUTH_URL", "https://id.sophos.com"), insecure)
		id, secret, tenant := e.Required("SOPHOS_CLIENT_ID"), e.RequiredSecret("SOPHOS_CLIENT_SECRET"), e.Str("SOPHOS_TENANT_ID", "")
		every := e.Duration("SOPHOS_POLL_INTERVAL", 0, 10*time.Millisecond, 10*time.Minute)
		window := e.Duration("SOPHOS_WINDOW", sophos.DefaultWindow, time.Hour, sophos.MaxWindow)
		maxPages := e.Int("SOPHOS_MAX_PAGES", sophos.DefaultMaxPages, 1, 100000)
		maxBytes := int64(e.Int("SOPHOS_MAX_RESULT_BYTES", sophos.DefaultMaxResultBytes, 1<<20, 1<<34))
		out = append(out, vendorConfig{
			kind: edr.KindSophosXDR, key: "sophos:" + digest(tenant+"/"+id),
			rate: e.Float("SOPHOS_RATE_LIMIT", 1.5, 0, 10000), burst: e.Int("SOPHOS_RATE_BURST", 5, 1, 1000),
			build: func(lim httpc.Limiter, _ *httpc.Downloader, tr http.RoundTripper, log *zap.Logger) (edr.Driver, error) {
				return sophos.New(sophos.Config{URL: url, AuthURL: auth, ClientID: id, ClientSecret: secret,
					TenantID: tenant, PollEvery: every, Window: window, MaxPages: maxPages, MaxResultBytes: maxBytes,
					UserAgent: ua, Limiter: lim, Transport: tr})
			},
		})
	}
	return out
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
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
