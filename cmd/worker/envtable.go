package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/runner"
	"github.com/analysisfleet/analysisfleet/state"
)

// runVars is every environment variable `worker run` reads: the one source
// of its configuration. loadConfig reads them through an envconf.Env over
// this table (a variable not declared here cannot be read), `worker run
// --help` prints it, and the README's Configuration table is generated from
// it (TestReadmeConfigurationTable; `go test ./cmd/worker -run
// TestReadmeConfigurationTable -update` rewrites it).
//
// Each row is one line of the README: its variables (name, kind, default,
// bounds, secret), the default as documented when the variables' own do
// not say it all, and the meaning, in Markdown.
var runVars = envconf.Table{
	// Kafka.
	{Vars: []envconf.Var{{Name: "KAFKA_BROKERS", Kind: envconf.List, Required: true}},
		Doc: "comma-separated seed brokers"},
	{Vars: []envconf.Var{{Name: "KAFKA_TOPICS", Kind: envconf.List, Default: strings.Join(intake.DefaultTopics, ",")}},
		Doc: "job topics"},
	{Vars: []envconf.Var{{Name: "KAFKA_TOPIC_REGEX"}},
		Doc: "consume every topic this regular expression (RE2) matches instead of `KAFKA_TOPICS` (set one of " +
			"the two, not both); it may not match the dead-letter or result topic"},
	{Vars: []envconf.Var{{Name: "KAFKA_GROUP", Default: intake.DefaultGroup}},
		Doc: "consumer group (a new group starts at the earliest offset)"},
	{Vars: []envconf.Var{{Name: "KAFKA_DLQ_TOPIC", Default: intake.DefaultDLQTopic}},
		Doc: "dead letters; set empty to disable"},
	{Vars: []envconf.Var{{Name: "KAFKA_RESULT_TOPIC", Default: results.DefaultTopic}},
		Doc: "job summaries (key = job ID); set empty to disable"},
	envconf.KafkaTLS,
	envconf.KafkaSASL,
	{Vars: []envconf.Var{{Name: "KAFKA_SESSION_TIMEOUT", Kind: envconf.Duration, Default: dur(intake.DefaultSessionTimeout), Min: "6s", Max: "30m"}},
		Doc: "consumer-group session timeout"},
	{
		Vars: []envconf.Var{
			{Name: "KAFKA_REBALANCE_TIMEOUT", Kind: envconf.Duration, Default: dur(intake.DefaultRebalanceTimeout), Min: "1s", Max: "30m"},
			{Name: "KAFKA_HEARTBEAT_INTERVAL", Kind: envconf.Duration, Min: "100ms", Max: "1m"},
		},
		Default: "`" + dur(intake.DefaultRebalanceTimeout) + "`, min(3s, session/10)",
		Doc: "how long a rebalance waits for members; how quickly a member notices one (intake blocks a " +
			"rebalance only while it admits one poll's records); the heartbeat must be shorter than the session timeout",
	},

	// Redis.
	envconf.RedisURL,
	envconf.RedisCluster,
	envconf.RedisTLS,
	{Vars: []envconf.Var{{Name: "REDIS_NAMESPACE", Default: state.DefaultNamespace}},
		Doc: "key namespace (hash tag) of this fleet; no braces, colons or spaces"},

	// SampleDB.
	{
		Vars: []envconf.Var{{Name: "SAMPLEDB_URL", Required: true}, {Name: "SAMPLEDB_API_KEY", Secret: true, Required: true}},
		Doc: "e.g. `https://api.mnemonic.no`; the key needs SAMPLEDB-ANALYZER (job and task updates) and " +
			"SAMPLEDB-VIEWER or higher (reads: the abort poll and the reconciler)",
	},

	// Vendor accounts: a tenants file, or one account per vendor.
	{Vars: []envconf.Var{{Name: "TENANTS_FILE"}},
		Default: "unset = the vendor variables below are the only accounts",
		Doc: "customers → their own vendor accounts (YAML or JSON, secrets by file reference; format in " +
			"[`internal/tenant`](internal/tenant/tenant.go)); a job is hunted only in its customer's accounts. " +
			"Setting it together with any single-account vendor variable is an error"},
	{Vars: []envconf.Var{{Name: "TENANTS_RELOAD_INTERVAL", Kind: envconf.Duration, Default: "10s", Min: "100ms", Max: "1h"}},
		Doc: "how often `TENANTS_FILE` is checked for changes; a change applies without a restart"},
	{
		Vars: []envconf.Var{
			{Name: "CBC_URL"}, {Name: "CBC_ORG_KEY"}, {Name: "CBC_API_ID"}, {Name: "CBC_API_SECRET", Secret: true},
		},
		Default: "unset = off",
		Doc:     "Carbon Black Cloud",
	},
	{
		Vars:    []envconf.Var{{Name: "CBLR_URL"}, {Name: "CBLR_API_TOKEN", Secret: true}},
		Default: "unset = off",
		Doc:     "Carbon Black EDR Live Response",
	},
	{
		Vars: []envconf.Var{
			{Name: "CYTOMIC_URL", Default: cytomic.DefaultURL}, {Name: "CYTOMIC_TOKEN_URL", Default: cytomic.DefaultTokenURL},
			{Name: "CYTOMIC_USER"}, {Name: "CYTOMIC_PASSWORD", Secret: true}, {Name: "CYTOMIC_CLIENT_IDS", Kind: envconf.List},
		},
		Default: "unset = off",
		Doc: "Cytomic Orion: the API base (default `" + cytomic.DefaultURL + "`), the full token URL (default `" +
			cytomic.DefaultTokenURL + "`), the OAuth password-grant user and password, the client IDs to query",
	},
	{
		Vars:    []envconf.Var{{Name: "CYTOMIC_CLIENT_ID"}, {Name: "CYTOMIC_CLIENT_SECRET", Secret: true}},
		Default: "none",
		Doc:     "Cytomic's OAuth client credentials, sent as HTTP Basic with the token request (set both or neither)",
	},
	{
		Vars: []envconf.Var{
			{Name: "SOPHOS_URL"}, {Name: "SOPHOS_AUTH_URL", Default: "https://id.sophos.com"},
			{Name: "SOPHOS_CLIENT_ID"}, {Name: "SOPHOS_CLIENT_SECRET", Secret: true}, {Name: "SOPHOS_TENANT_ID"},
		},
		Default: "unset = off",
		Doc: "Sophos Central: `SOPHOS_URL` the data-region base, `SOPHOS_AUTH_URL` the identity base (default " +
			"`https://id.sophos.com`; `" + sophos.TokenPath + "` is appended); a tenant credential may leave out " +
			"`SOPHOS_URL` and `SOPHOS_TENANT_ID` (learnt from whoami)",
	},
	rateRow(),
	{Vars: []envconf.Var{{Name: "CBC_MAX_SPOOL", Kind: envconf.Int, Default: strconv.Itoa(cbc.DefaultMaxSpool), Min: strconv.Itoa(1 << 20), Max: strconv.Itoa(1 << 40)}},
		Doc: "bytes of CB Cloud zip exports spooled to disk at once, per worker (" + size(cbc.DefaultMaxSpool) + "; a download that finds " +
			"the budget spent is retried later)"},
	{
		Vars: []envconf.Var{
			{Name: "SOPHOS_POLL_INTERVAL", Kind: envconf.Duration, Default: dur(sophos.DefaultPollEvery), Min: "10ms", Max: "10m"},
			{Name: "CBLR_POLL_INTERVAL", Kind: envconf.Duration, Default: dur(cblr.DefaultPollInterval), Min: "10ms", Max: "10m"},
		},
		Doc: "how often a running query / Live Response step is polled at most",
	},
	{
		Vars: []envconf.Var{
			{Name: "SOPHOS_WINDOW", Kind: envconf.Duration, Default: dur(sophos.DefaultWindow), Min: "1h", Max: dur(sophos.MaxWindow)},
			{Name: "SOPHOS_MAX_PAGES", Kind: envconf.Int, Default: strconv.Itoa(sophos.DefaultMaxPages), Min: "1", Max: "100000"},
			{Name: "SOPHOS_MAX_RESULT_BYTES", Kind: envconf.Int, Default: strconv.Itoa(sophos.DefaultMaxResultBytes), Min: strconv.Itoa(1 << 20), Max: strconv.Itoa(1 << 34)},
		},
		Doc: "how far back an XDR query searches (at most " + dur(sophos.MaxWindow) + "); the result pages and " +
			"bytes (" + size(sophos.DefaultMaxResultBytes) + ") read of one run at most (a note on the task says when " +
			"results were cut)",
	},
	{
		Vars: []envconf.Var{
			{Name: "CYTOMIC_ROUND", Kind: envconf.Duration, Default: dur(cytomic.DefaultRound), Min: "10ms", Max: "10m"},
			{Name: "CYTOMIC_TTL", Kind: envconf.Duration, Default: dur(cytomic.DefaultTTL), Min: "1m", Max: "168h"},
		},
		Doc: "batch round period for `/osQuery/info` and `/state`; operation TTL",
	},
	{Vars: []envconf.Var{{Name: "CYTOMIC_TTL_UNIT", Default: "minutes"}},
		Doc: "the unit Cytomic reads the operation TTL in: `minutes` (as documented) or `seconds`"},
	{
		Vars: []envconf.Var{
			{Name: "CYTOMIC_SCOPE", Default: cytomic.DefaultScope}, {Name: "CYTOMIC_API_PREFIX"},
			{Name: "CYTOMIC_CLIENTS_FIELD", Default: cytomic.DefaultClientsField},
		},
		Doc: "the OAuth scope requested; a path prefix before `/osQuery/…` (e.g. `/api/v1`, as Cytomic's page " +
			"writes the paths); the name of the client list in the start body",
	},

	// The worker.
	{Vars: []envconf.Var{{Name: "WORKER_ID"}}, Default: "hostname",
		Doc: "this worker's name in leases, logs and the `User-Agent`"},
	{Vars: []envconf.Var{{Name: "MAX_INFLIGHT", Kind: envconf.Int, Default: strconv.Itoa(runner.DefaultMaxInflight), Min: "1", Max: "100000"}},
		Doc: "jobs one worker runs at once (then it pauses fetching)"},
	{Vars: []envconf.Var{{Name: "LEASE_TTL", Kind: envconf.Duration, Default: dur(state.DefaultLeaseTTL), Min: "1s", Max: "10m"}},
		Doc: "lease lifetime: the worker's session is renewed every TTL/3, one command whatever the number of jobs"},
	{Vars: []envconf.Var{{Name: "JOB_TIMEOUT", Kind: envconf.Duration, Default: dur(runner.DefaultJobTimeout), Min: "1s", Max: "720h"}},
		Doc: "from first admission"},
	{Vars: []envconf.Var{{Name: "ABORT_POLL_INTERVAL", Kind: envconf.Duration, Default: dur(runner.DefaultAbortPollInterval), Min: "100ms", Max: "1h"}},
		Doc: "how often one worker of the fleet lists SampleDB's active jobs for abort requests"},
	{Vars: []envconf.Var{{Name: "MAX_MESSAGE_BYTES", Kind: envconf.Int, Default: strconv.Itoa(intake.DefaultMaxMessageBytes), Min: "1024", Max: strconv.Itoa(64 << 20)}},
		Doc: "larger job records are dead-lettered"},
	{Vars: []envconf.Var{{Name: "DRAIN_TIMEOUT", Kind: envconf.Duration, Default: dur(runner.DefaultDrainTimeout), Min: "0s", Max: "10m"}},
		Doc: "at SIGTERM, the longest wait for in-flight vendor calls before leases are handed over"},
	{Vars: []envconf.Var{{Name: "START_CONCURRENCY", Kind: envconf.Int, Default: strconv.Itoa(runner.DefaultStartConcurrency), Min: "1", Max: "10000"}},
		Doc: "vendor operations one worker starts at once, per vendor (an operation accepted but not yet " +
			"checkpointed is started again after a crash: few should be in that window)"},
	{Vars: []envconf.Var{{Name: "CALL_CONCURRENCY", Kind: envconf.Int, Default: strconv.Itoa(runner.DefaultCallConcurrency), Min: "2", Max: "10000"}},
		Doc: "goroutines making the calls of every job (vendor, SampleDB, ledger); a job waiting for its next call " +
			"costs no goroutine"},
	{Vars: []envconf.Var{{Name: "VENDOR_CONCURRENCY", Kind: envconf.Int, Default: strconv.Itoa(runner.DefaultVendorConcurrency), Min: "1", Max: "10000"}},
		Doc: "calls in flight to one vendor account at once, per worker"},
	{
		Vars: []envconf.Var{
			{Name: "POLL_INTERVAL_MIN", Kind: envconf.Duration, Default: dur(runner.DefaultPollMin), Min: "1ms", Max: "1h"},
			{Name: "POLL_INTERVAL_MAX", Kind: envconf.Duration, Default: dur(runner.DefaultPollMax), Min: "1ms", Max: "24h"},
		},
		Doc: "adaptive polling of vendor operations (a driver's own suggestion wins, waited up to a tenth longer); each wait is up to a fifth shorter, so operations started together spread out; the minimum may not exceed the maximum",
	},
	{
		Vars: []envconf.Var{
			{Name: "RETRY_BACKOFF_MIN", Kind: envconf.Duration, Default: dur(runner.DefaultRetryMin), Min: "1ms", Max: "1h"},
			{Name: "RETRY_BACKOFF_MAX", Kind: envconf.Duration, Default: dur(runner.DefaultRetryMax), Min: "1ms", Max: "24h"},
		},
		Doc: "backoff for retryable failures (a `Retry-After` wins when longer); the minimum may not exceed the maximum",
	},
	{
		Vars: []envconf.Var{
			{Name: "CLAIM_INTERVAL", Kind: envconf.Duration, Default: dur(runner.DefaultClaimInterval), Min: "10ms", Max: "10m"},
			{Name: "RECONCILE_INTERVAL", Kind: envconf.Duration, Default: dur(runner.DefaultReconcileInterval), Min: "1s", Max: "24h"},
		},
		Doc: "how often expired leases are looked for; how often SampleDB's executing jobs are checked against the ledger (those started within two intervals each pass, the rest at least once an hour; every job after Redis lost its data)",
	},
	{
		Vars: []envconf.Var{
			{Name: "CANCEL_TIMEOUT", Kind: envconf.Duration, Default: dur(runner.DefaultCancelTimeout), Min: "1s", Max: "1h"},
			{Name: "PUBLISH_TIMEOUT", Kind: envconf.Duration, Default: dur(runner.DefaultPublishTimeout), Min: "1s", Max: "1h"},
		},
		Doc: "how long cancelling a vendor operation (at abort or timeout) is retried before the task records " +
			"\"cancel failed\"; how long publishing a job's summary is retried before the summary is given up (logged)",
	},
	{Vars: []envconf.Var{{Name: "PLAYBOOK_FILE"}}, Default: "built in",
		Doc: "JSON playbook replacing the default (format in [`runner/playbook.go`](runner/playbook.go))"},
	{Vars: []envconf.Var{{Name: "HTTP_ADDR", Default: ":8080"}},
		Doc: "`/metrics`, `/healthz`, `/readyz`"},
	{Vars: []envconf.Var{{Name: "DEBUG_ADDR"}}, Default: "off",
		Doc: "serve Go's profiles (`net/http/pprof`, `/debug/pprof/`) on this loopback address, e.g. `127.0.0.1:6060`; any other address is an error"},
	{Vars: []envconf.Var{{Name: "DOWNLOAD_HOSTS", Kind: envconf.List, Default: ".amazonaws.com"}},
		Doc: "host suffixes allowed for pre-signed download redirects"},
	{Vars: []envconf.Var{{Name: "INSECURE_HTTP", Kind: envconf.Bool, Default: "false"}},
		Doc: "allow `http://` and loopback targets (development and tests only; logged loudly)"},
	{Vars: []envconf.Var{{Name: "LOG_LEVEL", Default: "info"}},
		Doc: "`debug`, `info`, `warn`, `error` (JSON logs on stderr)"},
	{Vars: []envconf.Var{{Name: "ANALYSISFLEET_FAILPOINTS"}},
		Doc: "fault-injection tests only: `name=probability,…` kills the process at named points " +
			"([`internal/failpoint`](internal/failpoint/failpoint.go))"},
}

// vendorRates are the default fleet-wide request rates (per second) and
// bursts per credential, by vendor: the <VENDOR>_RATE_LIMIT and
// <VENDOR>_RATE_BURST variables.
var vendorRates = []struct {
	vendor string
	rate   float64
	burst  int
}{{"cbc", 20, 5}, {"cblr", 20, 5}, {"cytomic", 10, 3}, {"sophos", 1.5, 5}}

// rateRow declares <VENDOR>_RATE_LIMIT and <VENDOR>_RATE_BURST.
func rateRow() envconf.Row {
	var r envconf.Row
	var shown []string
	for _, d := range vendorRates {
		up := strings.ToUpper(d.vendor)
		rate, burst := strconv.FormatFloat(d.rate, 'f', -1, 64), strconv.Itoa(d.burst)
		r.Vars = append(r.Vars,
			envconf.Var{Name: up + "_RATE_LIMIT", Kind: envconf.Float, Default: rate, Min: "0", Max: "10000"},
			envconf.Var{Name: up + "_RATE_BURST", Kind: envconf.Int, Default: burst, Min: "1", Max: "1000"})
		shown = append(shown, fmt.Sprintf("%s %s/%s", up, rate, burst))
	}
	r.Default = strings.Join(shown, ", ")
	r.Doc = "fleet-wide requests per second per credential (`0`: unpaced, a 429 still pauses the credential), and burst"
	return r
}

// size writes a byte count in the largest binary unit that divides it.
func size(n int) string {
	for _, u := range []struct {
		shift int
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// dur writes a default duration as an operator would (1m, not 1m0s).
func dur(d time.Duration) string { return envconf.FormatDuration(d) }
