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

// Driver is one vendor API. Implementations are safe for concurrent use.
type Driver interface {
	// Kind is the task kind this driver runs (KindCBCEventExport, ...).
	Kind() string
	// Start launches the vendor operation for t and returns its reference.
	// The runner checkpoints the reference before doing anything else.
	Start(ctx context.Context, t Target) (Ref, error)
	// Poll reports the operation's progress. It may block until the driver's
	// next batched round (Cytomic polls all open operations in one request).
	Poll(ctx context.Context, ref Ref) (Status, error)
	// Collect fetches and summarises the results of a finished operation.
	Collect(ctx context.Context, ref Ref) (Result, error)
	// Cancel stops the operation at the vendor where the API allows it and
	// releases what it holds (sessions). It returns ErrCancelUnsupported
	// when the vendor has no way to cancel: the operation is abandoned.
	Cancel(ctx context.Context, ref Ref) error
}

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
