package cblr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
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
		return nil, false, statusError(op, what, resp)
	case !ok2xx(resp.Status):
		return unlisted(statusError(op, what, resp))
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

// pick chooses the session of a sensor to use among its live ones. owned
// says it was created (by the server's clock) no earlier than ownFrom
// (unix ms; 0 = none is owned) less the clock skew, and so was opened under
// the intent: the earliest such session is taken. Otherwise, like cbapi,
// the sensor's existing session is borrowed: an active one if there is one
// (it needs no check-in), else the first.
func (d *Driver) pick(ownFrom int64, list []session) (sess session, owned, ok bool) {
	if len(list) == 0 {
		return session{}, false, false
	}
	if ownFrom > 0 {
		from := float64(ownFrom)/1000 - d.skew.Seconds()
		best := -1
		for i, s := range list {
			ct := float64(s.CreateTime)
			if ct > 0 && ct >= from && (best < 0 || ct < float64(list[best].CreateTime)) {
				best = i
			}
		}
		if best >= 0 {
			return list[best], true, true
		}
	}
	for _, s := range list {
		if norm(s.Status) == "active" {
			return s, false, true
		}
	}
	return list[0], false, true
}

// adopt makes sess s's session.
func (d *Driver) adopt(s *sensorRef, sess session, owned bool) {
	s.SessionID = sess.ID
	s.Borrowed = !owned
	s.absorb(sess)
	s.LastActivity = d.now()
	s.Step = stepWait
}

// acquire gives s a session: one of its live sessions (see pick), or a new
// one. After a lost session (s.Reopens > 0) no live session counts as
// opened under the intent: the one this triage opened is gone.
func (d *Driver) acquire(ctx context.Context, op string, r *opRef, s *sensorRef, live map[int64][]session) error {
	ownFrom := r.At
	if s.Reopens > 0 {
		ownFrom = 0
	}
	if sess, owned, ok := d.pick(ownFrom, live[s.SensorID]); ok {
		d.adopt(s, sess, owned)
		return nil
	}
	return d.openSession(ctx, op, s)
}

// openSession opens a new session for s.
func (d *Driver) openSession(ctx context.Context, op string, s *sensorRef) error {
	resp, err := d.send(ctx, op, http.MethodPost, sessionBase, map[string]any{"sensor_id": s.SensorID})
	if err != nil {
		return err
	}
	switch {
	case resp.Status == http.StatusNotFound:
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: fmt.Sprintf(
			"CB EDR does not know this sensor (HTTP 404: %s); check the sensor id, or CBLR_URL if every sensor fails",
			vendorText(resp.Status, resp.Body))}
	case resp.Status >= 400 && resp.Status < 500 && resp.Status != http.StatusUnauthorized &&
		resp.Status != http.StatusTooManyRequests && resp.Status != http.StatusRequestTimeout:
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Msg: fmt.Sprintf(
			"CB EDR refused a Live Response session: %s", vendorText(resp.Status, resp.Body))}
	case !ok2xx(resp.Status):
		return statusError(op, "POST session", resp)
	}
	if err := d.checkTokens(op, "POST session", resp.Body); err != nil {
		return err
	}
	sess, err := decodeSession(resp.Body)
	if err != nil {
		return malformed(op, "POST session", err)
	}
	if sess.ID == "" {
		return malformed(op, "POST session", errors.New("the new session has no id"))
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
	if !ok2xx(resp.Status) {
		return session{}, false, statusError(op, what, resp)
	}
	if err := d.checkTokens(op, what, resp.Body); err != nil {
		return session{}, false, err
	}
	sess, err := decodeSession(resp.Body)
	if err != nil {
		return session{}, false, malformed(op, what, err)
	}
	return sess, true, nil
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
	return false, false, statusError("poll", "GET keepalive of session "+string(s.SessionID), resp)
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
