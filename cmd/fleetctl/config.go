package main

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/kafkaview"
	"github.com/analysisfleet/analysisfleet/results"
	"github.com/analysisfleet/analysisfleet/state"
)

// needs says which half of the contract a command reads: a command that
// only reads the ledger does not require KAFKA_BROKERS, and the other way
// round.
type needs struct{ kafka, redis bool }

// config is what fleetctl reads from the environment contract.
type config struct {
	// Kafka.
	brokers    []string
	topics     []string
	topicRegex string
	group      string
	dlq        string // "" when dead-lettering is disabled
	result     string // "" when summaries are disabled
	kafkaOpts  []kgo.Opt
	jobTopicsV *kafkaview.JobTopics // replayJobTopics, made once

	// Redis.
	redis    envconf.RedisConfig // one server (REDIS_URL) or a cluster (REDIS_CLUSTER_ADDRS)
	ns       string
	leaseTTL time.Duration
}

// envVars is every environment variable fleetctl reads: a part of the
// worker's contract (README, "Configuration"; TestEnvVarsAreTheWorkers
// checks each is documented there), with the same defaults and bounds.
var envVars = envconf.Table{
	{Vars: []envconf.Var{{Name: "KAFKA_BROKERS", Kind: envconf.List, Required: true}},
		Doc: "comma-separated seed brokers"},
	{Vars: []envconf.Var{{Name: "KAFKA_TOPICS", Kind: envconf.List, Default: strings.Join(intake.DefaultTopics, ",")}},
		Doc: "job topics"},
	{Vars: []envconf.Var{{Name: "KAFKA_TOPIC_REGEX"}},
		Doc: "job topics as a regular expression, instead of `KAFKA_TOPICS`"},
	{Vars: []envconf.Var{{Name: "KAFKA_GROUP", Default: intake.DefaultGroup}},
		Doc: "the workers' consumer group"},
	{Vars: []envconf.Var{{Name: "KAFKA_DLQ_TOPIC", Default: intake.DefaultDLQTopic}},
		Doc: "dead letters; empty: disabled"},
	{Vars: []envconf.Var{{Name: "KAFKA_RESULT_TOPIC", Default: results.DefaultTopic}},
		Doc: "job summaries; empty: disabled"},
	envconf.KafkaTLS,
	envconf.KafkaSASL,
	envconf.RedisURL,
	envconf.RedisCluster,
	envconf.RedisTLS,
	{Vars: []envconf.Var{{Name: "REDIS_NAMESPACE", Default: state.DefaultNamespace}},
		Doc: "key namespace (hash tag) of the fleet"},
	{Vars: []envconf.Var{{Name: "LEASE_TTL", Kind: envconf.Duration, Default: envconf.FormatDuration(state.DefaultLeaseTTL), Min: "1s", Max: "10m"}},
		Doc: "lease lifetime"},
}

// loadConfig reads and validates the variables the command needs. The error
// lists every problem, each naming its variable, and never quotes a secret.
func (c *cli) loadConfig(n needs) (*config, error) {
	e := envconf.New(envVars, c.env)
	cfg := &config{}
	if n.kafka {
		cfg.brokers = e.List("KAFKA_BROKERS")
		cfg.topics = e.List("KAFKA_TOPICS")
		cfg.topicRegex = e.Str("KAFKA_TOPIC_REGEX")
		if cfg.topicRegex != "" {
			if _, err := regexp.Compile(cfg.topicRegex); err != nil {
				e.Fail("KAFKA_TOPIC_REGEX", "not a regular expression: %v", err)
			} else if e.Set("KAFKA_TOPICS") {
				e.Fail("KAFKA_TOPIC_REGEX", "is set together with KAFKA_TOPICS: set one of the two (the regex would replace the list)")
			}
		}
		cfg.group = e.Str("KAFKA_GROUP")
		dlq, disabled := e.Optional("KAFKA_DLQ_TOPIC")
		if !disabled {
			cfg.dlq = dlq
		}
		if res, disabled := e.Optional("KAFKA_RESULT_TOPIC"); !disabled {
			cfg.result = res
		}
		cfg.kafkaOpts = e.KafkaSecurity()
	}
	if n.redis {
		cfg.ns = e.Str("REDIS_NAMESPACE")
		if strings.ContainsAny(cfg.ns, "{}: ") {
			e.Fail("REDIS_NAMESPACE", "%q may not contain braces, colons or spaces", cfg.ns)
		}
		cfg.leaseTTL = e.Duration("LEASE_TTL")
		cfg.redis = e.RedisConfig()
	}
	if err := e.Err(); err != nil {
		return nil, configErr(err)
	}
	return cfg, nil
}

// ledger reads the configuration a ledger command needs and connects to
// the ledger. The context it returns is ctx bounded by timeout (the
// command's --timeout); the caller calls done, which cancels that context
// and then closes the connection.
func (c *cli) ledger(ctx context.Context, timeout time.Duration) (st *state.Store, cmdCtx context.Context, done func(), err error) {
	cfg, err := c.loadConfig(needs{redis: true})
	if err != nil {
		return nil, nil, nil, err
	}
	st, rdb, err := cfg.openStore()
	if err != nil {
		return nil, nil, nil, err
	}
	cmdCtx, cancel := context.WithTimeout(ctx, timeout)
	return st, cmdCtx, func() {
		cancel()
		_ = rdb.Close()
	}, nil
}

// openStore connects to the ledger: one server, or a Redis Cluster. The
// caller closes the client.
func (cfg *config) openStore() (*state.Store, redis.UniversalClient, error) {
	r := cfg.redis
	if r.Cluster != nil {
		o := *r.Cluster
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = 5*time.Second, 10*time.Second, 10*time.Second
		o.PoolSize, o.MaxRetries = 4, 1 // per node
		r.Cluster = &o
	} else {
		o := *r.Server
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout = 5*time.Second, 10*time.Second, 10*time.Second
		o.PoolSize, o.MaxRetries = 4, 1
		r.Server = &o
	}
	rdb := r.NewClient()
	st, err := state.New(rdb, state.Config{Namespace: cfg.ns, LeaseTTL: cfg.leaseTTL})
	if err != nil {
		rdb.Close()
		return nil, nil, configErr(fmt.Errorf("REDIS_NAMESPACE: %w", err))
	}
	return st, rdb, nil
}

// kafkaClient is a plain client: no consumer group, so nothing fleetctl
// does can commit offsets of anyone's group.
func (cfg *config) kafkaClient(extra ...kgo.Opt) (*kgo.Client, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.brokers...),
		kgo.ClientID("analysisfleet-fleetctl"),
		kgo.DialTimeout(5 * time.Second),
		kgo.RetryTimeout(15 * time.Second),
	}
	opts = append(opts, cfg.kafkaOpts...)
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// replayJobTopics is what a dead-letter replay may produce to: the topics
// named in KAFKA_TOPICS, or the legal topic names KAFKA_TOPIC_REGEX matches
// (as the consumer matches them) but the DLQ and result topics
// (kafkaview.JobTopics).
func (cfg *config) replayJobTopics() kafkaview.JobTopics {
	if cfg.jobTopicsV == nil {
		jt := kafkaview.JobTopics{Topics: cfg.topics, DLQ: cfg.dlq, Result: cfg.result}
		if cfg.topicRegex != "" {
			jt.Regex = regexp.MustCompile(cfg.topicRegex) // validated in loadConfig
		}
		cfg.jobTopicsV = &jt
	}
	return *cfg.jobTopicsV
}

// jobTopics returns the configured job topics, resolving KAFKA_TOPIC_REGEX
// against the cluster's topics (the DLQ topic excluded).
func (cfg *config) jobTopics(ctx context.Context, adm *kadm.Client) ([]string, error) {
	if cfg.topicRegex == "" {
		return cfg.topics, nil
	}
	re := regexp.MustCompile(cfg.topicRegex) // validated in loadConfig
	all, err := adm.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list topics: %w", err)
	}
	var out []string
	for _, t := range all.Names() {
		if re.MatchString(t) && t != cfg.dlq {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out, nil
}
