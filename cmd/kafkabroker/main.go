// Command kafkabroker runs a fake Kafka cluster (franz-go's kfake) as its own
// OS process, so that multi-process tests can kill it (SIGKILL), pause it
// (SIGSTOP/SIGCONT) and restart it like a real broker. It is test
// infrastructure: it listens on 127.0.0.1 only and has no authentication.
//
// Usage:
//
//	kafkabroker [--ports 19092,19093,19094] [--data-dir DIR] [--partitions 6]
//	            [--topics a,b,c] [--min-session-timeout 1s]
//	            [--max-message-bytes 4194304] [--log-level none]
//
// One broker listens on each port of --ports (0 picks a free port). The
// topics of --topics are created with --partitions partitions when missing; a
// topic that already exists (restored from --data-dir) keeps its partition
// count.
//
// When every broker is listening, kafkabroker prints exactly one line to
// stdout, "READY host:port,host:port,...", and nothing else. Errors go to
// stderr and make it exit non-zero. SIGTERM or SIGINT closes the cluster
// (flushing --data-dir) and exits 0; a second signal during that exits 1.
// SIGHUP is ignored: the broker has no terminal to lose, and a broker
// paused with SIGSTOP was seen killed by a SIGHUP its test never sent.
//
// With --data-dir, topics, records and committed group offsets survive a
// restart of the process with the same directory, including after SIGKILL:
// kfake writes every produce and offset commit to the directory before it
// answers, and fsyncs it too (kfake's SyncWrites), so that an acknowledged
// write also survives a crash of the machine. What differs is group
// membership: a SIGTERM restart restores the members of each group, while
// after SIGKILL the members are unknown and must join again. Restart with the
// same --ports if clients must find the cluster again.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	signal.Ignore(syscall.SIGHUP)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sigs))
}

// run starts the cluster, reports READY on stdout, and waits for a signal on
// sigs. It returns the process exit code.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "kafkabroker: %v\n", err)
		return 2
	}

	c, err := startCluster(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "kafkabroker: %v\n", err)
		return 1
	}
	// os.Stdout is unbuffered: the line is out when Fprintf returns.
	if _, err := fmt.Fprintf(stdout, "READY %s\n", strings.Join(c.ListenAddrs(), ",")); err != nil {
		fmt.Fprintf(stderr, "kafkabroker: writing READY: %v\n", err)
		c.Close()
		return 1
	}

	<-sigs
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		c.Close() // with a data dir, this writes snapshots and compacted logs
	}()
	select {
	case <-closed:
		return 0
	case <-sigs:
		fmt.Fprintln(stderr, "kafkabroker: second signal, exiting without a clean close")
		return 1
	}
}

// config is the parsed command line.
type config struct {
	ports             []int
	dataDir           string
	partitions        int
	topics            []string
	minSessionTimeout time.Duration
	maxMessageBytes   int
	logLevel          kfake.LogLevel
}

var logLevels = map[string]kfake.LogLevel{
	"none":  kfake.LogLevelNone,
	"error": kfake.LogLevelError,
	"warn":  kfake.LogLevelWarn,
	"info":  kfake.LogLevelInfo,
	"debug": kfake.LogLevelDebug,
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var (
		cfg                    config
		ports, topics, logName string
	)
	fs := flag.NewFlagSet("kafkabroker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&ports, "ports", "19092,19093,19094", "comma-separated ports on 127.0.0.1, one broker each; 0 picks a free port")
	fs.StringVar(&cfg.dataDir, "data-dir", "", "directory that keeps topics, records and group offsets across restarts (default: memory only)")
	fs.IntVar(&cfg.partitions, "partitions", 6, "partitions of each topic created at start")
	fs.StringVar(&topics, "topics", "Sample.Analysis.Job.OSL,Sample.Analysis.Job.SVG,Sample.Analysis.Job.DLQ,Sample.Analysis.Result",
		"comma-separated topics created at start if missing")
	fs.DurationVar(&cfg.minSessionTimeout, "min-session-timeout", time.Second, "smallest group session timeout the brokers accept")
	fs.IntVar(&cfg.maxMessageBytes, "max-message-bytes", 4<<20, "broker message.max.bytes: largest record batch accepted")
	fs.StringVar(&logName, "log-level", "none", "kfake log level on stderr: none, error, warn, info or debug")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	seen := make(map[int]bool)
	for _, s := range strings.Split(ports, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || p < 0 || p > 65535 {
			return config{}, fmt.Errorf("--ports: %q is not a port number", s)
		}
		if p != 0 && seen[p] {
			return config{}, fmt.Errorf("--ports: port %d given twice", p)
		}
		seen[p] = true
		cfg.ports = append(cfg.ports, p)
	}
	for _, t := range strings.Split(topics, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.topics = append(cfg.topics, t)
		}
	}
	if cfg.partitions < 1 {
		return config{}, fmt.Errorf("--partitions: must be at least 1, got %d", cfg.partitions)
	}
	if cfg.minSessionTimeout <= 0 {
		return config{}, fmt.Errorf("--min-session-timeout: must be positive, got %v", cfg.minSessionTimeout)
	}
	if cfg.maxMessageBytes < 1 {
		return config{}, fmt.Errorf("--max-message-bytes: must be positive, got %d", cfg.maxMessageBytes)
	}
	level, ok := logLevels[strings.ToLower(logName)]
	if !ok {
		return config{}, fmt.Errorf("--log-level: unknown level %q (want none, error, warn, info or debug)", logName)
	}
	cfg.logLevel = level
	return cfg, nil
}

// startCluster starts the brokers and makes sure the topics exist. The
// cluster is serving when it returns.
func startCluster(cfg config, stderr io.Writer) (*kfake.Cluster, error) {
	opts := []kfake.Opt{
		kfake.Ports(cfg.ports...),
		kfake.ListenFn(listen),
		kfake.GroupMinSessionTimeout(cfg.minSessionTimeout),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(cfg.maxMessageBytes)}),
		kfake.WithLogger(kfake.BasicLogger(stderr, cfg.logLevel)),
	}
	if cfg.dataDir != "" {
		// kfake writes each batch and group log entry before replying,
		// which is enough to survive SIGKILL; SyncWrites also fsyncs them,
		// so that an acknowledged write survives a machine crash.
		opts = append(opts, kfake.DataDir(cfg.dataDir), kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, err
	}
	// kfake ignores SeedTopics when it restores a data dir, so create any
	// missing topic here instead: the same path for a fresh start and a
	// restart whose --topics grew.
	for _, t := range cfg.topics {
		if err := c.CreateTopic(t, int32(cfg.partitions), nil); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			c.Close()
			return nil, fmt.Errorf("creating topic %q: %w", t, err)
		}
	}
	return c, nil
}

// listen is net.Listen with an error that names the port, so that a busy
// port is easy to spot in the test output.
func listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		_, port, _ := net.SplitHostPort(address)
		return nil, fmt.Errorf("cannot listen on port %s: %w", port, err)
	}
	return ln, nil
}
