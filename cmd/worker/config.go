package main

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/node"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/tenant"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// config is the worker's whole configuration, read from the environment
// contract of DESIGN.md (plus a few documented extras).
type config struct {
	node     node.Config
	redis    envconf.RedisConfig
	ns       string
	leaseTTL time.Duration
	logLevel zapcore.Level
	insecure bool
	// failpoints arms internal/failpoint (fault-injection tests only).
	failpoints string
	// debugAddr serves Go's profiles (loopback only); "" is off.
	debugAddr string

	sampledb sampledb.Config
	download httpc.DownloadConfig
	// vendors are the per-vendor settings every account of a vendor gets;
	// tenants the accounts, by customer (from TENANTS_FILE, or the
	// single-account variables as the default tenant).
	vendors       vendorSettings
	tenants       tenant.Config
	tenantsFile   string
	tenantsDigest string
	reloadEvery   time.Duration
	// secrets are every credential read, in all their wire forms: the
	// logger and the runner mask them (internal/redact).
	secrets *redact.Set
}

func userAgent(workerID string) string {
	return fmt.Sprintf("analysisfleet/%s (%s)", version, workerID)
}

// loadConfig reads and validates the environment (e reads runVars). Every
// problem is reported at once (envconf.Problems), each naming its variable;
// none quotes a secret.
func loadConfig(e *envconf.Env) (*config, error) {
	c := &config{}
	c.insecure = e.Bool("INSECURE_HTTP")
	workerID := cmp.Or(e.Str("WORKER_ID"), envconf.Hostname())
	ua := userAgent(workerID)

	// Kafka.
	topics := e.List("KAFKA_TOPICS")
	dlq, noDLQ := e.Optional("KAFKA_DLQ_TOPIC")
	res, noRes := e.Optional("KAFKA_RESULT_TOPIC")
	regex := e.Str("KAFKA_TOPIC_REGEX")
	checkTopicRegex(e, regex, map[string]string{"KAFKA_DLQ_TOPIC": dlq, "KAFKA_RESULT_TOPIC": res})
	c.node = node.Config{
		WorkerID: workerID, Brokers: e.List("KAFKA_BROKERS"), KafkaOpts: e.KafkaSecurity(),
		ResultTopic: res, NoResults: noRes,
		Intake: intake.Config{
			Topics: topics, TopicRegex: regex, Group: e.Str("KAFKA_GROUP"),
			DLQTopic: dlq, NoDLQ: noDLQ,
			MaxMessageBytes:   e.Int("MAX_MESSAGE_BYTES"),
			SessionTimeout:    e.Duration("KAFKA_SESSION_TIMEOUT"),
			RebalanceTimeout:  e.Duration("KAFKA_REBALANCE_TIMEOUT"),
			HeartbeatInterval: e.Duration("KAFKA_HEARTBEAT_INTERVAL"),
		},
		Runner: runner.Config{
			MaxInflight:       e.Int("MAX_INFLIGHT"),
			JobTimeout:        e.Duration("JOB_TIMEOUT"),
			AbortPollInterval: e.Duration("ABORT_POLL_INTERVAL"),
			DrainTimeout:      e.Duration("DRAIN_TIMEOUT"),
			PollMin:           e.Duration("POLL_INTERVAL_MIN"),
			PollMax:           e.Duration("POLL_INTERVAL_MAX"),
			ClaimInterval:     e.Duration("CLAIM_INTERVAL"),
			RetryMin:          e.Duration("RETRY_BACKOFF_MIN"),
			RetryMax:          e.Duration("RETRY_BACKOFF_MAX"),
			StartConcurrency:  e.Int("START_CONCURRENCY"),
			CallConcurrency:   e.Int("CALL_CONCURRENCY"),
			VendorConcurrency: e.Int("VENDOR_CONCURRENCY"),
			ReconcileInterval: e.Duration("RECONCILE_INTERVAL"),
			CancelTimeout:     e.Duration("CANCEL_TIMEOUT"),
			PublishTimeout:    e.Duration("PUBLISH_TIMEOUT"),
		},
		HTTPAddr: e.Str("HTTP_ADDR"),
	}
	if c.debugAddr = e.Str("DEBUG_ADDR"); c.debugAddr != "" {
		if err := checkDebugAddr(c.debugAddr); err != nil {
			e.Fail("DEBUG_ADDR", "%q: %v", c.debugAddr, err)
		}
	}
	ic, rc := &c.node.Intake, &c.node.Runner
	if hb := ic.HeartbeatInterval; hb >= ic.SessionTimeout && !e.Failed("KAFKA_SESSION_TIMEOUT") {
		e.Fail("KAFKA_HEARTBEAT_INTERVAL", "%s is not shorter than KAFKA_SESSION_TIMEOUT (%s)", hb, ic.SessionTimeout)
	}
	e.NotAbove("POLL_INTERVAL_MIN", rc.PollMin, "POLL_INTERVAL_MAX", rc.PollMax)
	e.NotAbove("RETRY_BACKOFF_MIN", rc.RetryMin, "RETRY_BACKOFF_MAX", rc.RetryMax)
	if p := e.Str("PLAYBOOK_FILE"); p != "" {
		pb, err := runner.LoadPlaybook(p)
		if err != nil {
			e.Fail("PLAYBOOK_FILE", "%v", err)
		}
		rc.Playbook = pb
	}

	// Redis.
	c.ns = e.Str("REDIS_NAMESPACE")
	if strings.ContainsAny(c.ns, "{}: ") {
		e.Fail("REDIS_NAMESPACE", "%q may not contain braces, colons or spaces", c.ns)
	}
	c.leaseTTL = e.Duration("LEASE_TTL")
	c.redis = e.RedisConfig()
	c.node.RedisAddr = redisAddr(c.redis)

	// SampleDB.
	c.sampledb = sampledb.Config{
		URL:       e.URL("SAMPLEDB_URL", e.Str("SAMPLEDB_URL"), c.insecure),
		APIKey:    e.Secret("SAMPLEDB_API_KEY"),
		UserAgent: ua,
		// The runner re-checks the lease between attempts: keep each call's
		// own retrying short.
		MaxElapsed: 30 * time.Second,
	}

	// Downloads of pre-signed URLs.
	c.download = httpc.DownloadConfig{
		Hosts: e.List("DOWNLOAD_HOSTS"), Insecure: c.insecure,
		UserAgent: ua, MaxBody: 512 << 20, Timeout: 10 * time.Minute,
	}

	c.vendors = readVendorSettings(e, ua, c.insecure)
	accounts := envAccounts(e, c.insecure)
	c.tenantsFile = e.Str("TENANTS_FILE")
	c.reloadEvery = e.Duration("TENANTS_RELOAD_INTERVAL")
	if c.tenantsFile != "" {
		if names := accounts.names; len(names) > 0 {
			e.Fail("TENANTS_FILE", "is set together with single-account vendor variables (%s): with a tenants file every account lives in the file (move them into its \"*\" entry to serve customers not listed)", strings.Join(names, ", "))
		}
		cfg, d, errs := tenant.Load(c.tenantsFile, func(u string) error { return envconf.CheckURL(u, c.insecure) })
		e.FailEach("TENANTS_FILE", errs)
		c.tenants, c.tenantsDigest = cfg, d
	} else if !accounts.Empty() {
		c.tenants = tenant.Config{tenant.Default: accounts.Accounts}
	}

	level := e.Str("LOG_LEVEL")
	lvl, lerr := zapcore.ParseLevel(level)
	if lerr != nil {
		e.Fail("LOG_LEVEL", "%q is not one of debug, info, warn, error", level)
	}
	c.logLevel = lvl
	c.failpoints = e.Str("ANALYSISFLEET_FAILPOINTS")
	if len(c.tenants) == 0 && !e.Failed("TENANTS_FILE") {
		e.Fail("", "no EDR vendor configured: set CBC_*, CBLR_*, CYTOMIC_* or SOPHOS_*, or TENANTS_FILE (see README)")
	}
	if err := e.Err(); err != nil {
		return nil, err
	}
	c.secrets = redact.New(e.Secrets()...)
	addTenantSecrets(c.secrets, c.tenants)
	for _, v := range []string{"SOPHOS", "CYTOMIC"} {
		if id, secret := e.Str(v+"_CLIENT_ID"), e.Secret(v+"_CLIENT_SECRET"); secret != "" {
			c.secrets.AddBasic(id, secret)
		}
	}
	c.node.Runner.Redact = c.secrets
	return c, nil
}

// checkTopicRegex refuses a KAFKA_TOPIC_REGEX that does not compile, one
// set together with KAFKA_TOPICS (which would silently lose the list), and
// one matching a topic the worker writes (by variable): it would consume its
// own dead letters, each dead-lettered again, forever, or its summaries as
// jobs.
func checkTopicRegex(e *envconf.Env, regex string, written map[string]string) {
	if regex == "" {
		return
	}
	re, err := regexp.Compile(regex)
	if err != nil {
		e.Fail("KAFKA_TOPIC_REGEX", "not a regular expression: %v", err)
		return
	}
	if e.Set("KAFKA_TOPICS") {
		e.Fail("KAFKA_TOPIC_REGEX", "is set together with KAFKA_TOPICS: set one of the two (the regex would replace the list)")
	}
	for _, name := range slices.Sorted(maps.Keys(written)) {
		if t := written[name]; t != "" && re.MatchString(t) {
			e.Fail("KAFKA_TOPIC_REGEX", "matches %s (%s), a topic the worker writes: anchor it to the job topics, e.g. ^Sample\\.Analysis\\.Job\\.(OSL|SVG)$", t, name)
		}
	}
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

// redisAddr says where Redis is for the log: host:port (or the unix
// socket), or a cluster's seed nodes. Not the URL: REDIS_URL is a secret as
// a whole, so the log's redaction would mask it even without a password.
func redisAddr(c envconf.RedisConfig) string {
	switch {
	case c.Cluster != nil:
		return "cluster " + strings.Join(c.Cluster.Addrs, ",")
	case c.Server != nil && c.Server.Network == "unix":
		return "unix:" + c.Server.Addr
	case c.Server != nil:
		return c.Server.Addr
	}
	return ""
}
