package cblr

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxFile      = 64 << 20
	DefaultPollInterval = 2 * time.Second
	// DefaultMaxToken caps one JSON value in an answer: above the longest
	// Windows command line (32767 UTF-16 units, written as JSON with its
	// escapes), far below the answer cap.
	DefaultMaxToken = 256 << 10
	// defaultWaitTimeout is assumed when a session does not report its
	// sensor_wait_timeout (the document's example says 120 s).
	defaultWaitTimeout = 120 * time.Second
	// minKeepalive is the shortest keepalive interval, whatever timeouts a
	// session reports: it keeps a nonsensical timeout from turning every
	// Poll into a keepalive.
	minKeepalive = 100 * time.Millisecond
	// uploadStallPolls and uploadStallTime bound the wait for a file whose
	// size_uploaded stays below its size (FileMetadata only): after that
	// many polls, or that long, without progress its content is read
	// anyway (and its size and sha256 taken from what arrives).
	uploadStallPolls = 10
	uploadStallTime  = 2 * time.Minute
	// maxMatched caps the matching processes remembered per sensor.
	maxMatched = 10
	// maxReopens bounds the sessions acquired again for one sensor after
	// one was lost (cbapi's MAX_RETRY_COUNT for a command refused with 404).
	maxReopens = 5
	// cleanupTimeout bounds closing sessions after the caller's context
	// ended (Start failing half way).
	cleanupTimeout = 10 * time.Second
)

// Command names, as the API spells them.
const (
	cmdProcessList = "process list"
	cmdGetFile     = "get file"
)

// Config configures a Driver.
type Config struct {
	// URL is the CB EDR server base, e.g. https://cbr.example.com
	// (CBLR_URL). Required.
	URL string
	// APIToken is sent as X-Auth-Token (CBLR_API_TOKEN). Required. It never
	// appears in errors or String output.
	APIToken string
	// UserAgent is sent on every request.
	UserAgent string
	// Timeout bounds one request, body included (httpc default when zero).
	Timeout time.Duration
	// MaxBody caps a JSON response (httpc default when zero).
	MaxBody int64
	// MaxFile caps a retrieved file; a larger file is reported (not
	// hashed) and its download abandoned. Default DefaultMaxFile.
	MaxFile int64
	// MaxToken caps one JSON value (a string or a number) in any answer:
	// a process list holding a longer path or command line fails the
	// sensor, permanently, before it is decoded. Default DefaultMaxToken.
	MaxToken int
	// PollInterval is the longest NextPoll the driver suggests while it
	// waits on the vendor (it suggests less when a keepalive is due sooner).
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// ReuseSessions makes Start borrow a sensor's pending or active session
	// even when it could open one of its own, as cbapi does. Off by
	// default: a borrowed session is shared with whoever opened it (an
	// analyst, another task), so its commands cannot be told apart and its
	// owner may close it under the triage. Whatever this says, a sensor the
	// server refuses a second session (a 4xx such as a session limit)
	// borrows the session it has.
	ReuseSessions bool
	// UntaggedSessions stops the driver asking for a check-in timeout that
	// carries the start intent's tag (see package doc), for a server that
	// refuses "checkin_timeout" in a session POST. Find then answers
	// edr.ErrFindUnsupported, and a Start retried after a lost answer
	// opens new sessions.
	UntaggedSessions bool
	// FileMetadata makes the driver read a retrieved file's metadata (GET
	// …/file/{id}: size, upload progress, status) before its content, as
	// the vendor document describes. Off by default: cbapi (and the
	// recorded answers) go from the completed "get file" straight to
	// …/file/{id}/content.
	FileMetadata bool
	// Limiter paces requests fleet-wide; nil = none.
	Limiter httpc.Limiter
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger is optional.
	Logger *zap.Logger
	// Redact is the process's set of secrets, which every text built from
	// an answer goes through; the driver adds its token (in every wire
	// form) to it. nil: a set of the driver's own.
	Redact *redact.Set
}

// String describes the configuration without the token.
func (c Config) String() string {
	return fmt.Sprintf("cblr.Config{URL: %s, APIToken: %s, Timeout: %s, MaxFile: %d}",
		httpc.Redact(c.URL), redact.Mask, c.Timeout, c.MaxFile)
}

// GoString is String, so %#v does not print the token either.
func (c Config) GoString() string { return c.String() }

// Driver runs Live Response triage. It is safe for concurrent use.
type Driver struct {
	base      string // scheme://host[/prefix], no trailing slash
	token     string
	hc        *httpc.Client
	maxFile   int64
	maxToken  int
	pollEvery time.Duration
	reuse     bool
	untagged  bool
	fileMeta  bool
	now       func() time.Time
	log       *zap.Logger
	// answers maps the server's answers to *edr.Error; redact masks the
	// token in every text built from one.
	answers *vendorhttp.API
	redact  *redact.Set
}

var _ edr.Driver = (*Driver)(nil)

// New validates cfg and returns a Driver.
func New(cfg Config) (*Driver, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	switch {
	case cfg.URL == "":
		return nil, errors.New("cblr: Config.URL is required")
	case err != nil:
		return nil, errors.New("cblr: Config.URL is not a valid URL")
	case u.Scheme != "https" && u.Scheme != "http", u.Host == "":
		return nil, errors.New("cblr: Config.URL must be an absolute http(s) URL")
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return nil, errors.New("cblr: Config.URL must not carry credentials, a query or a fragment")
	case cfg.APIToken == "":
		return nil, errors.New("cblr: Config.APIToken is required")
	case strings.ContainsAny(cfg.APIToken, "\r\n"):
		return nil, errors.New("cblr: Config.APIToken contains a line break")
	case cfg.Timeout < 0, cfg.MaxBody < 0, cfg.MaxFile < 0, cfg.PollInterval < 0, cfg.MaxToken < 0:
		return nil, errors.New("cblr: Config.Timeout, MaxBody, MaxFile, MaxToken and PollInterval must not be negative")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	red := cmp.Or(cfg.Redact, redact.New())
	red.Add(cfg.APIToken)
	return &Driver{
		answers: newAPI(red),
		redact:  red,
		base:    u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"),
		token:   cfg.APIToken,
		hc: httpc.New(httpc.Config{
			Service: vendor, UserAgent: cfg.UserAgent, Timeout: cfg.Timeout,
			MaxBody: cfg.MaxBody, Limiter: cfg.Limiter, Transport: cfg.Transport,
		}),
		maxFile:   cmp.Or(cfg.MaxFile, DefaultMaxFile),
		maxToken:  cmp.Or(cfg.MaxToken, DefaultMaxToken),
		pollEvery: cmp.Or(cfg.PollInterval, DefaultPollInterval),
		reuse:     cfg.ReuseSessions,
		untagged:  cfg.UntaggedSessions,
		fileMeta:  cfg.FileMetadata,
		now:       now,
		log:       log.Named(vendor),
	}, nil
}

// String describes the driver without its token.
func (d *Driver) String() string { return "cblr.Driver(" + httpc.Redact(d.base) + ")" }

// Close does nothing: the driver runs nothing in the background.
func (d *Driver) Close() {}

// Kind returns edr.KindCBLRTriage.
func (d *Driver) Kind() string { return edr.KindCBLRTriage }

// newRef validates t and returns the reference of a triage under in, every
// sensor still without a session (stepOpen). Nothing is sent.
func (d *Driver) newRef(op string, t edr.Target, in edr.Intent) (*opRef, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: op, Msg: "refusing the sample hash", Err: err}
	}
	if len(t.Sensors) == 0 {
		return nil, edr.Permanent(vendor, op, "no sensors named in the submission (metaData sensorId/sensorIds)")
	}
	r := &opRef{V: refVersion, SHA256: sha, FileName: strings.TrimSpace(t.FileName), At: in.At}
	if !d.untagged {
		r.Tag = checkInTag(in.Key)
	}
	for _, id := range t.Sensors {
		if id <= 0 {
			return nil, edr.Permanent(vendor, op, fmt.Sprintf("invalid sensor id %d in the submission", id))
		}
		if !slices.ContainsFunc(r.Sensors, func(s *sensorRef) bool { return s.SensorID == id }) {
			r.Sensors = append(r.Sensors, &sensorRef{SensorID: id, Step: stepOpen})
		}
	}
	if p := strings.TrimSpace(t.Path); p != "" {
		if err := checkPath(t.Platform, p); err != nil {
			r.Notes = append(r.Notes, fmt.Sprintf("get file skipped: the submitted path %q is %v; only the process list ran", clip(p), err))
		} else {
			r.Path = p
		}
	}
	return r, nil
}

// Start acquires one Live Response session per sensor named in t. One
// request lists the server's pending and active sessions: a sensor's session
// tagged with this intent (an earlier attempt's) is taken up again; with
// Config.ReuseSessions any session the sensor has is borrowed, as cbapi
// does; otherwise a session is opened, asking for the intent's tagged
// check-in timeout. A sensor whose session the vendor refuses (Live
// Response disabled, session limit, unknown sensor) is recorded as failed,
// unless it has a session to borrow; Start fails only when every sensor was
// refused, or on a task-level error (rejected token, 429, 5xx, network).
// After a retryable error the sessions it opened are left open: the retry
// of Start under the same intent takes them up again. After a permanent one
// they are closed.
func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	r, err := d.newRef("start", t, in)
	if err != nil {
		return nil, err
	}
	live, _, err := d.liveSessions(ctx, "start")
	if err != nil {
		return nil, err
	}
	for _, s := range r.Sensors {
		if err := d.acquire(ctx, "start", r, s, live); err != nil {
			if taskLevel(err) {
				if !edr.IsRetryable(err) {
					d.closeOpened(ctx, r)
				}
				return nil, err
			}
			status, msg := reason(err)
			s.fail(status, "%s", msg)
		}
	}
	if err := r.failure("start"); err != nil {
		return nil, err
	}
	return r.encode(), nil
}

// Find looks for the sessions a Start under in opened: among the pending and
// active sessions (one GET …/session?active_only=true), those of t's
// sensors that carry the intent's tag (their check_in_timeout) and were
// created no earlier than in.At less edr.FindSkew. It returns a Ref holding
// them (a sensor with none gets a session at the next Poll), or
// edr.ErrNotStarted when no sensor has one: an ended session cannot be
// resumed, and anyone else's is not this intent's. With
// Config.UntaggedSessions sessions carry no tag and Find answers
// edr.ErrFindUnsupported. Commands need no search here: before posting one,
// Poll adopts an identical command already in the session.
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	r, err := d.newRef("find", t, in)
	if err != nil {
		return nil, err
	}
	if d.untagged {
		return nil, edr.ErrFindUnsupported
	}
	live, listed, err := d.liveSessions(ctx, "find")
	if err != nil {
		return nil, err
	}
	if !listed {
		return nil, edr.Permanent(vendor, "find", "CB EDR did not list its Live Response sessions; cannot tell whether this task opened any")
	}
	found := false
	for _, s := range r.Sensors {
		if sess, ok := d.owned(r, live[s.SensorID]); ok {
			d.adopt(s, sess, true)
			found = true
		}
	}
	if !found {
		return nil, edr.ErrNotStarted
	}
	return r.encode(), nil
}

// Poll advances every unfinished sensor by one step. It returns as soon as
// the vendor accepted a command or a session was opened or closed, with the
// new Ref, so that the runner checkpoints it first. Done is set when every
// sensor is finished; when every sensor failed, Poll returns the permanent
// error instead (their sessions are closed by then).
func (d *Driver) Poll(ctx context.Context, raw edr.Ref) (edr.Status, error) {
	r, err := decodeRef(raw)
	if err != nil {
		return edr.Status{}, err
	}
	changed := false
	for _, s := range r.Sensors {
		if s.Step == stepDone {
			continue
		}
		ch, acted, err := d.advance(ctx, r, s)
		if err != nil {
			return edr.Status{}, err
		}
		changed = changed || ch
		if acted {
			break
		}
	}
	if r.done() {
		if err := r.failure("poll"); err != nil {
			return edr.Status{}, err
		}
		return edr.Status{Done: true, Progress: r.progress(), Ref: r.encode()}, nil
	}
	st := edr.Status{Progress: r.progress(), NextPoll: d.nextPoll(r)}
	if changed {
		st.Ref = r.encode()
	}
	return st, nil
}

// advance performs one step for s. changed says s was modified; acted says
// the vendor's state changed (session acquired, command accepted, session
// closed). Only task-level errors are returned: anything else fails the
// sensor, whose session is then closed.
func (d *Driver) advance(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	switch s.Step {
	case stepOpen:
		changed, acted, err = d.stepOpen(ctx, r, s)
	case stepWait:
		changed, acted, err = d.stepWait(ctx, r, s)
	case stepProcessList, stepGetFile:
		changed, acted, err = d.stepCommand(ctx, r, s)
	case stepClose:
	default:
		s.fail(0, "operation reference has an unknown step %q", s.Step)
	}
	if err != nil {
		if taskLevel(err) {
			return false, false, err
		}
		status, msg := reason(err)
		s.fail(status, "%s", msg)
		changed = true
	}
	if s.Step == stepClose {
		if err := d.finish(ctx, "poll", s); err != nil {
			return false, false, err
		}
		return true, true, nil
	}
	return changed, acted, nil
}

// stepOpen acquires a session for s: one of its pending or active sessions,
// or a new one.
func (d *Driver) stepOpen(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	live, _, err := d.liveSessions(ctx, "poll")
	if err != nil {
		return false, false, err
	}
	if err := d.acquire(ctx, "poll", r, s, live); err != nil {
		return false, false, err
	}
	return true, true, nil
}

func (d *Driver) stepWait(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	sess, found, err := d.getSession(ctx, "poll", s.SessionID)
	if err != nil {
		return false, false, err
	}
	if !found {
		s.fail(http.StatusNotFound, "the Live Response session %s no longer exists (HTTP 404): it expired or was closed before the sensor checked in", s.SessionID)
		return true, false, nil
	}
	changed = s.absorb(sess)
	switch st := norm(sess.Status); st {
	case "active":
		if missing := missingCommands(sess, !s.Listed, r.Path != ""); len(missing) > 0 {
			s.fail(0, "the sensor does not support the Live Response command(s) %s", strings.Join(missing, ", "))
			return true, false, nil
		}
		return d.issueNext(ctx, r, s)
	case "close", "closed":
		if s.Borrowed {
			// Its owner closed the session this triage borrowed.
			s.reopen(0, fmt.Sprintf("the Live Response session %s was closed by its owner before the sensor checked in", s.SessionID))
			return true, false, nil
		}
		fallthrough
	case "timeout", "inactive":
		s.fail(0, "%s before the sensor checked in (the host may be offline or unable to reach the CB EDR server)", ended(st))
		return true, false, nil
	}
	// "pending", or a status this driver does not know: keep waiting (the
	// server's check_in_timeout, and the runner's deadline, bound the
	// wait). No keepalive: a keepalive closes a session that is not active
	// yet (cbinterface2's note), and check-in is not idleness.
	return changed, false, nil
}

// Collect closes any session this triage opened and still holds, and
// summarises what the sensors found. A sensor that had not finished counts
// as failed.
func (d *Driver) Collect(ctx context.Context, raw edr.Ref) (edr.Result, error) {
	r, err := decodeRef(raw)
	if err != nil {
		return edr.Result{}, err
	}
	for _, s := range r.Sensors {
		if s.Step == stepDone {
			continue
		}
		if s.Failure == "" && s.Step != stepClose {
			s.Failure = fmt.Sprintf("the triage had not finished (%s) when results were collected", s.Step)
		}
		if err := d.finish(ctx, "collect", s); err != nil {
			return edr.Result{}, err
		}
	}
	if err := r.failure("collect"); err != nil {
		return edr.Result{}, err
	}
	return r.result(), nil
}

// Cancel cancels the command each unfinished sensor is following, if it is
// still pending or in progress, and closes every session this triage
// opened (a borrowed session is left to its owner). Sessions and commands
// that are already gone are ignored. Errors are returned after every sensor
// was tried; retrying Cancel is safe.
func (d *Driver) Cancel(ctx context.Context, raw edr.Ref) error {
	r, err := decodeRef(raw)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range r.Sensors {
		if s.Step == stepDone || s.SessionID == "" {
			continue
		}
		if (s.Step == stepProcessList || s.Step == stepGetFile) && s.CommandID != "" {
			if err := d.cancelCommand(ctx, s); err != nil {
				errs = append(errs, err)
			}
		}
		if s.Borrowed {
			continue
		}
		if err := d.closeSession(ctx, "cancel", s.SessionID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// keepaliveEvery is half the shorter of the session's sensor_wait_timeout
// and session_timeout (the sensor quits when no command is issued within
// it), each when reported, and at least minKeepalive.
func keepaliveEvery(s *sensorRef) time.Duration {
	wait := defaultWaitTimeout
	if s.WaitTimeout > 0 {
		wait = seconds(s.WaitTimeout)
	}
	if s.SessionTimeout > 0 {
		wait = min(wait, seconds(s.SessionTimeout))
	}
	return max(wait/2, minKeepalive)
}

// seconds converts a timeout reported in seconds, saturating instead of
// overflowing.
func seconds(v float64) time.Duration {
	if v >= float64(math.MaxInt64/time.Second) {
		return math.MaxInt64
	}
	return time.Duration(v * float64(time.Second))
}

// nextPoll suggests the next Poll: the poll interval, or sooner when a
// keepalive falls due first, or at once when a sensor has something to do
// that needs no waiting.
func (d *Driver) nextPoll(r *opRef) time.Duration {
	next := d.pollEvery
	now := d.now()
	for _, s := range r.Sensors {
		switch s.Step {
		case stepProcessList, stepGetFile:
			next = min(next, s.LastActivity.Add(keepaliveEvery(s)).Sub(now))
		case stepOpen, stepClose:
			next = 0
		}
	}
	return max(next, time.Millisecond)
}

// missingCommands lists the commands the triage needs that an active
// session's supported_commands leaves out.
func missingCommands(sess session, needList, needFile bool) []string {
	if sess.SupportedCommands == nil || len(*sess.SupportedCommands) == 0 {
		// Not reported (an active session listing no command at all says
		// nothing either: the document's pending session shows []): let the
		// commands speak for themselves.
		return nil
	}
	var need []string
	if needList {
		need = append(need, cmdProcessList)
	}
	if needFile {
		need = append(need, cmdGetFile)
	}
	var missing []string
	for _, n := range need {
		if !slices.ContainsFunc(*sess.SupportedCommands, func(c string) bool {
			return strings.EqualFold(strings.TrimSpace(c), n)
		}) {
			missing = append(missing, fmt.Sprintf("%q", n))
		}
	}
	return missing
}

func ended(status string) string {
	switch status {
	case "timeout":
		return "the Live Response session timed out"
	case "inactive":
		return "the Live Response session became inactive"
	}
	return "the Live Response session was closed"
}

func norm(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
