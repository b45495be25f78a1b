// Command fleetctl is the operator CLI of an analysisfleet fleet: what the
// consumer group, the Redis ledger and the dead-letter topic say, and the
// two repairs an operator makes by hand (replay dead letters, force a stuck
// job's lease to expire).
//
//	fleetctl status                 group, lag, workers, leases, outbox, DLQ, cool-downs
//	fleetctl jobs [filters]         the ledger's jobs, one line each
//	fleetctl job <id>               one job: plan, task checkpoints, timeline, result
//	fleetctl results [flags]        summaries from the result topic
//	fleetctl dlq list [filters]     dead letters
//	fleetctl dlq replay [flags]     re-produce dead letters to their source topics
//	fleetctl release <id>           force a job's lease to expire (fenced)
//	fleetctl console [flags]        the web operator console (read-only, loopback by default)
//	fleetctl version | help
//
// It reads the same environment contract as the worker (KAFKA_*, REDIS_URL
// or REDIS_CLUSTER_*, REDIS_NAMESPACE, LEASE_TTL; see README; declared in
// envVars). A bad
// configuration is one error line listing every problem, each naming its
// variable, and exit status 2; other failures exit 1. Every command takes
// -h/--help (exit 0, the environment unread).
// Tables are for people; -o json is for scripts and keeps its field names.
// Secrets never appear in the output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/job"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// envLookup reads one environment variable (os.LookupEnv in production).
type envLookup func(string) (string, bool)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// realMain runs one fleetctl command and returns its exit status.
func realMain(args []string, env envLookup, stdin io.Reader, stdout, stderr io.Writer) int {
	return run(context.Background(), args, env, stdin, stdout, stderr)
}

const usage = `usage: fleetctl <command> [flags]

commands:
  status                      consumer group and members, lag, live workers, leases near
                              expiry or claimable, outbox depth, dead letters, vendor cool-downs
  jobs [--state S] [--worker W] [--vendor V] [--limit N]
                              the ledger's jobs, one line each; S is running, finishing
                              (outcome decided, in the outbox) or claimable (lease expired)
  job <id>                    one job: plan, task checkpoints, owner, lease, outcome, lease history
  dlq list [--reason R] [--limit N] [--show-values]
                              dead letters with reason, error and source
  dlq replay [--reason R] [--dry-run] [--yes]
                              re-produce dead letters to their source topics (asks first);
                              only into the job topics: a letter naming another is refused
  release <id>                force the job's lease to expire so another worker takes it over
  results [--job ID] [--last N]
                              the summaries published to the result topic (KAFKA_RESULT_TOPIC):
                              the N newest, or every one of a job
  console [--addr A] [--write] [--token-file F] [--proxy-header H]
                              the web operator console (read-only, 127.0.0.1:8089 by default)
  version                     print the version
  help                        this text

Every command takes -o table|json (default table) and --timeout.
Configuration is the worker's environment contract: KAFKA_BROKERS, KAFKA_TOPICS or
KAFKA_TOPIC_REGEX, KAFKA_GROUP, KAFKA_DLQ_TOPIC, KAFKA_RESULT_TOPIC, KAFKA_TLS*, KAFKA_SASL_*, REDIS_URL
(or REDIS_URL_FILE; or REDIS_CLUSTER_ADDRS and REDIS_CLUSTER_* for a Redis Cluster), REDIS_TLS_*,
REDIS_NAMESPACE, LEASE_TTL. Exit status: 0 ok, 1 failure, 2 usage or configuration error.
`

// exitError carries an exit status with a message for stderr.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageErr is a command-line mistake (exit 2).
func usageErr(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

// configErr is a configuration mistake (exit 2), already naming the variable.
func configErr(err error) error {
	return &exitError{code: 2, msg: "configuration error: " + err.Error()}
}

// cli is one invocation: its environment and streams.
type cli struct {
	env    envLookup
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func run(ctx context.Context, args []string, env envLookup, stdin io.Reader, stdout, stderr io.Writer) int {
	if env == nil {
		env = os.LookupEnv
	}
	c := &cli{env: env, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "status":
		err = c.status(ctx, args[1:])
	case "jobs":
		err = c.jobs(ctx, args[1:])
	case "job":
		err = c.job(ctx, args[1:])
	case "dlq":
		err = c.dlq(ctx, args[1:])
	case "release":
		err = c.release(ctx, args[1:])
	case "results":
		err = c.results(ctx, args[1:])
	case "console":
		err = c.console(ctx, args[1:])
	case "version", "--version", "-v":
		if envconf.HelpAsked(args[1:]) {
			fmt.Fprint(stdout, "usage: fleetctl version\n\nPrints the version of this fleetctl binary.\n")
			return 0
		}
		fmt.Fprintln(stdout, "fleetctl", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fleetctl: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		fmt.Fprintf(stderr, "fleetctl: %s\n", oneLine(ee.msg))
		return ee.code
	}
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintf(stderr, "fleetctl: %s (timed out; see --timeout)\n", oneLine(err.Error()))
		return 1
	}
	fmt.Fprintf(stderr, "fleetctl: %s\n", oneLine(err.Error()))
	return 1
}

// common are the flags every command has.
type common struct {
	output  string
	timeout time.Duration
}

func (o *common) json() bool { return o.output == "json" }

// newFlags returns a command's flag set with -o and --timeout.
func (c *cli) newFlags(name, synopsis string, o *common, timeout time.Duration) *flag.FlagSet {
	fs := flag.NewFlagSet("fleetctl "+name, flag.ContinueOnError)
	fs.SetOutput(&flagOutput{stdout: c.stdout, stderr: c.stderr})
	fs.StringVar(&o.output, "o", "table", "output format: table or json")
	fs.StringVar(&o.output, "output", "table", "output format: table or json")
	fs.DurationVar(&o.timeout, "timeout", timeout, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: fleetctl %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// flagOutput is a command's flag output: the usage goes to stdout when it
// was asked for (-h, --help: exit 0), to stderr with a flag error (exit 2).
type flagOutput struct {
	stdout, stderr io.Writer
	help           bool
}

func (f *flagOutput) Write(p []byte) (int, error) {
	if f.help {
		return f.stdout.Write(p)
	}
	return f.stderr.Write(p)
}

// parse parses flags anywhere among the positional arguments (so
// `fleetctl job <id> -o json` works) and checks the common ones.
func parse(fs *flag.FlagSet, o *common, args []string, wantPos int) ([]string, error) {
	if out, ok := fs.Output().(*flagOutput); ok {
		out.help = envconf.HelpAsked(args)
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if o.output != "table" && o.output != "json" {
		return nil, usageErr("-o %q: want table or json", o.output)
	}
	if o.timeout <= 0 {
		return nil, usageErr("--timeout must be positive")
	}
	if len(pos) != wantPos {
		if wantPos == 0 {
			return nil, usageErr("%s: unexpected argument %q", fs.Name(), pos[0])
		}
		return nil, usageErr("%s: want %d argument(s), got %d (see -h)", fs.Name(), wantPos, len(pos))
	}
	return pos, nil
}

// parseJobID is parse for a command on one job: its one argument is the
// job ID, returned as the ledger keys it (a UUID lower-case).
func parseJobID(fs *flag.FlagSet, o *common, args []string) (string, error) {
	pos, err := parse(fs, o, args, 1)
	if err != nil {
		return "", err
	}
	return job.CanonicalID(pos[0]), nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
