package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/analysisfleet/analysisfleet/internal/console"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
)

const consoleUsage = `usage: fleetctl console [--addr HOST:PORT] [--write] [--token-file FILE] [--proxy-header NAME]

Serves the web operator console: jobs, timelines, results, leases, workers,
vendor budgets and, with KAFKA_BROKERS set, lag and dead letters.

It is read-only unless started with --write. It binds to loopback unless
told otherwise: a non-loopback --addr needs --token-file (a bearer token;
browsers log in once) or --proxy-header (the user header a trusted
authenticating proxy such as oauth2-proxy sets). Every action is recorded in
the Redis stream {REDIS_NAMESPACE}:audit. See docs/console.md.

flags:
`

func (c *cli) console(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fleetctl console", flag.ContinueOnError)
	fs.SetOutput(&flagOutput{stdout: c.stdout, stderr: c.stderr, help: envconf.HelpAsked(args)})
	addr := fs.String("addr", "127.0.0.1:8089", "listen address (host:port)")
	write := fs.Bool("write", false, "allow the mutating actions (release, abort, dead-letter replay); default read-only")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (at least 16 characters)")
	proxyHeader := fs.String("proxy-header", "", "trusted reverse-proxy header naming the user (e.g. X-Auth-Request-User); only behind that proxy")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), consoleUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("console: unexpected argument %q", fs.Arg(0))
	}
	if _, _, err := net.SplitHostPort(*addr); err != nil {
		return usageErr("--addr %q: want host:port", *addr)
	}
	if !console.IsLoopbackAddr(*addr) && *tokenFile == "" && *proxyHeader == "" {
		return usageErr("--addr %s is not a loopback address: give --token-file or --proxy-header, "+
			"or the console would serve the fleet to anyone who can reach it", *addr)
	}
	_, kafka := c.env("KAFKA_BROKERS")
	cfg, err := c.loadConfig(needs{redis: true, kafka: kafka})
	if err != nil {
		return err
	}
	st, rdb, err := cfg.openStore()
	if err != nil {
		return err
	}
	defer rdb.Close()
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(c.stderr), zap.InfoLevel))
	ccfg := console.Config{Store: st, Write: *write, TokenFile: *tokenFile, ProxyHeader: *proxyHeader, Logger: log}
	if kafka {
		k, err := console.NewKafka(console.KafkaConfig{Brokers: cfg.brokers, Opts: cfg.kafkaOpts, Group: cfg.group,
			Topics: cfg.topics, TopicRegex: cfg.topicRegex, DLQTopic: cfg.dlq, ResultTopic: cfg.result})
		if err != nil {
			return err
		}
		defer k.Close()
		ccfg.Kafka = k
	}
	srv, err := console.New(ccfg)
	if err != nil {
		return configErr(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	mode := "read-only"
	if *write {
		mode = "WRITE ACCESS (release, abort, dead-letter replay)"
	}
	auth := "none: loopback clients only"
	switch {
	case *tokenFile != "" && *proxyHeader != "":
		auth = "bearer token or proxy header " + *proxyHeader
	case *tokenFile != "":
		auth = "bearer token"
	case *proxyHeader != "":
		auth = "proxy header " + *proxyHeader
	}
	kmsg := "Kafka: not configured (KAFKA_BROKERS unset)"
	if kafka {
		kmsg = "Kafka: " + cfg.group
	}
	fmt.Fprintf(c.stdout, "console: http://%s/\n  %s; auth: %s; namespace %s; %s\n", ln.Addr(), mode, auth, cfg.ns, kmsg)
	return srv.Serve(ctx, ln)
}
