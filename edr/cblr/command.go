package cblr

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// issueNext issues the next command s needs on its active session: "process
// list", then (with a path) "get file".
func (d *Driver) issueNext(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	if !s.Listed {
		return d.issue(ctx, r, s, stepProcessList, cmdProcessList, "")
	}
	if r.Path == "" {
		s.Step = stepClose
		return true, false, nil
	}
	return d.issueGetFile(ctx, r, s)
}

// issueGetFile issues "get file". The server refusing it (unsupported, bad
// path) is a note: the process list stands.
func (d *Driver) issueGetFile(ctx context.Context, r *opRef, s *sensorRef) (changed, acted bool, err error) {
	_, acted, err = d.issue(ctx, r, s, stepGetFile, cmdGetFile, r.Path)
	if err != nil && !taskLevel(err) {
		_, msg := reason(err)
		s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: %s", r.Path, msg))
		s.Step = stepClose
		return true, false, nil
	}
	return true, acted, err
}

// issue creates command name (with object) in s's session, or adopts an
// identical one an earlier attempt created, and moves s to next. It reports
// acted when the command was accepted or adopted: the Ref must be
// checkpointed before anything else. A 404 (the session or sensor gone)
// acquires another session when the session ended (see lostSession).
func (d *Driver) issue(ctx context.Context, r *opRef, s *sensorRef, next step, name, object string) (changed, acted bool, err error) {
	if !s.Borrowed {
		// In a borrowed session an identical command may be its owner's:
		// it is not adopted (a read-only command repeated after a crash
		// costs less than following, or cancelling, someone else's).
		if c, ok, err := d.findCommand(ctx, r, s, name, object); err != nil {
			return false, false, err
		} else if ok {
			s.CommandID, s.FileID, s.Step = c.ID, c.FileID, next
			return true, true, nil
		}
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
		why := fmt.Sprintf("CB EDR refused the %q command (HTTP 404: %s)", name, d.vendorText(resp.Status, resp.Body))
		return true, false, d.lostSession(ctx, s, why, saysNotFound(resp.Body))
	}
	c, err := decodeAnswer(d, "poll", what, resp, decodeCommand)
	if err != nil {
		return false, false, err
	}
	if c.ID == "" {
		return false, false, d.answers.Malformed(vendorhttp.Call{Op: "poll", What: what}, resp.Status, errors.New("the new command has no id"))
	}
	s.CommandID, s.FileID, s.Step = c.ID, c.FileID, next
	s.LastActivity = d.now()
	return true, true, nil
}

// saysNotFound applies cbapi's rule for a 404 to a command POST: the body
// begins "Session" or "Sensor", or is JSON with "status": "NOT_FOUND".
func saysNotFound(body []byte) bool {
	b := bytes.TrimSpace(body)
	if bytes.HasPrefix(b, []byte("Session")) || bytes.HasPrefix(b, []byte("Sensor")) {
		return true
	}
	var m struct {
		Status string `json:"status"`
	}
	return json.Unmarshal(b, &m) == nil && m.Status == "NOT_FOUND"
}

// findCommand looks for a command with this name and object that an earlier
// attempt created in s's session (the vendor accepted it, but the answer or
// the checkpoint was lost), created no earlier than the intent less
// edr.FindSkew (an identical command an analyst ran last week is not
// adopted). Cancelled and failed commands are not adopted. A server that
// cannot list commands, or answers with a list this driver cannot read, is
// not an error: the command is then simply created.
func (d *Driver) findCommand(ctx context.Context, r *opRef, s *sensorRef, name, object string) (command, bool, error) {
	what := "GET commands in session " + string(s.SessionID)
	resp, err := d.send(ctx, "poll", http.MethodGet, sessionPath(s.SessionID)+"/command", nil)
	if err != nil {
		return command{}, false, err
	}
	switch {
	case resp.Status == http.StatusUnauthorized, resp.Status == http.StatusTooManyRequests, resp.Status >= 500:
		return command{}, false, d.answers.Error(vendorhttp.Call{Op: "poll", What: what}, resp)
	case !ok2xx(resp.Status):
		return command{}, false, nil
	}
	list, err := []command(nil), d.checkTokens("poll", what, resp.Body)
	if err == nil {
		list, err = decodeCommandList(resp.Body)
	}
	if err != nil {
		d.log.Warn("unreadable command list; creating the command without looking for an earlier one",
			zap.Int64("sensor_id", s.SensorID), zap.String("session_id", string(s.SessionID)),
			zap.String("command", name), zap.Error(err))
		return command{}, false, nil
	}
	from := 0.0
	if r.At > 0 {
		from = float64(r.At)/1000 - edr.FindSkew.Seconds()
	}
	for _, c := range list {
		if c.ID == "" || !strings.EqualFold(strings.TrimSpace(c.Name), name) ||
			!strings.EqualFold(strings.TrimSpace(string(c.Object)), object) {
			continue
		}
		if ct := float64(c.CreateTime); ct > 0 && ct < from {
			continue
		}
		switch norm(c.Status) {
		case "cancel", "canceled", "cancelled", "error", "failed":
			continue
		}
		return c, true, nil
	}
	return command{}, false, nil
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
		why := fmt.Sprintf("the %q command %s disappeared (HTTP 404)", name, s.CommandID)
		return true, false, d.lostSession(ctx, s, why, false)
	}
	c, err := decodeAnswer(d, "poll", what, resp, decodeCommand)
	if err != nil {
		return false, false, err
	}
	switch norm(c.Status) {
	case "complete", "completed":
		if s.Step == stepProcessList {
			s.recordProcesses(r, c.Processes)
			s.Listed = true
			s.CommandID = ""
			if r.Path == "" {
				s.Step = stepClose
				return true, false, nil
			}
			return d.issueGetFile(ctx, r, s)
		}
		if c.FileID != "" {
			s.FileID = c.FileID
		}
		if s.FileID == "" {
			s.fail(0, "the %q command completed without a file_id", name)
			return true, false, nil
		}
		if d.fileMeta {
			return d.fetchFile(ctx, r, s)
		}
		return d.fetchContent(ctx, r, s, 0)
	case "error", "failed":
		return true, false, d.commandFailed(ctx, r, s, c)
	case "cancel", "canceled", "cancelled":
		s.fail(0, "the %q command was cancelled (command cancelled)", name)
		return true, false, nil
	}
	// pending / in progress
	sent, isGone, err := d.keepaliveIfDue(ctx, s)
	if err != nil || !isGone {
		return sent, false, err
	}
	return true, false, d.lostSession(ctx, s, fmt.Sprintf("the session stopped accepting keepalives while %q ran", name), false)
}

// commandFailed handles a command that ended in error. A "get file" of a
// path that is not on the host is the answer "not on this host" (a note).
// A command cut short because its session was closed or forgotten runs
// again in another session (reopen). A session that timed out or became
// inactive under it fails the sensor. Otherwise a failed "process list"
// fails the sensor, and a failed "get file" (locked, access denied, upload
// failed) is a note: the process list has answered.
func (d *Driver) commandFailed(ctx context.Context, r *opRef, s *sensorRef, c command) error {
	c.ResultType, c.ResultDesc = d.redact.String(c.ResultType), d.redact.String(c.ResultDesc) // the sensor's words
	name := cmdProcessList
	if s.Step == stepGetFile {
		name = cmdGetFile
		if fileNotFound(c) {
			s.Remarks = append(s.Remarks, fmt.Sprintf("%s is not on the host (%s)", r.Path, resultText(c)))
			s.Step = stepClose
			return nil
		}
	}
	sess, found, err := d.getSession(ctx, "poll", s.SessionID)
	switch {
	case err != nil && taskLevel(err):
		return err
	case err != nil:
		// Unreadable session: nothing says it ended.
	case !found:
		s.reopen(http.StatusNotFound, fmt.Sprintf("%s: the Live Response session %s no longer exists", commandError(name, c), s.SessionID))
		return nil
	default:
		switch st := norm(sess.Status); st {
		case "close", "closed":
			s.reopen(0, fmt.Sprintf("%s: %s", commandError(name, c), ended(st)))
			return nil
		case "timeout", "inactive":
			s.fail(0, "%s: %s", commandError(name, c), ended(st))
			return nil
		}
	}
	if name == cmdProcessList {
		s.fail(0, "%s", commandError(name, c))
		return nil
	}
	s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: %s", r.Path, commandError(name, c)))
	s.Step = stepClose
	return nil
}

// fetchFile reads the file object of a completed "get file" (Config.
// FileMetadata) and then its content.
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
	meta, err := decodeAnswer(d, "poll", what, resp, decodeFile)
	if err != nil {
		return false, false, err
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
		s.File = &retrievedFile{Path: r.Path, Size: size, TooLarge: true, Limit: d.maxFile}
		s.Step = stepClose
		return true, false, nil
	}
	return d.fetchContent(ctx, r, s, size)
}

// fetchContent streams the content of the retrieved file (capped at
// MaxFile) and keeps its size and sha256. size is what the file store
// reported, 0 when it was not asked. A content the server will not give is
// a note, as a failed "get file".
func (d *Driver) fetchContent(ctx context.Context, r *opRef, s *sensorRef, size int64) (changed, acted bool, err error) {
	n, sum, err := d.download(ctx, s)
	switch {
	case errors.Is(err, httpc.ErrTooLarge):
		s.File = &retrievedFile{Path: r.Path, Size: size, TooLarge: true, Limit: d.maxFile}
	case err != nil && taskLevel(err):
		return false, false, err
	case err != nil:
		_, msg := reason(err)
		s.Remarks = append(s.Remarks, fmt.Sprintf("could not retrieve %s: %s", r.Path, msg))
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
		if errors.As(err, &se) {
			return 0, "", d.answers.StatusError(vendorhttp.Call{Op: "poll", What: what}, se)
		}
		return 0, "", d.answers.NoAnswer(ctx, "poll", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		if errors.Is(err, httpc.ErrTooLarge) {
			return n, "", err
		}
		return 0, "", d.answers.NoAnswer(ctx, "poll", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
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
		if d.checkTokens("cancel", "GET command", resp.Body) == nil {
			obj = decodeLoose(resp.Body)
		}
	case gone(resp.Status):
		return nil
	default:
		return d.answers.Error(vendorhttp.Call{Op: "cancel", What: "GET command " + string(s.CommandID)}, resp)
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
	return d.answers.Error(vendorhttp.Call{Op: "cancel", What: "PUT command " + string(s.CommandID) + " status cancel"}, resp)
}

// checkTokens refuses an answer holding a JSON value longer than MaxToken,
// before anything decodes it: a permanent failure of the sensor.
func (d *Driver) checkTokens(op, what string, body []byte) error {
	if n := vendorhttp.LongestToken(body); n > d.maxToken {
		return &edr.Error{Vendor: vendor, Op: op, Msg: fmt.Sprintf(
			"%s: the answer holds a JSON value of %d bytes, over the limit of %d bytes (Config.MaxToken); refusing it", what, n, d.maxToken)}
	}
	return nil
}
