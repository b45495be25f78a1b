// Package edr defines the small interface the job runner drives every EDR
// vendor through, and the types that cross it. One package per vendor API
// (edr/cbc, edr/cblr, edr/cytomic, edr/sophos) implements Driver.
//
// A vendor operation goes Start → Poll … Poll (until Done) → Collect, or is
// Cancelled. Between calls the runner checkpoints the operation reference
// (Ref) in the ledger; after a crash another worker resumes with Poll or
// Collect on the checkpointed Ref and never calls Start again. A Ref is
// therefore opaque, JSON-serialisable and self-sufficient: everything a
// driver needs to re-attach must be in it.
//
// Starting exactly once. A crash between the vendor accepting a Start and
// the runner checkpointing its Ref would otherwise start the operation
// again. So the runner first checkpoints an Intent (a unique key and the
// instant the start was decided), then calls Start with it. The driver
// derives everything time-dependent in the request from the Intent (the
// query's time window) and labels the operation with its key where the API
// carries a label. A worker that finds an Intent without a Ref calls Find,
// which searches the vendor for that operation and re-attaches; the runner
// starts again only when Find answers ErrNotStarted (surely absent) or
// ErrFindUnsupported (the API cannot be searched).
//
// Errors returned by drivers are *Error (or wrap one): they say whether the
// same call may succeed later and how long to wait first.
package edr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// Task kinds, as planned by the playbook and shown as the SampleDB task's
// "worker".
const (
	KindCBCEventExport = "cbc.event_export"
	KindCBLRTriage     = "cblr.triage"
	KindCytomicOSQuery = "cytomic.osquery"
	KindSophosXDR      = "sophos.xdr_query"
)

// Vendor returns the vendor of a task kind: the part before the dot
// ("cbc" for "cbc.event_export"), or kind itself without one. Metrics,
// rate limiters and fleetctl's filters name vendors this way.
func Vendor(kind string) string {
	vendor, _, _ := strings.Cut(kind, ".")
	return vendor
}

// Target is what one task hunts for: a sample and where to look. Drivers
// must call ValidSHA256 (or trust Target.SHA256 only after it) before
// interpolating anything into a vendor query language.
type Target struct {
	JobID    string
	SHA256   string // lower-case, 64 hex digits
	Platform string // classification.platform: "win", "linux", "osx", ...
	FileName string // submission.name
	// Sensors are the CB EDR sensor IDs named in the submission's metaData
	// (sensorId / sensorIds).
	Sensors []int64
	// Path is the on-host path of the sample when the submission names one
	// (metaData "path" / "filePath"); empty otherwise.
	Path string
}

// Ref is an opaque, JSON-serialisable reference to a running vendor
// operation. It is checkpointed verbatim.
type Ref = json.RawMessage

// Status is the answer to Poll.
type Status struct {
	// Done means Collect may be called now.
	Done bool
	// Progress is a short human-readable progress line ("IN_PROGRESS 40/100").
	Progress string
	// Ref, when non-nil, replaces the operation reference and must be
	// checkpointed before the next call (multi-step operations such as Live
	// Response advance their reference as they go).
	Ref Ref
	// NextPoll suggests when to poll again; 0 leaves it to the runner.
	NextPoll time.Duration
}

// Result summarises what a finished operation found. Lists are capped at
// MaxListed entries; the Total fields say how many there were.
type Result struct {
	Rows       int64    `json:"rows"`
	Hosts      []string `json:"hosts,omitempty"`
	HostsTotal int      `json:"hostsTotal"`
	Files      []File   `json:"files,omitempty"`
	// Notes are short remarks for the analyst ("2 of 10 machines never
	// answered before the TTL").
	Notes []string `json:"notes,omitempty"`
}

// File is a file retrieved from a host.
type File struct {
	Host    string `json:"host"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	Matches bool   `json:"matches"` // SHA256 equals the sample's
}

// MaxListed caps Result lists.
const MaxListed = 100

// Intent is what the runner checkpoints before it asks a vendor to start an
// operation, so that after a crash the operation can be found again instead
// of started twice. It is JSON-serialisable and stored verbatim.
type Intent struct {
	// Key is unique to this start attempt of this job's task (job ID, task
	// kind and the lease's fencing token). Drivers put it in the
	// operation's name where the API has one, so Find can match it exactly.
	Key string `json:"key"`
	// At is when the start was decided (the deciding worker's clock, unix
	// ms). Drivers compute time windows from it, never from time.Now, so a
	// request made again for the same intent is the same request, and Find
	// looks only at operations created after it (less a clock-skew margin).
	At int64 `json:"at"`
}

// Time returns At as a time.Time.
func (in Intent) Time() time.Time { return time.UnixMilli(in.At) }

// FindSkew is how much earlier than Intent.At a vendor may have recorded an
// operation's creation (clock skew between worker and vendor) and Find still
// consider it.
const FindSkew = 5 * time.Minute

// Driver is one vendor API. Implementations are safe for concurrent use.
type Driver interface {
	// Kind is the task kind this driver runs (KindCBCEventExport, ...).
	Kind() string
	// Start launches the vendor operation for t under intent in and returns
	// its reference. The runner has checkpointed in before the call and
	// checkpoints the reference before doing anything else.
	Start(ctx context.Context, t Target, in Intent) (Ref, error)
	// Find looks at the vendor for the operation a Start(t, in) may have
	// launched (its answer lost to a crash or a timeout) and returns its
	// reference. It returns ErrNotStarted when the vendor surely has no such
	// operation, ErrFindUnsupported when the API cannot be searched, and
	// another error (retryable or not) when it cannot tell now.
	Find(ctx context.Context, t Target, in Intent) (Ref, error)
	// Poll reports the operation's progress. It may block until the driver's
	// next batched round (Cytomic polls all open operations in one request).
	Poll(ctx context.Context, ref Ref) (Status, error)
	// Collect fetches and summarises the results of a finished operation.
	Collect(ctx context.Context, ref Ref) (Result, error)
	// Cancel stops the operation at the vendor where the API allows it and
	// releases what it holds (sessions). It returns ErrCancelUnsupported
	// when the vendor has no way to cancel: the operation is abandoned.
	Cancel(ctx context.Context, ref Ref) error
	// Close stops what the driver runs in the background (Cytomic's round
	// loop) and waits for it; calls still waiting fail with a retryable
	// error. Whoever built the driver closes it, once no call is running
	// (later calls fail retryably). Safe to call twice; drivers with nothing
	// in the background do nothing.
	Close()
}

// ErrNotStarted is returned by Find when the vendor surely has no operation
// started under the intent: starting it now starts it once.
var ErrNotStarted = errors.New("no vendor operation was started under this intent")

// ErrFindUnsupported is returned by Find when the vendor API offers no way
// to look an operation up: the runner can only start it again.
var ErrFindUnsupported = errors.New("vendor API cannot be searched for a started operation")

// ErrCancelUnsupported is returned by Cancel when the vendor API has no
// cancel: the operation is abandoned and ends on its own.
var ErrCancelUnsupported = errors.New("vendor API has no cancel; operation abandoned")

// Error is a failed vendor call.
type Error struct {
	Vendor string // "cbc", "cblr", "cytomic", "sophos"
	Op     string // "start", "poll", "collect", "cancel", "token", ...
	// Status is the HTTP status, 0 when none arrived.
	Status int
	// Code is the vendor's own error code ("201" for Cytomic
	// ErrorExecutingOsQuery), when it gave one.
	Code string
	// Retryable says the same call may succeed later.
	Retryable bool
	// RetryAfter is the vendor's requested delay (429 Retry-After).
	RetryAfter time.Duration
	// Msg is a human explanation, safe to show to analysts.
	Msg string
	// Err is the underlying error, if any.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", e.Vendor, e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": code %s", e.Code)
	}
	if e.Msg != "" {
		fmt.Fprintf(&b, ": %s", e.Msg)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// RetryAfterHint lets httpc.RetryAfterOf read the delay.
func (e *Error) RetryAfterHint() time.Duration { return e.RetryAfter }

// IsRetryable reports whether err says the same call may succeed later.
// An *Error decides for itself; otherwise transport failures and 429/5xx
// statuses from internal/httpc are retryable; everything else is permanent.
func IsRetryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return httpc.IsRetryable(err)
}

// RetryAfter returns the delay err asks for, or 0.
func RetryAfter(err error) time.Duration { return httpc.RetryAfterOf(err) }

// Wrap turns an error from internal/httpc (or any error) into an *Error for
// vendor and op, keeping its retryability and Retry-After.
func Wrap(vendor, op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	var te *httpc.TransportError
	if !errors.As(err, &te) && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return err // the caller's own context: not a vendor failure
	}
	out := &Error{Vendor: vendor, Op: op, Err: err, Retryable: httpc.IsRetryable(err), RetryAfter: httpc.RetryAfterOf(err)}
	var se *httpc.StatusError
	if errors.As(err, &se) {
		out.Status = se.Status
	}
	return out
}

// Permanent returns a non-retryable *Error.
func Permanent(vendor, op, msg string) error {
	return &Error{Vendor: vendor, Op: op, Msg: msg}
}

var sha256Re = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ErrBadHash is returned by ValidSHA256.
var ErrBadHash = errors.New("sample hash must be 64 hexadecimal digits")

// ValidSHA256 lower-cases s and returns it if it is exactly 64 hex digits.
// Anything else is refused, never escaped: the hash is interpolated into
// vendor query languages.
func ValidSHA256(s string) (string, error) {
	l := strings.ToLower(s)
	if !sha256Re.MatchString(l) {
		return "", ErrBadHash
	}
	return l, nil
}
