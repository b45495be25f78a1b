package cblr

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxFile      = 64 << 20
	DefaultPollInterval = 2 * time.Second
	// defaultWaitTimeout is assumed when a session does not report its
	// sensor_wait_timeout (the document's example says 120 s).
	defaultWaitTimeout = 120 * time.Second
	// minKeepalive is the shortest keepalive interval, whatever timeouts a
	// session reports: it keeps a nonsensical timeout from turning every
	// Poll into a keepalive.
	minKeepalive = 100 * time.Millisecond
	// uploadStallPolls and uploadStallTime bound the wait for a file whose
	// size_uploaded stays below its size: after that many polls, or that
	// long, without progress its content is read anyway (and its size and
	// sha256 taken from what arrives).
	uploadStallPolls = 10
	uploadStallTime  = 2 * time.Minute
	// maxMatched caps the matching processes remembered per sensor.
	maxMatched = 10
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
	// MaxFile caps a retrieved file; a larger file is reported (size, not
	// hashed) but not downloaded. Default DefaultMaxFile.
	MaxFile int64
	// PollInterval is the longest NextPoll the driver suggests while it
	// waits on the vendor (it suggests less when a keepalive is due sooner).
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// Limiter paces requests fleet-wide; nil = none.
	Limiter httpc.Limiter
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger is optional.
	Logger *zap.Logger
}

// String describes the configuration without the token.
func (c Config) String() string {
	return fmt.Sprintf("cblr.Config{URL: %s, APIToken: [redacted], Timeout: %s, MaxFile: %d}",
		httpc.Redact(c.URL), c.Timeout, c.MaxFile)
}

// GoString is String, so %#v does not print the token either.
func (c Config) GoString() string { return c.String() }

// Driver runs Live Response triage. It is safe for concurrent use.
type Driver struct {
	base      string // scheme://host[/prefix], no trailing slash
	token     string
	hc        *httpc.Client
	maxFile   int64
	pollEvery time.Duration
	now       func() time.Time
	log       *zap.Logger
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
	case cfg.Timeout < 0, cfg.MaxBody < 0, cfg.MaxFile < 0, cfg.PollInterval < 0:
		return nil, errors.New("cblr: Config.Timeout, MaxBody, MaxFile and PollInterval must not be negative")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Driver{
		base:  u.Scheme + "://" + u.Host + strings.TrimRight(u.EscapedPath(), "/"),
		token: cfg.APIToken,
		hc: httpc.New(httpc.Config{
			Service: vendor, UserAgent: cfg.UserAgent, Timeout: cfg.Timeout,
			MaxBody: cfg.MaxBody, Limiter: cfg.Limiter, Transport: cfg.Transport,
		}),
		maxFile:   cmp.Or(cfg.MaxFile, DefaultMaxFile),
		pollEvery: cmp.Or(cfg.PollInterval, DefaultPollInterval),
		now:       now,
		log:       log.Named(vendor),
	}, nil
}

// String describes the driver without its token.
func (d *Driver) String() string { return "cblr.Driver(" + httpc.Redact(d.base) + ")" }

// Kind returns edr.KindCBLRTriage.
func (d *Driver) Kind() string { return edr.KindCBLRTriage }

// Start opens one Live Response session per sensor named in t. A sensor
// whose session the vendor refuses (Live Response disabled, session limit,
// unknown sensor) is recorded as failed; Start fails only when every sensor
// was refused, or on a task-level error (rejected token, 429, 5xx, network),
// in which case the sessions it already opened are closed first.
// Find is not implemented yet: the operation is started again.
func (d *Driver) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrFindUnsupported
}

func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing the sample hash", Err: err}
	}
	if len(t.Sensors) == 0 {
		return nil, edr.Permanent(vendor, "start", "no sensors named in the submission (metaData sensorId/sensorIds)")
	}
	var ids []int64
	for _, id := range t.Sensors {
		if id <= 0 {
			return nil, edr.Permanent(vendor, "start", fmt.Sprintf("invalid sensor id %d in the submission", id))
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	r := &opRef{V: refVersion, SHA256: sha, Path: strings.TrimSpace(t.Path), FileName: strings.TrimSpace(t.FileName)}
	for _, id := range ids {
		s := &sensorRef{SensorID: id}
		r.Sensors = append(r.Sensors, s)
		if err := d.openSession(ctx, s); err != nil {
			if taskLevel(err) {
				d.closeOpened(ctx, r)
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

func (d *Driver) openSession(ctx context.Context, s *sensorRef) error {
	resp, err := d.send(ctx, "start", http.MethodPost, sessionBase, map[string]any{"sensor_id": s.SensorID})
	if err != nil {
		return err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return &edr.Error{Vendor: vendor, Op: "start", Status: resp.Status, Msg: fmt.Sprintf(
			"CB EDR does not know this sensor (HTTP 404: %s); check the sensor id, or CBLR_URL if every sensor fails",
			vendorText(resp.Status, resp.Body))}
	case resp.Status >= 400 && resp.Status < 500 && resp.Status != http.StatusUnauthorized &&
		resp.Status != http.StatusTooManyRequests && resp.Status != http.StatusRequestTimeout:
		return &edr.Error{Vendor: vendor, Op: "start", Status: resp.Status, Msg: fmt.Sprintf(
			"CB EDR refused a Live Response session: %s", vendorText(resp.Status, resp.Body))}
	case !ok2xx(resp.Status):
		return statusError("start", "POST session", resp)
	}
	sess, err := decodeSession(resp.Body)
	if err != nil {
		return malformed("start", "POST session", err)
	}
	if sess.ID == "" {
		return malformed("start", "POST session", errors.New("the new session has no id"))
	}
	s.SessionID = sess.ID
	s.Host = sess.Hostname
	s.WaitTimeout = float64(sess.SensorWaitTimeout)
	s.SessionTimeout = float64(sess.SessionTimeout)
	s.LastActivity = d.now()
	s.Step = stepWait
	return nil
}

// closeOpened closes, best effort, the sessions Start opened before it
// failed. The caller's context may have ended: closing still gets a short
// budget of its own.
func (d *Driver) closeOpened(ctx context.Context, r *opRef) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for _, s := range r.Sensors {
		if s.SessionID != "" {
			_ = d.closeSession(cctx, "start", s.SessionID) // best effort: the session times out on its own otherwise
		}
	}
}

// Poll advances every unfinished sensor by one step. It returns as soon as
// the vendor accepted a command or a session was closed, with the new Ref,
// so that the runner checkpoints it first. Done is set when every sensor is
// finished; when every sensor failed, Poll returns the permanent error
// instead (their sessions are closed by then).
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
// the vendor's state changed (command accepted, session closed). Only
// task-level errors are returned: anything else fails the sensor, whose
// session is then closed.
func (d *Driver) advance(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	switch s.Step {
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
		if missing := missingCommands(sess, r.Path != ""); len(missing) > 0 {
			s.fail(0, "the sensor does not support the Live Response command(s) %s", strings.Join(missing, ", "))
			return true, false, nil
		}
		return d.issue(ctx, r, s, stepProcessList, cmdProcessList, "")
	case "timeout", "inactive", "close", "closed":
		s.fail(0, "%s before the sensor checked in (the host may be offline or unable to reach the CB EDR server)", ended(st))
		return true, false, nil
	}
	// "pending", or a status this driver does not know: keep waiting (the
	// server's check_in_timeout, and the runner's deadline, bound the
	// wait). No keepalive: a keepalive closes a session that is not active
	// yet (cbinterface2's note), and check-in is not idleness.
	return changed, false, nil
}

// stepCommand follows the command s.CommandID.
func (d *Driver) stepCommand(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	name := cmdProcessList
	if s.Step == stepGetFile {
		name = cmdGetFile
	}
	what := fmt.Sprintf("GET command %s (%s) in session %s", s.CommandID, name, s.SessionID)
	resp, err := d.send(ctx, "poll", http.MethodGet, commandPath(s.SessionID, s.CommandID), nil)
	if err != nil {
		return false, false, err
	}
	if resp.Status == http.StatusNotFound {
		return true, false, d.explainGone(ctx, s, fmt.Sprintf("the %q command %s disappeared (HTTP 404)", name, s.CommandID))
	}
	if !ok2xx(resp.Status) {
		return false, false, statusError("poll", what, resp)
	}
	c, err := decodeCommand(resp.Body)
	if err != nil {
		return false, false, malformed("poll", what, err)
	}
	switch norm(c.Status) {
	case "complete", "completed":
		if s.Step == stepProcessList {
			s.recordProcesses(r, c.Processes)
			if r.Path == "" {
				s.Step = stepClose
				return true, false, nil
			}
			_, acted, err := d.issue(ctx, r, s, stepGetFile, cmdGetFile, r.Path)
			if err != nil && !taskLevel(err) {
				// The server refused "get file" (unsupported, bad path):
				// the process list stands, the file is a note.
				_, msg := reason(err)
				s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: %s", r.Path, msg))
				s.Step = stepClose
				return true, false, nil
			}
			return true, acted, err
		}
		if c.FileID != "" {
			s.FileID = c.FileID
		}
		if s.FileID == "" {
			s.fail(0, "the %q command completed without a file_id", name)
			return true, false, nil
		}
		return d.fetchFile(ctx, r, s)
	case "error", "failed":
		if s.Step == stepGetFile {
			return true, false, d.getFileFailed(ctx, r, s, c)
		}
		s.fail(0, "%s", commandError(name, c))
		return true, false, nil
	case "cancel", "canceled", "cancelled":
		s.fail(0, "the %q command was cancelled (command cancelled)", name)
		return true, false, nil
	}
	// pending / in progress
	sent, isGone, err := d.keepaliveIfDue(ctx, s)
	if err != nil || !isGone {
		return sent, false, err
	}
	return true, false, d.explainGone(ctx, s, fmt.Sprintf("the session stopped accepting keepalives while %q ran", name))
}

// getFileFailed handles a "get file" that ended in error. The process list
// has answered by then, so an error of the command itself (file not found,
// locked, access denied, upload failed) is a note on the sensor's result,
// not a failure; a session that ended under the command is a failure, as
// everywhere else.
func (d *Driver) getFileFailed(ctx context.Context, r *opRef, s *sensorRef, c command) error {
	if fileNotFound(c) {
		// The answer is "the file is not on this host".
		s.Remarks = append(s.Remarks, fmt.Sprintf("%s is not on the host (%s)", r.Path, resultText(c)))
		s.Step = stepClose
		return nil
	}
	sess, found, err := d.getSession(ctx, "poll", s.SessionID)
	switch {
	case err != nil && taskLevel(err):
		return err
	case err != nil:
		// Unreadable session: nothing says it ended.
	case !found:
		s.fail(http.StatusNotFound, "%s: the Live Response session %s no longer exists", commandError(cmdGetFile, c), s.SessionID)
		return nil
	default:
		switch st := norm(sess.Status); st {
		case "timeout", "inactive", "close", "closed":
			s.fail(0, "%s: %s", commandError(cmdGetFile, c), ended(st))
			return nil
		}
	}
	s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: %s", r.Path, commandError(cmdGetFile, c)))
	s.Step = stepClose
	return nil
}

// issue creates command name (with object) in s's session, or adopts an
// identical one an earlier attempt created, and moves s to next. It always
// reports acted: the Ref must be checkpointed before anything else.
func (d *Driver) issue(ctx context.Context, r *opRef, s *sensorRef, next step, name, object string) (changed, acted bool, err error) {
	if c, ok, err := d.findCommand(ctx, s, name, object); err != nil {
		return false, false, err
	} else if ok {
		s.CommandID, s.FileID, s.Step = c.ID, c.FileID, next
		return true, true, nil
	}
	body := map[string]any{"session_id": s.SessionID.jsonValue(), "name": name}
	if object != "" {
		body["object"] = object
	}
	what := fmt.Sprintf("POST command %q in session %s", name, s.SessionID)
	resp, err := d.send(ctx, "poll", http.MethodPost, sessionPath(s.SessionID)+"/command", body)
	if err != nil {
		return false, false, err
	}
	if resp.Status == http.StatusNotFound {
		return true, false, d.explainGone(ctx, s, fmt.Sprintf("CB EDR refused the %q command (HTTP 404: %s)", name, vendorText(resp.Status, resp.Body)))
	}
	if !ok2xx(resp.Status) {
		return false, false, statusError("poll", what, resp)
	}
	c, err := decodeCommand(resp.Body)
	if err != nil {
		return false, false, malformed("poll", what, err)
	}
	if c.ID == "" {
		return false, false, malformed("poll", what, errors.New("the new command has no id"))
	}
	s.CommandID, s.FileID, s.Step = c.ID, c.FileID, next
	s.LastActivity = d.now()
	return true, true, nil
}

// findCommand looks for a command with this name and object that an earlier
// attempt created in s's session (the vendor accepted it, but the answer or
// the checkpoint was lost). A server that cannot list commands, or answers
// with a list this driver cannot read, is not an error: the command is then
// simply created.
func (d *Driver) findCommand(ctx context.Context, s *sensorRef, name, object string) (command, bool, error) {
	resp, err := d.send(ctx, "poll", http.MethodGet, sessionPath(s.SessionID)+"/command", nil)
	if err != nil {
		return command{}, false, err
	}
	switch {
	case resp.Status == http.StatusUnauthorized, resp.Status == http.StatusTooManyRequests, resp.Status >= 500:
		return command{}, false, statusError("poll", "GET commands in session "+string(s.SessionID), resp)
	case !ok2xx(resp.Status):
		return command{}, false, nil
	}
	list, err := decodeCommandList(resp.Body)
	if err != nil {
		d.log.Warn("unreadable command list; creating the command without looking for an earlier one",
			zap.Int64("sensor_id", s.SensorID), zap.String("session_id", string(s.SessionID)),
			zap.String("command", name), zap.Error(err))
		return command{}, false, nil
	}
	for _, c := range list {
		if c.ID == "" || !strings.EqualFold(strings.TrimSpace(c.Name), name) ||
			!strings.EqualFold(strings.TrimSpace(string(c.Object)), object) {
			continue
		}
		switch norm(c.Status) {
		case "cancel", "canceled", "cancelled":
			continue
		}
		return c, true, nil
	}
	return command{}, false, nil
}

// fetchFile reads the file object of a completed "get file" and streams its
// content, keeping only size and sha256.
func (d *Driver) fetchFile(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	what := fmt.Sprintf("GET file %s in session %s", s.FileID, s.SessionID)
	resp, err := d.send(ctx, "poll", http.MethodGet, filePath(s.SessionID, s.FileID), nil)
	if err != nil {
		return false, false, err
	}
	if resp.Status == http.StatusNotFound {
		s.fail(resp.Status, "file %s of the %q command is not in the session's file store (HTTP 404)", s.FileID, cmdGetFile)
		return true, false, nil
	}
	if !ok2xx(resp.Status) {
		return false, false, statusError("poll", what, resp)
	}
	meta, err := decodeFile(resp.Body)
	if err != nil {
		return false, false, malformed("poll", what, err)
	}
	if st := strings.TrimSpace(string(meta.Status)); st != "" && st != "0" {
		// The file request failed on the sensor: like a "get file" error,
		// a note.
		s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: the sensor could not upload it (file status %s)", r.Path, clip(st)))
		s.Step = stepClose
		return true, false, nil
	}
	size := int64(meta.Size)
	if meta.SizeUploaded != nil && int64(*meta.SizeUploaded) < size {
		// Still arriving from the sensor: poll again, unless the upload
		// made no progress for uploadStallPolls polls or uploadStallTime.
		up, now := int64(*meta.SizeUploaded), d.now()
		if s.UploadSince.IsZero() || up != s.Uploaded {
			s.Uploaded, s.UploadSince, s.UploadStalls = up, now, 0
		} else {
			s.UploadStalls++
		}
		if s.UploadStalls < uploadStallPolls && now.Sub(s.UploadSince) < uploadStallTime {
			_, _, err := d.keepaliveIfDue(ctx, s)
			return true, false, err
		}
		s.Remarks = append(s.Remarks, fmt.Sprintf("the upload of %s stayed at %d of %d bytes (%d polls, %s); its content was read anyway",
			r.Path, up, size, s.UploadStalls, now.Sub(s.UploadSince).Round(time.Millisecond)))
	}
	if size > d.maxFile {
		s.File = &retrievedFile{Path: r.Path, Size: size, TooLarge: true}
		s.Step = stepClose
		return true, false, nil
	}
	n, sum, err := d.download(ctx, s)
	switch {
	case errors.Is(err, httpc.ErrTooLarge):
		s.File = &retrievedFile{Path: r.Path, Size: max(size, d.maxFile+1), TooLarge: true}
	case err != nil:
		return false, false, err
	default:
		s.File = &retrievedFile{Path: r.Path, Size: n, SHA256: sum}
		if size > 0 && size != n {
			s.Remarks = append(s.Remarks, fmt.Sprintf("the file store reported %d bytes for %s but %d arrived", size, r.Path, n))
		}
	}
	s.Step = stepClose
	return true, false, nil
}

// download streams the file content, capped at MaxFile, and hashes it.
func (d *Driver) download(ctx context.Context, s *sensorRef) (int64, string, error) {
	what := fmt.Sprintf("GET content of file %s in session %s", s.FileID, s.SessionID)
	req, err := d.newRequest(ctx, http.MethodGet, filePath(s.SessionID, s.FileID)+"/content", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/octet-stream")
	resp, err := d.hc.Stream(req, d.maxFile)
	if err != nil {
		var se *httpc.StatusError
		if errors.As(err, &se) && !se.Retryable() && se.Status != http.StatusUnauthorized {
			return 0, "", &edr.Error{Vendor: vendor, Op: "poll", Status: se.Status,
				Msg: fmt.Sprintf("%s: HTTP %d: %s", what, se.Status, clip(se.Body))}
		}
		if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
			return 0, "", &edr.Error{Vendor: vendor, Op: "poll", Status: se.Status, Msg: msgBadToken}
		}
		return 0, "", edr.Wrap(vendor, "poll", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		if errors.Is(err, httpc.ErrTooLarge) {
			return n, "", err
		}
		return 0, "", edr.Wrap(vendor, "poll", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}

// getSession fetches session id; found is false on 404.
func (d *Driver) getSession(ctx context.Context, op string, id flexID) (session, bool, error) {
	what := "GET session " + string(id)
	resp, err := d.send(ctx, op, http.MethodGet, sessionPath(id), nil)
	if err != nil {
		return session{}, false, err
	}
	if resp.Status == http.StatusNotFound {
		return session{}, false, nil
	}
	if !ok2xx(resp.Status) {
		return session{}, false, statusError(op, what, resp)
	}
	sess, err := decodeSession(resp.Body)
	if err != nil {
		return session{}, false, malformed(op, what, err)
	}
	return sess, true, nil
}

// explainGone fails s with why, adding the session's status when the
// session has ended (the usual reason a command or keepalive is refused).
// When the session is still open the failure is why alone.
func (d *Driver) explainGone(ctx context.Context, s *sensorRef, why string) error {
	sess, found, err := d.getSession(ctx, "poll", s.SessionID)
	switch {
	case err != nil && taskLevel(err):
		return err
	case err != nil:
		s.fail(0, "%s", why)
	case !found:
		s.fail(http.StatusNotFound, "%s: the Live Response session %s no longer exists", why, s.SessionID)
	default:
		switch st := norm(sess.Status); st {
		case "timeout", "inactive", "close", "closed":
			s.fail(0, "%s: %s", why, ended(st))
		default:
			s.fail(0, "%s", why)
		}
	}
	return nil
}

// keepaliveIfDue sends GET …/keepalive when keepaliveEvery has passed since
// the session's last activity. isGone reports that the server refused it as
// for an ended session.
func (d *Driver) keepaliveIfDue(ctx context.Context, s *sensorRef) (sent, isGone bool, err error) {
	now := d.now()
	if now.Sub(s.LastActivity) < keepaliveEvery(s) {
		return false, false, nil
	}
	resp, err := d.send(ctx, "poll", http.MethodGet, sessionPath(s.SessionID)+"/keepalive", nil)
	if err != nil {
		return false, false, err
	}
	switch {
	case ok2xx(resp.Status):
		s.LastActivity = now
		return true, false, nil
	case gone(resp.Status):
		return false, true, nil
	}
	return false, false, statusError("poll", "GET keepalive of session "+string(s.SessionID), resp)
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
// keepalive falls due first.
func (d *Driver) nextPoll(r *opRef) time.Duration {
	next := d.pollEvery
	now := d.now()
	for _, s := range r.Sensors {
		switch s.Step {
		case stepProcessList, stepGetFile:
			next = min(next, s.LastActivity.Add(keepaliveEvery(s)).Sub(now))
		case stepClose:
			next = 0
		}
	}
	return max(next, time.Millisecond)
}

// finish closes s's session and marks s done. A session the server will
// not close for a permanent reason is noted, not retried forever.
func (d *Driver) finish(ctx context.Context, op string, s *sensorRef) error {
	if err := d.closeSession(ctx, op, s.SessionID); err != nil {
		if taskLevel(err) {
			return err
		}
		_, msg := reason(err)
		s.Remarks = append(s.Remarks, "could not close the Live Response session: "+msg)
	}
	s.CommandID = ""
	s.Step = stepDone
	return nil
}

// closeSession closes session id the documented way: GET the session
// object, set its status to "close", PUT it back. A session that is gone
// (404) or already ended counts as closed.
func (d *Driver) closeSession(ctx context.Context, op string, id flexID) error {
	resp, err := d.send(ctx, op, http.MethodGet, sessionPath(id), nil)
	if err != nil {
		return err
	}
	var obj map[string]any
	switch {
	case resp.Status == http.StatusNotFound:
		return nil
	case ok2xx(resp.Status):
		obj = decodeLoose(resp.Body)
	case gone(resp.Status):
	default:
		return statusError(op, "GET session "+string(id), resp)
	}
	if obj == nil {
		// Unreadable: PUT the least the server needs.
		obj = map[string]any{"id": id.jsonValue()}
	} else if st, _ := obj["status"].(string); norm(st) == "close" || norm(st) == "closed" {
		return nil
	}
	obj["status"] = "close"
	resp, err = d.send(ctx, op, http.MethodPut, sessionPath(id), obj)
	if err != nil {
		return err
	}
	if ok2xx(resp.Status) || gone(resp.Status) {
		return nil
	}
	return statusError(op, "PUT session "+string(id)+" status close", resp)
}

// Collect closes any session still open and summarises what the sensors
// found. A sensor that had not finished counts as failed.
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
// still pending or in progress, and closes every open session. Sessions and
// commands that are already gone are ignored. Errors are returned after
// every sensor was tried; retrying Cancel is safe.
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
		if err := d.closeSession(ctx, "cancel", s.SessionID); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// cancelCommand PUTs the command object back with status "cancel" when it
// is still pending or in progress.
func (d *Driver) cancelCommand(ctx context.Context, s *sensorRef) error {
	path := commandPath(s.SessionID, s.CommandID)
	resp, err := d.send(ctx, "cancel", http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	var obj map[string]any
	switch {
	case ok2xx(resp.Status):
		obj = decodeLoose(resp.Body)
	case gone(resp.Status):
		return nil
	default:
		return statusError("cancel", "GET command "+string(s.CommandID), resp)
	}
	if obj == nil {
		obj = map[string]any{"id": s.CommandID.jsonValue(), "session_id": s.SessionID.jsonValue()}
	} else {
		st, _ := obj["status"].(string)
		switch norm(st) {
		case "", "pending", "in progress", "in_progress":
		default:
			return nil // finished one way or another: nothing to cancel
		}
	}
	obj["status"] = "cancel"
	resp, err = d.send(ctx, "cancel", http.MethodPut, path, obj)
	if err != nil {
		return err
	}
	if ok2xx(resp.Status) || gone(resp.Status) {
		return nil
	}
	return statusError("cancel", "PUT command "+string(s.CommandID)+" status cancel", resp)
}

// absorb takes what the session object says about the sensor.
func (s *sensorRef) absorb(sess session) (changed bool) {
	if h := clip(sess.Hostname); h != "" && h != s.Host {
		s.Host, changed = h, true
	}
	if w := float64(sess.SensorWaitTimeout); w > 0 && w != s.WaitTimeout {
		s.WaitTimeout, changed = w, true
	}
	if w := float64(sess.SessionTimeout); w > 0 && w != s.SessionTimeout {
		s.SessionTimeout, changed = w, true
	}
	return changed
}

func missingCommands(sess session, needFile bool) []string {
	if sess.SupportedCommands == nil || len(*sess.SupportedCommands) == 0 {
		// Not reported (an active session listing no command at all says
		// nothing either: the document's pending session shows []): let the
		// commands speak for themselves.
		return nil
	}
	need := []string{cmdProcessList}
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
