package main

// worker dev's side doors for a person trying the fleet by hand: the state
// file that tells `worker dev submit` where the running dev fleet is, the
// --hold trickle of long jobs, and `worker dev submit` itself.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/analysisfleet/analysisfleet/intake"
	"github.com/analysisfleet/analysisfleet/internal/loadgen"
	"github.com/analysisfleet/analysisfleet/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

// devDirEnv names the directory where a running `worker dev` leaves its
// state file (default devStateDir).
const devDirEnv = "ANALYSISFLEET_DEV_DIR"

// devStateDir is where `worker dev` writes its state file and `worker dev
// submit` looks for it: $ANALYSISFLEET_DEV_DIR, else
// $TMPDIR/analysisfleet-dev-<uid>.
func devStateDir() string {
	if d := os.Getenv(devDirEnv); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("analysisfleet-dev-%d", os.Getuid()))
}

// devState is what a running `worker dev` tells other processes about
// itself (its state file, dev-<pid>-<namespace>.json, removed when it
// stops). Development credentials only: the simulators' API keys.
type devState struct {
	PID            int       `json:"pid"`
	Started        time.Time `json:"started"`
	KafkaBrokers   []string  `json:"kafkaBrokers"`
	Topics         []string  `json:"topics"`
	SampleDBURL    string    `json:"sampledbURL"`
	SampleDBKey    string    `json:"sampledbUserKey"`
	Customers      []string  `json:"customers"`
	RedisURL       string    `json:"redisURL"`
	RedisNamespace string    `json:"redisNamespace"`
	ConsoleURL     string    `json:"consoleURL,omitempty"`
}

// writeState writes d's state file and returns the function that removes
// it.
func (d *dev) writeState(dir string) (remove func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	st := devState{
		PID: os.Getpid(), Started: time.Now().UTC(), KafkaBrokers: d.brokers, Topics: intake.DefaultTopics,
		SampleDBURL: d.stack.SampleDBURL, SampleDBKey: simstack.UserKey, Customers: d.stack.Customers(),
		RedisURL: d.redisURLUsed, RedisNamespace: d.ns, ConsoleURL: d.consoleURL,
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(dir, fmt.Sprintf("dev-%d-%s.json", st.PID, d.ns))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	d.statePath = path
	return func() { _ = os.Remove(path) }, nil
}

// errNoDevFleet: no running `worker dev` left a state file.
var errNoDevFleet = errors.New("no worker dev is running")

// findDev returns the newest running dev fleet's state in dir, and how many
// run. State files of processes that are gone are removed.
func findDev(dir string) (devState, int, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "dev-*.json"))
	if err != nil {
		return devState{}, 0, err
	}
	var live []devState
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // it just stopped
		}
		if err != nil {
			return devState{}, 0, err
		}
		var st devState
		if json.Unmarshal(b, &st) != nil || st.PID <= 0 {
			continue
		}
		if err := syscall.Kill(st.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
			_ = os.Remove(p) // left behind by a killed worker dev
			continue
		}
		live = append(live, st)
	}
	if len(live) == 0 {
		return devState{}, 0, fmt.Errorf("%w (no state file in %s): start one with `worker dev --hold` (or set %s to the directory of the one you started)",
			errNoDevFleet, dir, devDirEnv)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Started.After(live[j].Started) })
	return live[0], len(live), nil
}

// holdJobs is the --hold trickle: a new job every holdEvery whose CB Cloud
// and Sophos queries run for holdVendorTime, while fewer than holdMax of them
// are unfinished, until ctx ends. Each is registered with the SampleDB
// simulator and produced to a job topic exactly as the other dev jobs.
func (d *dev) holdJobs(ctx context.Context) error {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5eed))
	gen := loadgen.Config{Sensors: []int64{1, 2, 3}, Customers: d.stack.Customers(), Plant: d.stack.Plant}
	topics := intake.DefaultTopics
	var held []string
	t := time.NewTimer(0)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		t.Reset(d.o.holdEvery)
		running := held[:0]
		for _, id := range held {
			if j, ok := d.stack.SampleDB.Job(id); ok && !sampledb.IsTerminal(j.State) {
				running = append(running, id)
			}
		}
		held = running
		if len(held) >= d.o.holdMax {
			continue
		}
		msg := gen.Job(rng)
		d.stack.RunFor(msg.Submission.Sample.ID, d.o.holdVendorTime)
		if err := loadgen.Post(ctx, d.stack.SampleDB, d.prod, topics[n%len(topics)], msg); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		held = append(held, msg.JobID)
		fmt.Fprintf(d.out, "  %s  posted %s (%s, %s) — %d held jobs unfinished\n", time.Now().Format("15:04:05"), msg.JobID,
			msg.Submission.Customer, msg.Classification.Platform, len(held))
	}
}

const devSubmitUsage = `usage: worker dev submit [flags]

Submits one job to the running worker dev (the newest, if several run): it
registers the job with that fleet's SampleDB simulator and produces it to a
job topic, as the fleet's own submissions are, and prints its ID. The fleet is
found by the state file worker dev writes in $ANALYSISFLEET_DEV_DIR (default
$TMPDIR/analysisfleet-dev-<uid>). Exit status 1 when no worker dev runs.

flags:
`

// cmdDevSubmit is `worker dev submit`.
func cmdDevSubmit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker dev submit", flag.ContinueOnError)
	dir := fs.String("state-dir", "", "where the running worker dev's state file is (default $"+devDirEnv+" or $TMPDIR/analysisfleet-dev-<uid>)")
	customer := fs.String("customer", "", "the submitting customer (default: one of the fleet's, at random)")
	platform := fs.String("platform", "", "the sample's platform: win, linux or osx (default: at random)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if code, ok := parseFlags(fs, devSubmitUsage, args, stdout, stderr, true); !ok {
		return code
	}
	if p := *platform; p != "" && p != "win" && p != "linux" && p != "osx" {
		fmt.Fprintf(stderr, "worker dev submit: --platform %q: win, linux or osx\n", p)
		return 2
	}
	if *dir == "" {
		*dir = devStateDir()
	}
	st, n, err := findDev(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "worker dev submit: %v\n", err)
		return 1
	}
	if n > 1 {
		fmt.Fprintf(stderr, "worker dev submit: %d worker dev fleets run; using the newest (pid %d)\n", n, st.PID)
	}
	if *customer != "" && !slices.Contains(st.Customers, *customer) {
		fmt.Fprintf(stderr, "worker dev submit: --customer %q: the fleet's customers are %s\n", *customer, strings.Join(st.Customers, ", "))
		return 2
	}
	id, topic, err := submitOne(st, *customer, *platform, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "worker dev submit: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, id)
	fmt.Fprintf(stderr, "posted to %s. Look at it:\n  %s go run ./cmd/fleetctl job %s\n", topic, fleetctlEnv(st.KafkaBrokers, st.RedisURL, st.RedisNamespace), id)
	return 0
}

// submitOne registers one job with the dev fleet's SampleDB simulator and
// produces it, as loadgen does for the fleet's own.
func submitOne(st devState, customer, platform string, timeout time.Duration) (id, topic string, err error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	gen := loadgen.Config{Sensors: []int64{1, 2, 3}, Customers: st.Customers,
		KnownSample: cblr.DefaultSampleSHA256(), KnownPath: cblr.DefaultSamplePath}
	if customer != "" {
		gen.Customers = []string{customer}
	}
	msg := gen.Job(rng)
	for platform != "" && msg.Classification.Platform != platform {
		msg = gen.Job(rng)
	}
	if len(st.Topics) == 0 || len(st.KafkaBrokers) == 0 {
		return "", "", errors.New("the state file names no Kafka brokers or topics")
	}
	topic = st.Topics[rng.IntN(len(st.Topics))]
	sdb := &loadgen.HTTPSampleDB{URL: st.SampleDBURL, UserKey: st.SampleDBKey}
	if _, err := sdb.Register(msg); err != nil {
		return "", "", fmt.Errorf("the dev fleet's SampleDB simulator at %s: %w", st.SampleDBURL, err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(st.KafkaBrokers...), kgo.RecordDeliveryTimeout(timeout))
	if err != nil {
		return "", "", err
	}
	defer prod.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := prod.ProduceSync(ctx, loadgen.Record(topic, msg)).FirstErr(); err != nil {
		return "", "", fmt.Errorf("produce to the dev fleet's Kafka at %s: %w", strings.Join(st.KafkaBrokers, ","), err)
	}
	return msg.JobID, topic, nil
}

// fleetctlEnv is the environment prefix that points fleetctl at a dev
// fleet.
func fleetctlEnv(brokers []string, redisURL, ns string) string {
	return fmt.Sprintf("KAFKA_BROKERS=%s REDIS_URL=%s REDIS_NAMESPACE=%s", strings.Join(brokers, ","), redisURL, ns)
}
