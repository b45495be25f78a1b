package cblr

import (
	"slices"
	"time"
)

// Session and command statuses, as the API spells them.
const (
	StatusPending    = "pending"
	StatusActive     = "active"
	StatusTimeout    = "timeout"
	StatusClose      = "close"
	StatusInProgress = "in progress"
	StatusComplete   = "complete"
	StatusError      = "error"
	StatusCancel     = "cancel"
)

// session is the server-side record. Its status is never stored: it is
// computed from the recorded times on every request (see state).
type session struct {
	id             int64
	sensor         *Sensor
	created        time.Time
	checkInAfter   time.Duration
	checkInTimeout time.Duration
	waitTimeout    time.Duration // reported as sensor_wait_timeout
	idleTimeout    time.Duration // enforced: waitTimeout, or session_timeout when shorter and enforced
	cmdTimeout     time.Duration
	closedAt       time.Time // zero until a PUT with status "close"
	keepalives     []time.Time
	commands       []*command
	files          map[int64]*storedFile
	nextCmd        int64
	nextFile       int64
}

type command struct {
	id          int64
	name        string
	object      any // as posted (string, number or nil)
	created     time.Time
	duration    time.Duration
	cancelledAt time.Time
	fail        *ErrorInfo // decided at creation
	processes   []Process  // "process list": snapshot at creation
	fileID      int64      // "get file": the file object it fills
}

type storedFile struct {
	id      int64
	name    string
	content []byte
	cmd     *command // the "get file" that produces it
	deleted bool
}

// state returns the session's status at now and, for an ended session, the
// moment it ended.
//
// A session is pending until CheckInAfter has passed since its creation (or
// forever, for a sensor that never checks in), and goes "timeout" when it is
// still pending at check_in_timeout. Once active it times out when no
// activity happened for longer than sensor_wait_timeout (or session_timeout,
// when Config.EnforceSessionTimeout and it is shorter); activity is the
// check-in itself, a keepalive, a command being created, and a command
// completing (the sensor reporting back). A command merely running is not
// activity: "reset the sensor_wait_timeout if no commands have been sent".
func (s *session) state(now time.Time) (string, time.Time) {
	closed := !s.closedAt.IsZero()
	activeAt := s.created.Add(s.checkInAfter)
	if s.sensor.NeverCheckIn || s.checkInAfter >= s.checkInTimeout {
		deadline := s.created.Add(s.checkInTimeout)
		switch {
		case closed && s.closedAt.Before(deadline):
			return StatusClose, s.closedAt
		case !now.Before(deadline):
			return StatusTimeout, deadline
		}
		return StatusPending, time.Time{}
	}
	if closed && s.closedAt.Before(activeAt) {
		return StatusClose, s.closedAt
	}
	if now.Before(activeAt) {
		return StatusPending, time.Time{}
	}
	limit := now
	if closed && s.closedAt.Before(now) {
		limit = s.closedAt
	}
	events := slices.Clone(s.keepalives)
	for _, c := range s.commands {
		events = append(events, c.created)
		if c.cancelledAt.IsZero() {
			events = append(events, c.created.Add(c.duration))
		}
	}
	slices.SortFunc(events, func(a, b time.Time) int { return a.Compare(b) })
	last := activeAt
	for _, e := range events {
		if e.After(limit) {
			break
		}
		if e.Sub(last) > s.idleTimeout {
			break
		}
		if e.After(last) {
			last = e
		}
	}
	if limit.Sub(last) > s.idleTimeout {
		return StatusTimeout, last.Add(s.idleTimeout)
	}
	if closed {
		return StatusClose, s.closedAt
	}
	return StatusActive, time.Time{}
}

// checkedIn reports whether the sensor had checked in by now (the session
// object then carries the endpoint's context: supported_commands, drives…).
func (s *session) checkedIn(now time.Time) bool {
	activeAt := s.created.Add(s.checkInAfter)
	if s.sensor.NeverCheckIn || s.checkInAfter >= s.checkInTimeout || now.Before(activeAt) {
		return false
	}
	return s.closedAt.IsZero() || !s.closedAt.Before(activeAt)
}

// forgotten reports a session the server no longer knows at now: one that
// timed out before its sensor checked in answers 404 ("the Cb server will
// return a 404 if we don't establish a session in time", cbapi's
// response/cblr.py).
func (s *session) forgotten(now time.Time) bool {
	st, _ := s.state(now)
	return st == StatusTimeout && !s.checkedIn(now) && s.closedAt.IsZero()
}

// live reports whether the session is pending or active at now.
func (s *session) live(now time.Time) bool {
	st, _ := s.state(now)
	return st == StatusPending || st == StatusActive
}

// cmdState returns the command's status at now, when it finished (zero while
// running), and the error it carries, if any.
func (s *session) cmdState(c *command, now time.Time) (string, time.Time, *ErrorInfo) {
	if !c.cancelledAt.IsZero() {
		return StatusCancel, c.cancelledAt, nil
	}
	done := c.created.Add(c.duration)
	if st, end := s.state(now); !end.IsZero() && end.Before(done) {
		desc := "the Live Response session was closed before the command completed"
		if st == StatusTimeout {
			desc = "the Live Response session timed out before the command completed"
		}
		return StatusError, end, &ErrorInfo{Code: 1, Type: "CbError", Desc: desc}
	}
	if !now.Before(done) {
		if c.fail != nil {
			return StatusError, done, c.fail
		}
		return StatusComplete, done, nil
	}
	if now.Before(c.created.Add(c.duration / 2)) {
		return StatusPending, time.Time{}, nil
	}
	return StatusInProgress, time.Time{}, nil
}

func epoch(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func secs(d time.Duration) float64 { return d.Seconds() }
