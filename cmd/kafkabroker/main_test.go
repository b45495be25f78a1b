package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

// binPath is the kafkabroker binary built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kafkabroker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "kafkabroker")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building kafkabroker: %v\n", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			return 1
		}
	}
	return code
}

const (
	jobTopic  = "Sample.Analysis.Job.OSL"
	readyWait = 20 * time.Second
	exitWait  = 10 * time.Second
)

// broker is one kafkabroker child process.
type broker struct {
	cmd      *exec.Cmd
	addrs    []string
	stderr   syncBuffer
	stdout   syncBuffer // everything after the READY line
	exited   chan struct{}
	waitErr  error         // set before exited is closed
	readDone chan struct{} // the stdout reader has finished
	started  time.Duration // from exec to READY
}

// startBroker runs the binary with args and waits for its READY line. The
// process is killed (by pid) and reaped when the test ends.
func startBroker(t *testing.T, args ...string) *broker {
	t.Helper()
	b := &broker{exited: make(chan struct{}), readDone: make(chan struct{})}
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	b.cmd = exec.Command(binPath, args...)
	b.cmd.Stdout = pw
	b.cmd.Stderr = &b.stderr
	begin := time.Now()
	require.NoError(t, b.cmd.Start())
	pw.Close() // the child holds the only write end now
	go func() {
		b.waitErr = b.cmd.Wait()
		close(b.exited)
	}()
	lines := make(chan string, 1)
	go func() {
		defer close(b.readDone)
		defer pr.Close()
		r := bufio.NewReader(pr)
		line, _ := r.ReadString('\n')
		lines <- line
		io.Copy(&b.stdout, r) //nolint:errcheck // ends at EOF when the child exits
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill() //nolint:errcheck // may have exited already
		<-b.exited
		<-b.readDone
	})

	select {
	case line := <-lines:
		addrs, ok := strings.CutPrefix(line, "READY ")
		require.True(t, ok && strings.HasSuffix(addrs, "\n"), "want a READY line, got %q; stderr: %s", line, b.stderr.String())
		b.addrs = strings.Split(strings.TrimSuffix(addrs, "\n"), ",")
	case <-time.After(readyWait):
		t.Fatalf("no READY line within %v; stderr: %s", readyWait, b.stderr.String())
	}
	b.started = time.Since(begin)
	t.Logf("kafkabroker %v ready in %v at %v", args, b.started, b.addrs)
	return b
}

func (b *broker) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, b.cmd.Process.Signal(sig))
}

// wait waits for the process to exit and returns its exit code (-1 when a
// signal killed it).
func (b *broker) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-b.exited:
	case <-time.After(exitWait):
		t.Fatalf("kafkabroker did not exit within %v; stderr: %s", exitWait, b.stderr.String())
	}
	var exitErr *exec.ExitError
	if b.waitErr != nil && !errors.As(b.waitErr, &exitErr) {
		t.Fatalf("waiting for kafkabroker: %v", b.waitErr)
	}
	return b.cmd.ProcessState.ExitCode()
}

func (b *broker) ports(t *testing.T) string {
	t.Helper()
	var ports []string
	for _, a := range b.addrs {
		_, p, err := net.SplitHostPort(a)
		require.NoError(t, err)
		ports = append(ports, p)
	}
	return strings.Join(ports, ",")
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func newClient(t *testing.T, b *broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.addrs...)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// produce sends n records with values prefix-000… to b and fails on any
// error, when b exits (with its stderr: a crash is the broker's, not the
// client's), or when ctx ends first (a client whose brokers are gone may
// keep its records buffered past any timeout).
func produce(ctx context.Context, t *testing.T, b *broker, cl *kgo.Client, prefix string, n int) []string {
	t.Helper()
	var rs []*kgo.Record
	var values []string
	for i := range n {
		v := fmt.Sprintf("%s-%03d", prefix, i)
		values = append(values, v)
		// Partition matters only to a client with kgo.ManualPartitioner.
		rs = append(rs, &kgo.Record{Topic: jobTopic, Partition: int32(i % 6), Key: []byte(v), Value: []byte(v)})
	}
	done := make(chan error, 1) // cl.Close (a cleanup) ends it if we stop waiting
	go func() { done <- cl.ProduceSync(ctx, rs...).FirstErr() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-b.exited:
		t.Fatalf("the broker exited (%v) while %d records were produced; stderr:\n%s", b.waitErr, n, b.stderr.String())
	case <-ctx.Done():
		t.Fatalf("producing %d records: %v; the client still holds them; broker stderr:\n%s", n, ctx.Err(), b.stderr.String())
	}
	return values
}

// consumeAll reads jobTopic from the start until it has seen want records.
func consumeAll(ctx context.Context, t *testing.T, b *broker, want int) []string {
	t.Helper()
	cl := newClient(t, b, kgo.ConsumeTopics(jobTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	defer cl.Close()
	var got []string
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d records", len(got), want)
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	return got
}

// TestSIGKILLKeepsDataDir is the "broker crashed" fault: records and
// committed group offsets survive SIGKILL and a restart on the same ports,
// twice (the second crash hits a cluster that was itself restored from a
// crash and appended to since).
func TestSIGKILLKeepsDataDir(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	first := startBroker(t, "--ports", "0,0,0", "--data-dir", dir)
	require.Len(t, first.addrs, 3)

	producer := newClient(t, first)
	produced := produce(ctx, t, first, producer, "job", 100)
	producer.Close()

	// Consume every record in a group, then commit manually only the first
	// half of each partition, so the committed offsets are neither zero
	// nor the end of the log.
	const group = "crash-group"
	consumer := newClient(t, first, kgo.ConsumerGroup(group), kgo.ConsumeTopics(jobTopic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond))
	byPart := make(map[int32][]*kgo.Record)
	for n := 0; n < len(produced); {
		fs := consumer.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "group consumed %d of %d records", n, len(produced))
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			byPart[r.Partition] = append(byPart[r.Partition], r)
			n++
		})
	}
	var toCommit []*kgo.Record
	want := make(map[int32]int64)
	for p, rs := range byPart {
		last := rs[(len(rs)-1)/2]
		toCommit = append(toCommit, last)
		want[p] = last.Offset + 1
	}
	require.Greater(t, len(want), 1, "records should spread over partitions")
	require.NoError(t, consumer.CommitRecords(ctx, toCommit...))
	consumer.Close()
	requireCommitted(ctx, t, first, group, want)

	first.signal(t, syscall.SIGKILL)
	require.Equal(t, -1, first.wait(t), "SIGKILL should kill the process")

	second := startBroker(t, "--ports", first.ports(t), "--data-dir", dir)
	require.Equal(t, first.addrs, second.addrs)
	requireLog(ctx, t, second, produced)
	requireCommitted(ctx, t, second, group, want)
	adm := kadm.NewClient(newClient(t, second))
	topics, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	for _, name := range []string{jobTopic, "Sample.Analysis.Job.SVG", "Sample.Analysis.Job.DLQ", "Sample.Analysis.Result"} {
		require.True(t, topics.Has(name), "topic %s after restart", name)
		require.Len(t, topics[name].Partitions, 6, "partitions of %s", name)
	}

	// Second cycle: append, commit the end of every partition (an admin
	// commit to the now empty group), crash again.
	producer = newClient(t, second)
	produced = append(produced, produce(ctx, t, second, producer, "more", 50)...)
	producer.Close()
	ends, err := adm.ListEndOffsets(ctx, jobTopic)
	require.NoError(t, err)
	resps, err := adm.CommitOffsets(ctx, group, ends.Offsets())
	require.NoError(t, err)
	require.NoError(t, resps.Error())
	want = make(map[int32]int64)
	ends.Each(func(o kadm.ListedOffset) { want[o.Partition] = o.Offset })
	adm.Close()

	second.signal(t, syscall.SIGKILL)
	require.Equal(t, -1, second.wait(t), "SIGKILL should kill the process")

	third := startBroker(t, "--ports", second.ports(t), "--data-dir", dir)
	requireLog(ctx, t, third, produced)
	requireCommitted(ctx, t, third, group, want)
}

// requireLog checks that jobTopic holds exactly the values want, once each.
func requireLog(ctx context.Context, t *testing.T, b *broker, want []string) {
	t.Helper()
	require.ElementsMatch(t, want, consumeAll(ctx, t, b, len(want)))
	adm := kadm.NewClient(newClient(t, b))
	defer adm.Close()
	ends, err := adm.ListEndOffsets(ctx, jobTopic)
	require.NoError(t, err)
	require.NoError(t, ends.Error())
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	require.EqualValues(t, len(want), total, "no record lost or duplicated")
}

func requireCommitted(ctx context.Context, t *testing.T, b *broker, group string, want map[int32]int64) {
	t.Helper()
	adm := kadm.NewClient(newClient(t, b))
	defer adm.Close()
	resps, err := adm.FetchOffsets(ctx, group)
	require.NoError(t, err)
	require.NoError(t, resps.Error())
	got := make(map[int32]int64)
	resps.Each(func(o kadm.OffsetResponse) {
		require.Equal(t, jobTopic, o.Topic)
		got[o.Partition] = o.At
	})
	require.Equal(t, want, got)
}

// TestSignalClosesCleanly: SIGTERM and SIGINT close the cluster, flush the
// data dir and exit 0, and a restart sees the records.
func TestSignalClosesCleanly(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			dir := t.TempDir()
			b := startBroker(t, "--ports", "0,0,0", "--data-dir", dir, "--log-level", "warn")
			cl := newClient(t, b)
			produced := produce(ctx, t, b, cl, "clean", 20)
			cl.Close()

			b.signal(t, sig)
			begin := time.Now()
			require.Equal(t, 0, b.wait(t), "stderr: %s", b.stderr.String())
			require.Less(t, time.Since(begin), 5*time.Second)
			<-b.readDone
			require.Empty(t, b.stdout.String(), "only the READY line belongs on stdout")
			require.Empty(t, b.stderr.String(), "a clean close logs no warning")

			// A clean close writes a snapshot per partition.
			snaps, err := filepath.Glob(filepath.Join(dir, "partitions", "*", "snapshot.json"))
			require.NoError(t, err)
			require.Len(t, snaps, 4*6)

			again := startBroker(t, "--ports", "0,0,0", "--data-dir", dir)
			requireLog(ctx, t, again, produced)
		})
	}
}

// TestPortInUse: a busy port makes the process fail and name the port.
func TestPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)

	ctx, cancel := context.WithTimeout(t.Context(), exitWait)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "--ports", "0,"+port+",0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Empty(t, stdout, "no READY line when a port is busy")
	require.Contains(t, stderr.String(), "port "+port)
}

// TestBadFlags: a bad command line exits 2 with a message naming the flag.
func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--ports", "19092,x"}, `--ports: "x" is not a port number`},
		{[]string{"--ports", "70000"}, `--ports: "70000" is not a port number`},
		{[]string{"--ports", "19092,19092"}, "port 19092 given twice"},
		{[]string{"--partitions", "0"}, "--partitions: must be at least 1"},
		{[]string{"--log-level", "loud"}, `--log-level: unknown level "loud"`},
		{[]string{"--min-session-timeout", "0s"}, "--min-session-timeout: must be positive"},
		{[]string{"--max-message-bytes", "0"}, "--max-message-bytes: must be positive"},
		{[]string{"extra"}, "unexpected arguments"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), exitWait)
			defer cancel()
			out, err := exec.CommandContext(ctx, binPath, tc.args...).CombinedOutput()
			var exitErr *exec.ExitError
			require.ErrorAs(t, err, &exitErr)
			require.Equal(t, 2, exitErr.ExitCode())
			require.Contains(t, string(out), tc.msg)
			require.NotContains(t, string(out), "READY")
		})
	}
}

// A hangup does not end the broker: SIGHUP is ignored (one killed a broker
// paused by TestPausedBroker, which sends none).
func TestHangupIsIgnored(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := startBroker(t, "--ports", "0")
	b.signal(t, syscall.SIGHUP)
	cl := newClient(t, b)
	requireLog(ctx, t, b, produce(ctx, t, b, cl, "after-hup", 6))
	select {
	case <-b.exited:
		t.Fatalf("the broker exited after SIGHUP: %v", b.waitErr)
	default:
	}
}

// TestPausedBroker is the "broker paused" fault: while the process is
// stopped, produce requests time out and are retried; after SIGCONT every
// record is acknowledged exactly once.
func TestPausedBroker(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := startBroker(t, "--ports", "0,0,0")
	timeouts := new(requestTimeouts)
	cl := newClient(t, b,
		kgo.WithHooks(timeouts),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // connect to every broker before the pause
		kgo.RecordDeliveryTimeout(20*time.Second),
		kgo.RetryTimeout(20*time.Second),
		kgo.ProduceRequestTimeout(500*time.Millisecond),
		kgo.RequestTimeoutOverhead(500*time.Millisecond))
	warm := produce(ctx, t, b, cl, "warm", 6) // metadata and produce connections are up

	const pause = 2 * time.Second
	b.signal(t, syscall.SIGSTOP)
	// A signal is delivered asynchronously: wait for the kernel to report
	// the process stopped (WUNTRACED) before producing, or the first records
	// may be acknowledged before the pause begins.
	var ws syscall.WaitStatus
	_, err := syscall.Wait4(b.cmd.Process.Pid, &ws, syscall.WUNTRACED, nil)
	require.NoError(t, err)
	require.True(t, ws.Stopped(), "the broker is stopped")
	var (
		mu       sync.Mutex
		resumed  time.Time
		resumeCh = make(chan struct{})
	)
	resume := time.AfterFunc(pause, func() {
		mu.Lock()
		defer mu.Unlock()
		resumed = time.Now()
		b.cmd.Process.Signal(syscall.SIGCONT) //nolint:errcheck // the test fails below if it stays stopped
		close(resumeCh)
	})
	t.Cleanup(func() {
		if resume.Stop() {
			b.cmd.Process.Signal(syscall.SIGCONT) //nolint:errcheck // killed next anyway
		}
	})

	paused := produce(ctx, t, b, cl, "paused", 50)
	done := time.Now()
	<-resumeCh
	mu.Lock()
	require.False(t, done.Before(resumed), "records were acknowledged while the broker was stopped")
	mu.Unlock()

	require.Positive(t, timeouts.n.Load(), "requests should time out during the pause and be retried")
	t.Logf("%d requests timed out during the pause and were retried", timeouts.n.Load())

	requireLog(ctx, t, b, append(warm, paused...))
}

// requestTimeouts counts requests whose response did not come in time.
type requestTimeouts struct{ n atomic.Int64 }

func (h *requestTimeouts) OnBrokerE2E(_ kgo.BrokerMetadata, _ int16, e2e kgo.BrokerE2E) {
	if errors.Is(e2e.Err(), os.ErrDeadlineExceeded) {
		h.n.Add(1)
	}
}

// TestBrokerSettings: one broker on one port, --min-session-timeout lets a
// group use a 1 s session, and --max-message-bytes decides which records the
// broker takes (records under the limit can also be consumed back).
func TestBrokerSettings(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	b := startBroker(t, "--ports", "0", "--max-message-bytes", strconv.Itoa(3<<20))
	require.Len(t, b.addrs, 1)

	// The client's own batch limit is above the broker's, so the broker
	// is the one to refuse.
	cl := newClient(t, b, kgo.ProducerBatchMaxBytes(8<<20), kgo.DefaultProduceTopic(jobTopic))
	// Random bytes, so that compression cannot shrink the batch.
	big, tooBig := make([]byte, 2<<20), make([]byte, 4<<20)
	rand.Read(big)
	rand.Read(tooBig)
	require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Value: big}).FirstErr())
	err := cl.ProduceSync(ctx, &kgo.Record{Value: tooBig}).FirstErr()
	require.ErrorIs(t, err, kerr.MessageTooLarge)

	group := newClient(t, b, kgo.ConsumerGroup("short-session"), kgo.ConsumeTopics(jobTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(200*time.Millisecond))
	fs := group.PollFetches(ctx)
	require.NoError(t, fs.Err(), "a 1s session timeout must be accepted")
	require.Equal(t, 1, fs.NumRecords())
	require.Equal(t, big, fs.Records()[0].Value)
}

// TestTopicsAcrossRestarts: --topics and --partitions shape the topics; a
// restart on the same data dir keeps existing topics as they are and creates
// topics added to --topics.
func TestTopicsAcrossRestarts(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	requireTopics := func(b *broker, want map[string]int) {
		t.Helper()
		adm := kadm.NewClient(newClient(t, b))
		defer adm.Close()
		topics, err := adm.ListTopics(ctx)
		require.NoError(t, err)
		got := make(map[string]int)
		for name, td := range topics {
			got[name] = len(td.Partitions)
		}
		require.Equal(t, want, got)
	}

	first := startBroker(t, "--ports", "0,0", "--data-dir", dir, "--topics", "a, b", "--partitions", "2")
	requireTopics(first, map[string]int{"a": 2, "b": 2})
	first.signal(t, syscall.SIGKILL)
	first.wait(t)

	second := startBroker(t, "--ports", "0,0", "--data-dir", dir, "--topics", "a,c", "--partitions", "3")
	requireTopics(second, map[string]int{"a": 2, "b": 2, "c": 3})
}

// TestProducerAcrossCrash: a producer that lives through SIGKILL and restart
// of the broker delivers what it produced while the broker was down, once.
func TestProducerAcrossCrash(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	first := startBroker(t, "--ports", "0,0,0", "--data-dir", dir)
	cl := newClient(t, first,
		kgo.RecordDeliveryTimeout(20*time.Second),
		kgo.RetryTimeout(20*time.Second),
		kgo.RequestTimeoutOverhead(time.Second),
		// With the default 5s, the client waits that long after the
		// restart before it looks the brokers up again.
		kgo.MetadataMinAge(250*time.Millisecond))
	before := produce(ctx, t, first, cl, "before", 20)

	first.signal(t, syscall.SIGKILL)
	first.wait(t)

	var during []string
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		v := fmt.Sprintf("during-%03d", i)
		during = append(during, v)
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: jobTopic, Key: []byte(v), Value: []byte(v)}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			errs <- err
		})
	}
	second := startBroker(t, "--ports", first.ports(t), "--data-dir", dir)
	restarted := time.Now()
	wg.Wait()
	t.Logf("records produced while the broker was down were acknowledged %v after its restart", time.Since(restarted))
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	after := produce(ctx, t, second, cl, "after", 20)
	requireLog(ctx, t, second, append(append(before, during...), after...))
}
