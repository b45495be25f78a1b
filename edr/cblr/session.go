package cblr

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// liveSessions lists the server's pending and active sessions, by sensor:
// GET /session?active_only=true, as cbapi asks (a server older than 6.3
// ignores the parameter and lists ended sessions too, so the statuses are
// filtered here as well). listed is false when the server would not list
// them (a 4xx other than 401 and 429, an unreadable answer): the caller
// then opens sessions without looking for one to reuse. Task-level
// failures (401, 429, 5xx, network) are returned.
func (d *Driver) liveSessions(ctx context.Context, op string) (live map[int64][]session, listed bool, err error) {
	const what = "GET sessions"
	unlisted := func(why error) (map[int64][]session, bool, error) {
		d.log.Warn("could not list the Live Response sessions; opening sessions without looking for one to reuse",
			zap.String("op", op), zap.Error(why))
		return nil, false, nil
	}
	resp, err := d.send(ctx, op, http.MethodGet, sessionBase+"?active_only=true", nil)
	if err != nil {
		if taskLevel(err) {
			return nil, false, err
		}
		return unlisted(err)
	}
	switch {
	case resp.Status == http.StatusUnauthorized, resp.Status == http.StatusTooManyRequests, resp.Status >= 500:
		return nil, false, d.answers.Error(vendorhttp.Call{Op: op, What: what}, resp)
	case !ok2xx(resp.Status):
		return unlisted(d.answers.Error(vendorhttp.Call{Op: op, What: what}, resp))
	}
	if err := d.checkTokens(op, what, resp.Body); err != nil {
		return unlisted(err)
	}
	list, err := decodeSessionList(resp.Body)
	if err != nil {
		return unlisted(err)
	}
	live = map[int64][]session{}
	for _, s := range list {
		switch norm(s.Status) {
		case "pending", "active":
		default:
			continue
		}
		id, err := strconv.ParseInt(string(s.SensorID), 10, 64)
		if err != nil || s.ID == "" {
			continue
		}
		live[id] = append(live[id], s)
	}
	return live, true, nil
}

// The tag. Live Response sessions carry no name or label, but a session
// POST may ask for its check_in_timeout ("checkin_timeout", seconds), and
// the session object reports it back ("check_in_timeout"). A session opened
// under an intent asks for the document's default, 1200 s, less a tag
// derived from the intent's key: 1 to 599 whole seconds and a fraction in
// milliseconds (so never longer than the default: an offline sensor is
// given up on between 10 and 20 minutes, cbapi gives up after 6). Find and Start recognise the intent's sessions by it (with
// the sensor, the status and create_time): exactly when the server keeps the
// fraction, by the whole seconds (a 1 in 599 chance of taking another
// intent's session) when it keeps only those. A server that ignores the
// request reports 1200, and no session is ever recognised: the driver then
// behaves as it would without Find.
const (
	baseCheckIn = 1200
	tagRange    = 599
)

// checkInTag returns the check-in timeout, in seconds, a session opened
// under the intent key asks for.
func checkInTag(key string) float64 {
	sum := sha256.Sum256([]byte(key))
	whole := 1 + binary.BigEndian.Uint32(sum[:4])%tagRange
	millis := binary.BigEndian.Uint32(sum[4:8]) % 1000
	return float64(baseCheckIn) - float64(whole) - float64(millis)/1000
}

// tagged reports whether a session reporting check_in_timeout got carries
// tag: the same value (to the millisecond), or its whole seconds, rounded
// either way, from a server that keeps no fraction.
func tagged(got, tag float64) bool {
	if tag == 0 {
		return false
	}
	return math.Abs(got-tag) < 0.0005 || got == math.Floor(tag) || got == math.Round(tag)
}

// owned returns the earliest of list that was opened under r's intent:
// tagged with r.Tag and created no earlier than r.At less edr.FindSkew.
func (d *Driver) owned(r *opRef, list []session) (session, bool) {
	from := float64(r.At)/1000 - edr.FindSkew.Seconds()
	best := -1
	for i, s := range list {
		ct := float64(s.CreateTime)
		if !tagged(float64(s.CheckInTimeout), r.Tag) || ct > 0 && ct < from {
			continue
		}
		if best < 0 || ct < float64(list[best].CreateTime) {
			best = i
		}
	}
	if best < 0 {
		return session{}, false
	}
	return list[best], true
}

// borrowable returns the sensor's session to borrow, as cbapi takes it: an
// active one if there is one (it needs no check-in), else the first.
func borrowable(list []session) (session, bool) {
	for _, s := range list {
		if norm(s.Status) == "active" {
			return s, true
		}
	}
	if len(list) > 0 {
		return list[0], true
	}
	return session{}, false
}

// adopt makes sess s's session.
func (d *Driver) adopt(s *sensorRef, sess session, owned bool) {
	s.SessionID = sess.ID
	s.Borrowed = !owned
	s.absorb(sess)
	s.LastActivity = d.now()
	s.Step = stepWait
}

// acquire gives s a session: its session tagged with the intent (an earlier
// attempt opened it), or with Config.ReuseSessions any session it has, or
// a new one; and when the server refuses a new one (a session limit), the
// session it has. Sessions s lost are never taken again.
func (d *Driver) acquire(ctx context.Context, op string, r *opRef, s *sensorRef, live map[int64][]session) error {
	if ok, err := d.checkSensor(ctx, op, s); err != nil || !ok {
		return err
	}
	var cands []session
	for _, sess := range live[s.SensorID] {
		if !slices.Contains(s.Lost, sess.ID) {
			cands = append(cands, sess)
		}
	}
	if sess, ok := d.owned(r, cands); ok {
		d.adopt(s, sess, true)
		return nil
	}
	if d.reuse {
		if sess, ok := borrowable(cands); ok {
			d.adopt(s, sess, false)
			return nil
		}
	}
	err := d.openSession(ctx, op, r, s)
	if refused(err) {
		if sess, ok := borrowable(cands); ok {
			_, msg := reason(err)
			d.adopt(s, sess, false)
			s.Remarks = append(s.Remarks, fmt.Sprintf("%s; borrowed the sensor's open session %s", msg, sess.ID))
			return nil
		}
	}
	return err
}

// refused reports a session POST the server refused for a reason of its
// own (Live Response disabled, session limit): a 4xx other than 401, 404,
// 408 and 429.
func refused(err error) bool {
	var e *edr.Error
	if !errors.As(err, &e) || e.Retryable {
		return false
	}
	switch e.Status {
	case http.StatusUnauthorized, http.StatusNotFound, http.StatusRequestTimeout, http.StatusTooManyRequests:
		return false
	}
	return e.Status >= 400 && e.Status < 500
}

// openSession opens a new session for s, tagged with r's intent.
func (d *Driver) openSession(ctx context.Context, op string, r *opRef, s *sensorRef) error {
	body := map[string]any{"sensor_id": s.SensorID}
	if r.Tag > 0 {
		body["checkin_timeout"] = r.Tag
	}
	resp, err := d.send(ctx, op, http.MethodPost, sessionBase, body)
	if err != nil {
		return err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: fmt.Sprintf(
			"CB EDR does not know this sensor (HTTP 404: %s); check the sensor id, or CBLR_URL if every sensor fails",
			d.vendorText(resp.Status, resp.Body))}
	case resp.Status >= 400 && resp.Status < 500 && resp.Status != http.StatusUnauthorized &&
		resp.Status != http.StatusTooManyRequests && resp.Status != http.StatusRequestTimeout:
		return d.answers.Error(vendorhttp.Call{Op: op, Msg: "CB EDR refused a Live Response session"}, resp)
	}
	sess, err := decodeAnswer(d, op, "POST session", resp, decodeSession)
	if err != nil {
		return err
	}
	if sess.ID == "" {
		return d.answers.Malformed(vendorhttp.Call{Op: op, What: "POST session"}, resp.Status, errors.New("the new session has no id"))
	}
	d.adopt(s, sess, true)
	return nil
}

// closeOpened closes, best effort, the sessions Start opened before it
// failed. The caller's context may have ended: closing still gets a short
// budget of its own.
func (d *Driver) closeOpened(ctx context.Context, r *opRef) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for _, s := range r.Sensors {
		if s.SessionID != "" && !s.Borrowed {
			_ = d.closeSession(cctx, "start", s.SessionID) // best effort: the session times out on its own otherwise
		}
	}
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
	sess, err := decodeAnswer(d, op, what, resp, decodeSession)
	return sess, err == nil, err
}

// reopen gives up s's session, which ended under the triage (its owner
// closed it, the server forgot it), and has the next Poll acquire another,
// as cbapi does when a command is refused with 404 — at most maxReopens
// times, then the sensor fails.
func (s *sensorRef) reopen(status int, why string) {
	if s.Reopens >= maxReopens {
		s.fail(status, "%s (gave up after %d sessions)", why, s.Reopens+1)
		return
	}
	s.Reopens++
	s.Remarks = append(s.Remarks, why+"; acquired another session")
	s.Lost = append(s.Lost, s.SessionID)
	s.SessionID, s.CommandID, s.FileID = "", "", ""
	s.Borrowed = false
	s.Uploaded, s.UploadSince, s.UploadStalls = 0, time.Time{}, 0
	s.Step = stepOpen
}

// lostSession handles a command or keepalive the server refused, or a
// command that vanished, by the session's state: a session that is gone
// (404) or was closed is acquired again (reopen); one that timed out or
// became inactive fails the sensor; one still open fails it with why alone
// — unless the server's own answer said the session or sensor is not found
// (serverSaysGone, cbapi's rule), which reopens too.
func (d *Driver) lostSession(ctx context.Context, s *sensorRef, why string, serverSaysGone bool) error {
	sess, found, err := d.getSession(ctx, "poll", s.SessionID)
	switch {
	case err != nil && taskLevel(err):
		return err
	case err == nil && !found:
		s.reopen(http.StatusNotFound, fmt.Sprintf("%s: the Live Response session %s no longer exists", why, s.SessionID))
		return nil
	case err == nil:
		switch st := norm(sess.Status); st {
		case "close", "closed":
			s.reopen(0, fmt.Sprintf("%s: %s", why, ended(st)))
			return nil
		case "timeout", "inactive":
			s.fail(0, "%s: %s", why, ended(st))
			return nil
		}
	}
	if serverSaysGone {
		if err == nil && !s.Borrowed {
			// The server lists the session as open but refuses commands
			// in it: close it (best effort) so that it is not taken again.
			if err := d.closeSession(ctx, "poll", s.SessionID); err != nil && taskLevel(err) {
				return err
			}
		}
		s.reopen(http.StatusNotFound, why)
		return nil
	}
	s.fail(0, "%s", why)
	return nil
}

// keepaliveIfDue sends GET …/keepalive when keepaliveEvery has passed since
// the session's last activity. isGone reports that the server refused it as
// for an ended session. Callers send it only while a command runs: on a
// session still pending a keepalive closes it.
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
	return false, false, d.answers.Error(vendorhttp.Call{Op: "poll", What: "GET keepalive of session " + string(s.SessionID)}, resp)
}

// finish closes s's session when this triage opened it, and marks s done.
// A borrowed session is left open for its owner. A session the server will
// not close for a permanent reason is noted, not retried forever.
func (d *Driver) finish(ctx context.Context, op string, s *sensorRef) error {
	switch {
	case s.SessionID == "":
	case s.Borrowed:
		s.Remarks = append(s.Remarks, fmt.Sprintf(
			"Live Response session %s was already open when the triage took it; it is left open for whoever opened it", s.SessionID))
	default:
		if err := d.closeSession(ctx, op, s.SessionID); err != nil {
			if taskLevel(err) {
				return err
			}
			_, msg := reason(err)
			s.Remarks = append(s.Remarks, "could not close the Live Response session: "+msg)
		}
	}
	s.CommandID = ""
	s.Step = stepDone
	return nil
}

// closeSession closes session id the documented way (and cbapi's): GET the
// session object, set its status to "close", PUT it back. A session that is
// gone (404) or already ended counts as closed.
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
		if d.checkTokens(op, "GET session", resp.Body) == nil {
			obj = decodeLoose(resp.Body)
		}
	case gone(resp.Status):
	default:
		return d.answers.Error(vendorhttp.Call{Op: op, What: "GET session " + string(id)}, resp)
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
	return d.answers.Error(vendorhttp.Call{Op: op, What: "PUT session " + string(id) + " status close"}, resp)
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
