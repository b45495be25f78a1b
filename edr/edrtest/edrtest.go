// Package edrtest is the contract suite every edr.Driver runs against its
// simulator (the watermill pubsub/tests pattern): the same happy path,
// re-attach after a crash, 429 storm, 5xx burst, hung response, malformed
// body and bad-input checks for every vendor. Vendor packages call Run from
// their tests and add what is specific to them.
//
// It also holds what the drivers' own tests share: Drive (an operation run
// to its end as the runner would), Replay (a vendor's recorded answers
// played back), Recorder (the requests a driver sent, as they went on the
// wire), FuzzDecoder (the fuzz test of a decoder of vendor bytes), and small
// assertions (RequirePermanent, AssertNoSecrets, CountStatus).
// The manual clock is internal/testutil's; the simulator test server is
// sim/simtest's.
package edrtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/testutil"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Options are passed to Harness.New for one subtest.
type Options struct {
	// Timeout is the per-request timeout the driver must use (short in the
	// hung-response test); 0 = the harness's usual value.
	Timeout time.Duration
}

// Env is a driver wired to a fresh simulator.
type Env struct {
	Driver edr.Driver
	Kit    *simhttp.Kit
	// NewDriver returns another driver instance on the same simulator (a
	// second worker taking over).
	NewDriver func() edr.Driver
}

// Harness describes a driver and its simulator to the suite.
type Harness struct {
	// New returns a driver on a fresh simulator. Simulator durations should
	// be short (tens of milliseconds).
	New func(t *testing.T, o Options) Env
	// Target is found by the simulator (Result.Rows > 0).
	Target edr.Target
	// EmptyTarget is found nowhere (Result.Rows == 0).
	EmptyTarget edr.Target
	// StartPath is the exact path of the request that starts an operation
	// (POST); PollPath the path prefix Poll requests hit (faults go there).
	StartPath, PollPath string
	// Secrets must never appear in an error string.
	Secrets []string
	// Findable says the vendor API can be searched for an operation started
	// under an intent (Driver.Find); otherwise Find must answer
	// edr.ErrFindUnsupported.
	Findable bool
}

var intents atomic.Int64

// NewIntent returns an intent with a fresh key, decided now.
func NewIntent(job string) edr.Intent {
	return edr.Intent{Key: fmt.Sprintf("%s/test/1.%d", job, intents.Add(1)), At: time.Now().UnixMilli()}
}

// IntentAt returns an intent with a fresh key, decided at at (a test's
// clock).
func IntentAt(job string, at time.Time) edr.Intent {
	in := NewIntent(job)
	in.At = at.UnixMilli()
	return in
}

// Run runs the contract suite.
func Run(t *testing.T, h Harness) {
	t.Run("HappyPath", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		res, err := Drive(Ctx(t), env.Driver, h.Target, nil)
		require.NoError(t, err)
		require.Positive(t, res.Rows, "the simulator has hits for Target")
		require.NotEmpty(t, res.Hosts)
		require.LessOrEqual(t, len(res.Hosts), edr.MaxListed)
		require.Equal(t, 1, CountExact(env.Kit, "POST", h.StartPath), "exactly one operation started")
	})
	t.Run("NothingFound", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		res, err := Drive(Ctx(t), env.Driver, h.EmptyTarget, nil)
		require.NoError(t, err)
		require.Zero(t, res.Rows)
	})
	t.Run("ReattachAfterTakeover", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		ref, err := retry(Ctx(t), func() (edr.Ref, error) { return env.Driver.Start(Ctx(t), h.Target, NewIntent(h.Target.JobID)) })
		require.NoError(t, err)
		finishElsewhere(t, h, env, env.NewDriver(), ref, "the takeover must not start the operation again")
	})
	t.Run("FindAfterLostAnswer", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		in := NewIntent(h.Target.JobID)
		// Nothing started yet: Find must say so (or that it cannot tell).
		_, err := retry(Ctx(t), func() (edr.Ref, error) { return env.Driver.Find(Ctx(t), h.Target, in) })
		if !h.Findable {
			require.ErrorIs(t, err, edr.ErrFindUnsupported)
			return
		}
		require.ErrorIs(t, err, edr.ErrNotStarted, "nothing was started under the intent")
		// The vendor accepts the start; its answer is lost with the worker.
		_, err = retry(Ctx(t), func() (edr.Ref, error) { return env.Driver.Start(Ctx(t), h.Target, in) })
		require.NoError(t, err)
		// Another job's intent, for the same sample a moment later, must
		// not be matched to this operation.
		other := NewIntent("another-job")
		other.At += 1500
		_, err = retry(Ctx(t), func() (edr.Ref, error) { return env.Driver.Find(Ctx(t), h.Target, other) })
		require.ErrorIs(t, err, edr.ErrNotStarted, "an operation started under another intent is not this one")
		// The next owner finds the operation and drives it to the end.
		next := env.NewDriver()
		ref, err := retry(Ctx(t), func() (edr.Ref, error) { return next.Find(Ctx(t), h.Target, in) })
		require.NoError(t, err)
		finishElsewhere(t, h, env, next, ref, "the operation was started once")
	})
	t.Run("RateLimitStorm", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		const retryAfter = time.Second
		env.Kit.Add(simhttp.Fault{Name: "storm", Path: h.PollPath, Status: 429, RetryAfter: retryAfter, Count: 3})
		var saw429 bool
		res, err := driveObserve(Ctx(t), env.Driver, h.Target, nil, func(err error) {
			if edr.RetryAfter(err) >= retryAfter {
				saw429 = true
			}
		})
		require.NoError(t, err)
		require.Positive(t, res.Rows)
		require.True(t, saw429, "a 429 must surface as a retryable error carrying Retry-After")
		AssertRetryAfterHonoured(t, env.Kit.Requests(), retryAfter)
	})
	t.Run("ServerErrors", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		env.Kit.Add(simhttp.Fault{Name: "5xx", Path: h.PollPath, Status: 503, Count: 3})
		res, err := Drive(Ctx(t), env.Driver, h.Target, nil)
		require.NoError(t, err)
		require.Positive(t, res.Rows)
	})
	t.Run("HungResponse", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{Timeout: 300 * time.Millisecond})
		env.Kit.Add(simhttp.Fault{Name: "hang", Path: h.PollPath, Hang: true, Count: 1})
		var sawTimeout bool
		res, err := driveObserve(Ctx(t), env.Driver, h.Target, nil, func(err error) {
			if edr.IsRetryable(err) && edr.RetryAfter(err) == 0 {
				sawTimeout = true
			}
		})
		require.NoError(t, err, "a hung response must time out and be retried")
		require.Positive(t, res.Rows)
		require.True(t, sawTimeout, "the hung request must fail with a retryable timeout")
	})
	t.Run("MalformedBody", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		env.Kit.Add(simhttp.Fault{Name: "garbage", Path: h.PollPath, Malformed: true})
		_, err := Drive(Ctx(t), env.Driver, h.Target, nil)
		require.Error(t, err)
		require.False(t, edr.IsRetryable(err), "a malformed body is permanent: %v", err)
		require.Contains(t, strings.ToLower(err.Error()), "malformed")
		assertNoSecrets(t, h.Secrets, err)
	})
	t.Run("BadHashNeverSent", func(t *testing.T) {
		t.Parallel()
		env := h.New(t, Options{})
		bad := h.Target
		bad.SHA256 = "x' OR 1=1--"
		_, err := env.Driver.Start(Ctx(t), bad, NewIntent(bad.JobID))
		require.Error(t, err)
		require.False(t, edr.IsRetryable(err))
		require.Zero(t, countReq(env.Kit, "", "/"), "nothing may reach the vendor for a bad hash")
	})
}

// finishElsewhere drives the operation ref, checkpointed (through JSON, as
// the ledger keeps it), to its end on driver d, another worker's, and checks
// that it found something and was started only once.
func finishElsewhere(t *testing.T, h Harness, env Env, d edr.Driver, ref edr.Ref, once string) {
	t.Helper()
	raw, err := json.Marshal(ref)
	require.NoError(t, err)
	res, err := Drive(Ctx(t), d, h.Target, edr.Ref(raw))
	require.NoError(t, err)
	require.Positive(t, res.Rows)
	require.Equal(t, 1, CountExact(env.Kit, "POST", h.StartPath), once)
}

// Drive runs one operation to the end the way the job runner does: Start
// (unless ref is given), Poll until Done, Collect, retrying retryable errors
// after their Retry-After (or a short pause).
func Drive(ctx context.Context, d edr.Driver, t edr.Target, ref edr.Ref) (edr.Result, error) {
	return driveObserve(ctx, d, t, ref, func(error) {})
}

func driveObserve(ctx context.Context, d edr.Driver, t edr.Target, ref edr.Ref, seen func(error)) (edr.Result, error) {
	var err error
	observe := func(e error) error {
		if e != nil {
			seen(e)
		}
		return e
	}
	if ref == nil {
		in := NewIntent(t.JobID)
		ref, err = retry(ctx, func() (edr.Ref, error) { r, e := d.Start(ctx, t, in); return r, observe(e) })
		if err != nil {
			return edr.Result{}, err
		}
	}
	for {
		st, err := retry(ctx, func() (edr.Status, error) { s, e := d.Poll(ctx, ref); return s, observe(e) })
		if err != nil {
			return edr.Result{}, err
		}
		if st.Ref != nil {
			ref = st.Ref
		}
		if st.Done {
			break
		}
		if err := pause(ctx, max(st.NextPoll, 5*time.Millisecond)); err != nil {
			return edr.Result{}, err
		}
	}
	return retry(ctx, func() (edr.Result, error) { r, e := d.Collect(ctx, ref); return r, observe(e) })
}

func retry[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for {
		v, err := f()
		if err == nil || !edr.IsRetryable(err) {
			return v, err
		}
		if err := pause(ctx, max(edr.RetryAfter(err), 20*time.Millisecond)); err != nil {
			return v, err
		}
	}
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d): // collected when unreferenced (Go 1.23): no Stop needed
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AssertRetryAfterHonoured checks that after every 429 answered with a
// Retry-After of at least d, no request reached the simulator before d had
// passed (with a small tolerance for clock granularity).
func AssertRetryAfterHonoured(t testing.TB, log []simhttp.Request, d time.Duration) {
	t.Helper()
	const slack = 50 * time.Millisecond
	for i, r := range log {
		if r.Status != 429 {
			continue
		}
		for _, next := range log[i+1:] {
			if next.Time.Sub(r.Time) < d-slack {
				t.Fatalf("request %s %s at +%s after a 429 with Retry-After %s", next.Method, next.Path, next.Time.Sub(r.Time), d)
			}
		}
	}
}

func assertNoSecrets(t testing.TB, secrets []string, errs ...error) {
	t.Helper()
	for _, err := range errs {
		if err == nil {
			continue
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(err.Error(), s) {
				t.Fatalf("error leaks a secret: %v", err)
			}
		}
	}
}

// RequirePermanent fails unless err is an error that says the same call
// cannot succeed later, and its text contains every one of contains.
func RequirePermanent(t testing.TB, err error, contains ...string) {
	t.Helper()
	require.Error(t, err)
	require.False(t, edr.IsRetryable(err), "not retryable: %v", err)
	for _, c := range contains {
		require.Contains(t, err.Error(), c)
	}
}

// AssertNoSecrets fails if any error's text contains any of secrets.
func AssertNoSecrets(t testing.TB, secrets []string, errs ...error) {
	assertNoSecrets(t, secrets, errs...)
}

func countReq(k *simhttp.Kit, method, prefix string) int { return k.Count(method, prefix) }

// CountStatus counts the requests k logged under path (a prefix; "" for
// all) that were answered status.
func CountStatus(k *simhttp.Kit, path string, status int) int {
	n := 0
	for _, r := range k.Requests() {
		if strings.HasPrefix(r.Path, path) && r.Status == status {
			n++
		}
	}
	return n
}

// CountExact counts the requests k logged with this method and exact path.
func CountExact(k *simhttp.Kit, method, path string) int {
	n := 0
	for _, r := range k.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

// Gzip returns parts, written one after the other, gzip-compressed: a
// vendor's compressed export or download.
func Gzip(parts ...[]byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	for _, p := range parts {
		_, _ = zw.Write(p)
	}
	_ = zw.Close()
	return buf.Bytes()
}

// Ctx returns a context that ends with the test, or after 30 s.
func Ctx(t testing.TB) context.Context { return testutil.Context(t, 30*time.Second) }

// FuzzDecoder is the fuzz test of a decoder of untrusted bytes (a vendor's
// answer, a checkpointed reference): seeds are added to f; decode must never
// panic and must fail only with an error wrapping vendorhttp.ErrMalformed;
// check sees every value it accepts.
func FuzzDecoder[T any](f *testing.F, seeds []string, decode func([]byte) (T, error), check func(t *testing.T, v T)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decode(b)
		if err != nil {
			if !errors.Is(err, vendorhttp.ErrMalformed) {
				t.Fatalf("error does not wrap vendorhttp.ErrMalformed: %v", err)
			}
			return
		}
		check(t, v)
	})
}
