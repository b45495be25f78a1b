// Package cblr simulates the Carbon Black EDR (Cb Response) Live Response
// API, /api/v1/cblr/…, as described in specs/001 (the "CB Live Response
// Sensor API" document) and as a real server answered cbapi-python (the
// answers recorded in carbonblack/cbapi-python tests/caches/cber.sqlite,
// commit 550679c0, kept in edr/cblr/testdata/recorded): sessions with
// sensors, keepalive, commands and the session file store. Tests start it
// with httptest.NewServer; `worker dev` runs it with DefaultSensors.
//
// Like the real server it is asynchronous, and like every simulator in sim/
// it runs no goroutine per operation: statuses are computed from the elapsed
// time on each request.
//
//	session:  pending ──CheckInAfter──▶ active ──PUT status=close──▶ close
//	             │  └─keepalive─▶ close  │
//	             └─check_in_timeout─▶ timeout ◀─idle > sensor_wait_timeout─┘
//
//	command:  pending ─▶ in progress ─CommandTime─▶ complete | error
//	             └──────────┴──PUT status=cancel──▶ cancel
//
// The real shapes: ids, sensor_id and pids are JSON integers, create_time
// and completion floats (completion only once a command finished; the
// document's completion_time is not sent), storage_size the number 0 on a
// pending session and a string ("48122") once the sensor checked in,
// supported_commands includes "memdump", a command has no command_timeout,
// a completed "get file" reports result_code 0, result_type "WinHresult",
// result_desc "", and its POST answer already carries file_id. GET
// /session lists every session the server remembers; with
// ?active_only=true (CB Response 6.3+, what cbapi asks) only pending and
// active ones.
//
// Where neither source says, the simulator chooses (and the driver must
// tolerate other choices):
//   - every request needs X-Auth-Token; a wrong or missing token is 401;
//   - a 404 is plain text naming what is missing ("Session 3 is not
//     active", "Sensor 12 not found"): cbapi re-creates the session on a 404
//     to a command POST whose body begins "Session" or "Sensor"; other
//     errors are JSON {"error": …};
//   - an unknown session, command or file id is 404, and so is an unknown
//     sensor_id in a session POST;
//   - a session that timed out before its sensor checked in is forgotten:
//     404 on every route, and no longer listed (cbapi: "the Cb server will
//     return a 404 if we don't establish a session in time");
//   - a keepalive on a pending session closes it (cbinterface2 observed it;
//     the document does not say);
//   - a session POST's "checkin_timeout" (the document's spelling; also
//     "check_in_timeout") is granted, up to Config.MaxCheckInTimeout, and
//     reported back as the session's check_in_timeout (the document: POST
//     accepts it, "see cblr_sensor"; whether a real server reports it back
//     is not recorded anywhere);
//   - a sensor with Live Response disabled answers the session POST with 403
//     and {"error": "Live Response is disabled …"}; a sensor at its session
//     limit with 409 and {"error": "… session limit …"}; a second session
//     POST for a sensor is otherwise accepted (clients reuse the sensor's
//     session, as cbapi does, but nothing says a second one is refused);
//   - a command POST on a pending session is 400; a command POST or a
//     keepalive on an ended (closed or timed-out) session is 404 "Session N
//     is not active"; a command the sensor does not support is 400;
//   - ended sessions, their commands and files stay readable (GET 200): a
//     command still running when its session ends turns "error" with
//     result_type "CbError";
//   - a command is "pending" for the first half of CommandTime and
//     "in progress" for the second; the file object of a "get file" appears
//     when the command completes;
//   - cancelling a command that is no longer pending or in progress is 400;
//   - the session archive is not simulated (501).
//
// A Server is safe for concurrent use.
package cblr

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Defaults for Config fields left zero.
const (
	DefaultAPIToken          = "sim-cblr-token"
	DefaultCheckInAfter      = 2 * time.Second
	DefaultCommandTime       = time.Second
	DefaultCheckInTimeout    = 1200 * time.Second // the document's default
	DefaultSensorWaitTimeout = 120 * time.Second  // the document's example
	DefaultSessionTimeout    = 300 * time.Second  // the document's example
	DefaultCommandTimeout    = 120 * time.Second
	maxRequestBody           = 1 << 20
)

// Config configures a Server. Zero values take the defaults above.
type Config struct {
	// APIToken is the X-Auth-Token every request must carry.
	APIToken string
	// CheckInAfter is how long a new session stays pending before the
	// sensor checks in (status active).
	CheckInAfter time.Duration
	// CommandTime is how long a command takes from creation to completion.
	CommandTime time.Duration
	// CheckInTimeout is the sessions' check_in_timeout: a session still
	// pending after it goes "timeout".
	CheckInTimeout time.Duration
	// MaxCheckInTimeout caps the check_in_timeout a session POST may ask
	// for ("checkin_timeout"); the session reports the capped value. 0 = no
	// cap: the request is granted and reported back as asked.
	MaxCheckInTimeout time.Duration
	// SensorWaitTimeout is the sessions' sensor_wait_timeout: an active
	// session idle (no command, no keepalive) for longer goes "timeout".
	SensorWaitTimeout time.Duration
	// SessionTimeout is reported as session_timeout. It is enforced only
	// with EnforceSessionTimeout.
	SessionTimeout time.Duration
	// EnforceSessionTimeout makes session_timeout an idle limit too: an
	// active session with no command or keepalive for longer than the
	// shorter of sensor_wait_timeout and session_timeout goes "timeout".
	// (The document: "If no command is issued over this timeout the sensor
	// will quit"; it does not say whether a keepalive counts. Here it does.)
	EnforceSessionTimeout bool
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Server is the simulated API. It is an http.Handler.
type Server struct {
	cfg     Config
	kit     *simhttp.Kit
	handler http.Handler

	mu       sync.Mutex
	sensors  map[int64]*Sensor
	sessions map[int64]*session
	nextID   int64
}

// New returns a Server with no sensors (see AddSensor, DefaultSensors).
func New(cfg Config) *Server {
	cfg.APIToken = cmp.Or(cfg.APIToken, DefaultAPIToken)
	cfg.CheckInAfter = cmp.Or(cfg.CheckInAfter, DefaultCheckInAfter)
	cfg.CommandTime = cmp.Or(cfg.CommandTime, DefaultCommandTime)
	cfg.CheckInTimeout = cmp.Or(cfg.CheckInTimeout, DefaultCheckInTimeout)
	cfg.SensorWaitTimeout = cmp.Or(cfg.SensorWaitTimeout, DefaultSensorWaitTimeout)
	cfg.SessionTimeout = cmp.Or(cfg.SessionTimeout, DefaultSessionTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		kit:      simhttp.New(),
		sensors:  map[int64]*Sensor{},
		sessions: map[int64]*session{},
	}
	mux := http.NewServeMux()
	const base = "/api/v1/cblr/session"
	mux.HandleFunc("GET /api/v1/sensor/{id}", s.getSensor)
	mux.HandleFunc("POST "+base, s.createSession)
	mux.HandleFunc("GET "+base, s.listSessions)
	mux.HandleFunc("GET "+base+"/{id}", s.withSession(s.getSession))
	mux.HandleFunc("PUT "+base+"/{id}", withSessionBody(s, s.putSession))
	mux.HandleFunc("GET "+base+"/{id}/keepalive", s.withSession(s.keepalive))
	mux.HandleFunc("GET "+base+"/{id}/archive", s.withSession(s.archive))
	mux.HandleFunc("GET "+base+"/{id}/command", s.withSession(s.listCommands))
	mux.HandleFunc("POST "+base+"/{id}/command", withSessionBody(s, s.createCommand))
	mux.HandleFunc("GET "+base+"/{id}/command/{cmd}", s.withSession(s.getCommand))
	mux.HandleFunc("PUT "+base+"/{id}/command/{cmd}", withSessionBody(s, s.putCommand))
	mux.HandleFunc("GET "+base+"/{id}/file", s.withSession(s.listFiles))
	mux.HandleFunc("GET "+base+"/{id}/file/{file}", s.withSession(s.getFile))
	mux.HandleFunc("PUT "+base+"/{id}/file/{file}", withSessionBody(s, s.putFile))
	mux.HandleFunc("DELETE "+base+"/{id}/file/{file}", s.withSession(s.deleteFile))
	mux.HandleFunc("GET "+base+"/{id}/file/{file}/content", s.fileContent)
	s.handler = s.kit.Wrap(s.auth(mux))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Kit returns the fault switches and request log.
func (s *Server) Kit() *simhttp.Kit { return s.kit }

// Close releases requests held by hang faults. Call it before closing the
// HTTP server.
func (s *Server) Close() { s.kit.Close() }

// AddSensor adds (or replaces) a sensor. The server keeps its own copy.
func (s *Server) AddSensor(sensor Sensor) {
	c := sensor.clone()
	s.mu.Lock()
	s.sensors[c.ID] = c
	s.mu.Unlock()
}

// PlantSample puts content at path on the sensor and adds a running process
// started from it (with its sha256). Sessions opened later see it. It
// reports false when the sensor is unknown.
func (s *Server) PlantSample(sensorID int64, path string, content []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.sensors[sensorID]
	if !ok {
		return false
	}
	c := old.clone()
	plant(c, path, content)
	s.sensors[sensorID] = c
	return true
}

// Session is a snapshot of one session, for tests.
type Session struct {
	ID       int64
	SensorID int64
	Hostname string
	// Status is the status a GET would report now.
	Status  string
	Created time.Time
	// CloseRequested says a PUT with status "close" arrived.
	CloseRequested bool
	// Keepalives counts keepalive requests.
	Keepalives int
	Commands   []Command
}

// Command is a snapshot of one command, for tests.
type Command struct {
	ID     int64
	Name   string
	Object string
	// Status is the status a GET would report now.
	Status          string
	Created         time.Time
	CancelRequested bool
}

// Sessions returns every session ever created, oldest first.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	out := make([]Session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		st, _ := ss.state(now)
		snap := Session{
			ID: ss.id, SensorID: ss.sensor.ID, Hostname: ss.sensor.Hostname, Status: st,
			Created: ss.created, CloseRequested: !ss.closedAt.IsZero(), Keepalives: len(ss.keepalives),
		}
		for _, c := range ss.commands {
			cst, _, _ := ss.cmdState(c, now)
			obj := ""
			if c.object != nil {
				obj = fmt.Sprint(c.object)
			}
			snap.Commands = append(snap.Commands, Command{
				ID: c.id, Name: c.name, Object: obj, Status: cst, Created: c.created,
				CancelRequested: !c.cancelledAt.IsZero(),
			})
		}
		out = append(out, snap)
	}
	slices.SortFunc(out, func(a, b Session) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// OpenSessions counts sessions that are pending or active now.
func (s *Server) OpenSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	n := 0
	for _, ss := range s.sessions {
		if ss.live(now) {
			n++
		}
	}
	return n
}

func (s *Server) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Auth-Token") != s.cfg.APIToken {
			writeErr(w, http.StatusUnauthorized, "invalid or missing X-Auth-Token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// --- sessions ---------------------------------------------------------------

type createSessionReq struct {
	SensorID              json.Number `json:"sensor_id"`
	CheckinTimeout        json.Number `json:"checkin_timeout"`
	CheckInTimeout        json.Number `json:"check_in_timeout"`
	SensorWaitTimeout     json.Number `json:"sensor_wait_timeout"`
	DefaultCommandTimeout json.Number `json:"default_command_timeout"`
}

func (s *Server) createSession(w http.ResponseWriter, r *http.Request) {
	var req createSessionReq
	if !readJSON(w, r, &req) {
		return
	}
	sensorID, err := req.SensorID.Int64()
	if err != nil {
		writeErr(w, http.StatusBadRequest, "sensor_id is required and must be an integer")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	sensor, ok := s.sensors[sensorID]
	if !ok {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("Sensor %d not found", sensorID))
		return
	}
	if sensor.LiveResponseDisabled {
		writeErr(w, http.StatusForbidden, fmt.Sprintf("Live Response is disabled for sensor %d", sensorID))
		return
	}
	if sensor.SessionLimit > 0 {
		open := 0
		for _, ss := range s.sessions {
			if ss.sensor.ID == sensorID && ss.live(now) {
				open++
			}
		}
		if open >= sensor.SessionLimit {
			writeErr(w, http.StatusConflict, fmt.Sprintf(
				"Live Response session limit reached for sensor %d (%d concurrent sessions allowed)", sensorID, sensor.SessionLimit))
			return
		}
	}
	s.nextID++
	ss := &session{
		id: s.nextID, sensor: sensor, created: now,
		checkInAfter:   s.cfg.CheckInAfter,
		checkInTimeout: cmp.Or(seconds(req.CheckinTimeout), seconds(req.CheckInTimeout), s.cfg.CheckInTimeout),
		waitTimeout:    cmp.Or(seconds(req.SensorWaitTimeout), s.cfg.SensorWaitTimeout),
		cmdTimeout:     cmp.Or(seconds(req.DefaultCommandTimeout), DefaultCommandTimeout),
		files:          map[int64]*storedFile{},
	}
	if s.cfg.MaxCheckInTimeout > 0 {
		ss.checkInTimeout = min(ss.checkInTimeout, s.cfg.MaxCheckInTimeout)
	}
	ss.idleTimeout = ss.waitTimeout
	if s.cfg.EnforceSessionTimeout {
		ss.idleTimeout = min(ss.waitTimeout, s.cfg.SessionTimeout)
	}
	s.sessions[ss.id] = ss
	simhttp.WriteJSON(w, http.StatusOK, s.sessionJSON(ss, now))
}

func seconds(n json.Number) time.Duration {
	f, err := n.Float64()
	if err != nil || f <= 0 {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	activeOnly := strings.EqualFold(r.URL.Query().Get("active_only"), "true")
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	ids := make([]int64, 0, len(s.sessions))
	for id, ss := range s.sessions {
		if ss.forgotten(now) || activeOnly && !ss.live(now) {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]sessionJSON, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.sessionJSON(s.sessions[id], now))
	}
	simhttp.WriteJSON(w, http.StatusOK, out)
}

// getSensor answers a sensor's record in the shape a CB Response 6.x
// server gave cbapi (edr/cblr/testdata/recorded/get_sensor_1.json), or 404
// for a sensor this server does not know.
func (s *Server) getSensor(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	s.mu.Lock()
	sn := s.sensors[id]
	s.mu.Unlock()
	if err != nil || sn == nil {
		writeErr(w, http.StatusNotFound, "Sensor not found")
		return
	}
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"id": sn.ID, "computer_name": sn.Hostname, "computer_dns_name": sn.Hostname,
		"os_environment_display_string": sn.OS, "status": "Online", "supports_cblr": true,
		"uninstalled": nil, "is_isolating": false, "network_adapters": sn.Address + ",00155d019c08|",
		"group_id": 1, "build_id": 11, "sensor_health_status": 100, "clock_delta": "0",
	})
}

func (s *Server) getSession(w http.ResponseWriter, _ *http.Request, ss *session) {
	simhttp.WriteJSON(w, http.StatusOK, s.sessionJSON(ss, s.cfg.Now()))
}

func (s *Server) putSession(w http.ResponseWriter, _ *http.Request, ss *session, body map[string]any) {
	if st, _ := body["status"].(string); st != StatusClose {
		writeErr(w, http.StatusBadRequest, `only {"status": "close"} can be PUT on a session`)
		return
	}
	now := s.cfg.Now()
	if ss.closedAt.IsZero() {
		ss.closedAt = now
	}
	simhttp.WriteJSON(w, http.StatusOK, s.sessionJSON(ss, now))
}

func (s *Server) keepalive(w http.ResponseWriter, _ *http.Request, ss *session) {
	now := s.cfg.Now()
	switch st, _ := ss.state(now); st {
	case StatusActive:
		ss.keepalives = append(ss.keepalives, now)
	case StatusPending:
		// A keepalive closes a session that is not active yet
		// (cbinterface2 observed it on real servers and sends none to
		// pending sessions).
		ss.keepalives = append(ss.keepalives, now)
		ss.closedAt = now
	default:
		writeErr(w, http.StatusNotFound, fmt.Sprintf("Session %d is not active (status %s)", ss.id, st))
		return
	}
	simhttp.WriteJSON(w, http.StatusOK, s.sessionJSON(ss, now))
}

func (s *Server) archive(w http.ResponseWriter, _ *http.Request, _ *session) {
	writeErr(w, http.StatusNotImplemented, "session archives are not simulated")
}

// session resolves {id}; it answers 404 itself when there is none. Call
// with s.mu held.
func (s *Server) session(w http.ResponseWriter, r *http.Request) (*session, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err == nil {
		if ss, ok := s.sessions[id]; ok && !ss.forgotten(s.cfg.Now()) {
			return ss, true
		}
	}
	writeErr(w, http.StatusNotFound, fmt.Sprintf("Session %s not found", r.PathValue("id")))
	return nil, false
}

type sessionJSON struct {
	ID                      int64    `json:"id"`
	SensorID                int64    `json:"sensor_id"`
	Status                  string   `json:"status"`
	SupportedCommands       []string `json:"supported_commands"`
	Drives                  []string `json:"drives"`
	StorageSize             any      `json:"storage_size"`
	CreateTime              float64  `json:"create_time"`
	SensorWaitTimeout       float64  `json:"sensor_wait_timeout"`
	Address                 *string  `json:"address"`
	CheckInTimeout          float64  `json:"check_in_timeout"`
	Hostname                string   `json:"hostname"`
	StorageTTL              float64  `json:"storage_ttl"`
	OSVersion               string   `json:"os_version"`
	SessionTimeout          float64  `json:"session_timeout"`
	CurrentWorkingDirectory string   `json:"current_working_directory"`
}

func (s *Server) sessionJSON(ss *session, now time.Time) sessionJSON {
	st, _ := ss.state(now)
	out := sessionJSON{
		ID: ss.id, SensorID: ss.sensor.ID, Status: st,
		SupportedCommands: []string{}, Drives: []string{}, StorageSize: 0,
		CreateTime:        epoch(ss.created),
		SensorWaitTimeout: secs(ss.waitTimeout),
		CheckInTimeout:    secs(ss.checkInTimeout),
		Hostname:          ss.sensor.Hostname,
		StorageTTL:        7,
		SessionTimeout:    secs(s.cfg.SessionTimeout),
	}
	if ss.checkedIn(now) {
		if !ss.sensor.ListsNoCommands {
			out.SupportedCommands = ss.sensor.supported()
		}
		out.Drives = []string{`C:\`, `D:\`}
		addr := cmp.Or(ss.sensor.Address, "::ffff:192.168.206.128")
		out.Address = &addr
		out.OSVersion = ss.sensor.OS
		out.CurrentWorkingDirectory = `C:\Windows\CarbonBlack`
		size := 0
		for _, f := range ss.files {
			if !f.deleted {
				size += len(f.content)
			}
		}
		// A checked-in session reports it as a string (the recorded
		// answers: "48122"); a pending one as the number 0 (the document).
		out.StorageSize = strconv.Itoa(size)
	}
	return out
}

// --- commands ---------------------------------------------------------------

type createCommandReq struct {
	SessionID json.Number     `json:"session_id"`
	Name      string          `json:"name"`
	Object    json.RawMessage `json:"object"`
	Offset    json.Number     `json:"offset"`
	GetCount  json.Number     `json:"get_count"`
}

func (s *Server) createCommand(w http.ResponseWriter, _ *http.Request, ss *session, req createCommandReq) {
	if req.SessionID != "" && req.SessionID.String() != strconv.FormatInt(ss.id, 10) {
		writeErr(w, http.StatusBadRequest, "session_id in the body does not match the URL")
		return
	}
	now := s.cfg.Now()
	switch st, _ := ss.state(now); st {
	case StatusActive:
	case StatusPending:
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("Session %d is not active yet (status pending): wait for the sensor to check in", ss.id))
		return
	default:
		writeErr(w, http.StatusNotFound, fmt.Sprintf("Session %d is not active (status %s)", ss.id, st))
		return
	}
	name := strings.TrimSpace(req.Name)
	if name == "" {
		writeErr(w, http.StatusBadRequest, "name is required")
		return
	}
	if ss.sensor.unsupported(name) || !slices.Contains(allCommands, name) {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("command %q is not supported by sensor %d", name, ss.sensor.ID))
		return
	}
	var object any
	if len(req.Object) > 0 {
		if err := json.Unmarshal(req.Object, &object); err != nil {
			writeErr(w, http.StatusBadRequest, "object: "+err.Error())
			return
		}
	}
	ss.nextCmd++
	c := &command{id: ss.nextCmd, name: name, object: object, created: now, duration: s.cfg.CommandTime}
	if e, ok := ss.sensor.CommandErrors[name]; ok {
		c.fail = &e
	}
	switch name {
	case CmdProcessList:
		c.processes = slices.Clone(ss.sensor.Processes)
	case CmdGetFile:
		path, _ := object.(string)
		if path == "" {
			writeErr(w, http.StatusBadRequest, `"get file" needs the source path in object`)
			return
		}
		content, found := ss.sensor.file(path)
		if !found && c.fail == nil {
			e := ErrFileNotFound
			c.fail = &e
		}
		content = partial(content, req.Offset, req.GetCount)
		ss.nextFile++
		c.fileID = ss.nextFile
		ss.files[c.fileID] = &storedFile{id: c.fileID, name: path, content: content, cmd: c}
	}
	ss.commands = append(ss.commands, c)
	simhttp.WriteJSON(w, http.StatusOK, s.commandJSON(ss, c, now))
}

// partial applies get file's optional offset and get_count.
func partial(b []byte, offset, count json.Number) []byte {
	off, _ := offset.Int64()
	n, _ := count.Int64()
	if off < 0 || off > int64(len(b)) {
		off = int64(len(b))
	}
	b = b[off:]
	if n > 0 && n < int64(len(b)) {
		b = b[:n]
	}
	return append([]byte(nil), b...)
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request, ss *session) {
	now := s.cfg.Now()
	want := r.URL.Query().Get("status")
	limit, _ := strconv.Atoi(r.URL.Query().Get("count"))
	out := []commandJSON{}
	for _, c := range ss.commands {
		cj := s.commandJSON(ss, c, now)
		if want != "" && !statusMatches(want, cj.Status) {
			continue
		}
		out = append(out, cj)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	simhttp.WriteJSON(w, http.StatusOK, out)
}

// statusMatches accepts the filter spellings the document uses
// ("completed", "in progress", "canceled") for the statuses it reports.
func statusMatches(filter, status string) bool {
	switch strings.ToLower(filter) {
	case "completed", "complete":
		return status == StatusComplete
	case "canceled", "cancelled", "cancel":
		return status == StatusCancel
	}
	return strings.EqualFold(filter, status)
}

// command finds the request's command {cmd} in ss; when it answered 404
// instead, ok is false. The caller holds s.mu.
func (s *Server) command(w http.ResponseWriter, r *http.Request, ss *session) (*command, bool) {
	return lookup(w, r, ss, "cmd", "Command", func(id int64) (*command, bool) {
		for _, c := range ss.commands {
			if c.id == id {
				return c, true
			}
		}
		return nil, false
	})
}

func (s *Server) getCommand(w http.ResponseWriter, r *http.Request, ss *session) {
	if c, ok := s.command(w, r, ss); ok {
		simhttp.WriteJSON(w, http.StatusOK, s.commandJSON(ss, c, s.cfg.Now()))
	}
}

func (s *Server) putCommand(w http.ResponseWriter, r *http.Request, ss *session, body map[string]any) {
	c, ok := s.command(w, r, ss)
	if !ok {
		return
	}
	if st, _ := body["status"].(string); st != StatusCancel {
		writeErr(w, http.StatusBadRequest, `only {"status": "cancel"} can be PUT on a command`)
		return
	}
	now := s.cfg.Now()
	switch st, _, _ := ss.cmdState(c, now); st {
	case StatusPending, StatusInProgress:
		c.cancelledAt = now
	case StatusCancel:
	default:
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("command %d is %s; only a pending or in-progress command can be cancelled", c.id, st))
		return
	}
	simhttp.WriteJSON(w, http.StatusOK, s.commandJSON(ss, c, now))
}

type processJSON struct {
	Username    string `json:"username"`
	CreateTime  int64  `json:"create_time"`
	ParentGUID  string `json:"parent_guid"`
	Parent      int64  `json:"parent"`
	SID         string `json:"sid"`
	Path        string `json:"path"`
	CommandLine string `json:"command_line"`
	PID         int64  `json:"pid"`
	ProcGUID    string `json:"proc_guid"`
	SHA256      string `json:"sha256,omitempty"`
	MD5         string `json:"md5,omitempty"`
}

type commandJSON struct {
	ID         int64         `json:"id"`
	SessionID  int64         `json:"session_id"`
	SensorID   int64         `json:"sensor_id"`
	Status     string        `json:"status"`
	Name       string        `json:"name"`
	Object     any           `json:"object"`
	CreateTime float64       `json:"create_time"`
	Completion float64       `json:"completion,omitempty"`
	Username   string        `json:"username"`
	ResultCode *int64        `json:"result_code,omitempty"`
	ResultType string        `json:"result_type,omitempty"`
	ResultDesc *string       `json:"result_desc,omitempty"`
	Processes  []processJSON `json:"processes,omitempty"`
	FileID     int64         `json:"file_id,omitempty"`
}

func (s *Server) commandJSON(ss *session, c *command, now time.Time) commandJSON {
	st, doneAt, fail := ss.cmdState(c, now)
	out := commandJSON{
		ID: c.id, SessionID: ss.id, SensorID: ss.sensor.ID,
		Status: st, Name: c.name, Object: c.object,
		CreateTime: epoch(c.created), Username: "admin", FileID: c.fileID,
	}
	if st == StatusComplete || st == StatusError || st == StatusCancel {
		out.Completion = epoch(doneAt)
	}
	switch {
	case fail != nil:
		code, desc := fail.Code, fail.Desc
		out.ResultCode, out.ResultType, out.ResultDesc = &code, fail.Type, &desc
	case st == StatusComplete && c.name == CmdGetFile:
		// As recorded: a completed "get file" reports success explicitly.
		code, desc := int64(0), ""
		out.ResultCode, out.ResultType, out.ResultDesc = &code, "WinHresult", &desc
	}
	if st == StatusComplete && c.name == CmdProcessList {
		out.Processes = make([]processJSON, 0, len(c.processes))
		for _, p := range c.processes {
			out.Processes = append(out.Processes, processJSON{
				Username: p.Username, CreateTime: p.CreateTime, ParentGUID: p.ParentGUID, Parent: p.ParentPID,
				SID: p.SID, Path: p.Path, CommandLine: p.CommandLine, PID: p.PID, ProcGUID: p.ProcGUID,
				SHA256: p.SHA256, MD5: p.MD5,
			})
		}
	}
	return out
}

// --- files ------------------------------------------------------------------

type fileJSON struct {
	ID           int64  `json:"id"`
	FileName     string `json:"file_name"`
	Size         int64  `json:"size"`
	SizeUploaded int64  `json:"size_uploaded"`
	Status       int64  `json:"status"`
	Delete       bool   `json:"delete"`
}

// file finds the request's file {file} in ss: not deleted, and its "get
// file" completed. When it answered 404 instead, ok is false. The caller
// holds s.mu.
func (s *Server) file(w http.ResponseWriter, r *http.Request, ss *session) (*storedFile, bool) {
	return lookup(w, r, ss, "file", "File", func(id int64) (*storedFile, bool) {
		f, ok := ss.files[id]
		if !ok || f.deleted {
			return nil, false
		}
		st, _, _ := ss.cmdState(f.cmd, s.cfg.Now())
		return f, st == StatusComplete
	})
}

func fileObject(ss *session, f *storedFile) fileJSON {
	n := int64(len(f.content))
	up := n
	if ss.sensor.StalledUpload {
		up = n / 2
	}
	return fileJSON{ID: f.id, FileName: f.name, Size: n, SizeUploaded: up, Status: 0, Delete: f.deleted}
}

func (s *Server) listFiles(w http.ResponseWriter, _ *http.Request, ss *session) {
	now := s.cfg.Now()
	out := []fileJSON{}
	for id := int64(1); id <= ss.nextFile; id++ {
		f, ok := ss.files[id]
		if !ok || f.deleted {
			continue
		}
		if st, _, _ := ss.cmdState(f.cmd, now); st == StatusComplete {
			out = append(out, fileObject(ss, f))
		}
	}
	simhttp.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request, ss *session) {
	if f, ok := s.file(w, r, ss); ok {
		simhttp.WriteJSON(w, http.StatusOK, fileObject(ss, f))
	}
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request, ss *session, body map[string]any) {
	if f, ok := s.file(w, r, ss); ok {
		if del, _ := body["delete"].(bool); del || body["delete"] == "true" {
			f.deleted = true
		}
		simhttp.WriteJSON(w, http.StatusOK, fileObject(ss, f))
	}
}

func (s *Server) deleteFile(w http.ResponseWriter, r *http.Request, ss *session) {
	if f, ok := s.file(w, r, ss); ok {
		f.deleted = true
		simhttp.WriteJSON(w, http.StatusOK, fileObject(ss, f))
	}
}

// fileContent serves a file's content; it does not hold s.mu while it
// writes.
func (s *Server) fileContent(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ss, ok := s.session(w, r)
	var f *storedFile
	if ok {
		f, ok = s.file(w, r, ss)
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(f.content)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(f.content) // content is never mutated after creation
}

// --- helpers ----------------------------------------------------------------

// withSession adapts h to an http.HandlerFunc that, holding s.mu, resolves
// the request's session {id} (answering 404 itself when there is none) and
// passes it to h.
func (s *Server) withSession(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ss, ok := s.session(w, r); ok {
			h(w, r, ss)
		}
	}
}

// withSessionBody is withSession for a handler that also takes the
// request's JSON body. The body is decoded first, without s.mu: one that
// does not decode is answered 400 whether or not the session exists.
func withSessionBody[T any](s *Server, h func(http.ResponseWriter, *http.Request, *session, T)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body T
		if !readJSON(w, r, &body) {
			return
		}
		s.withSession(func(w http.ResponseWriter, r *http.Request, ss *session) { h(w, r, ss, body) })(w, r)
	}
}

// lookup finds the item of ss whose id is the request's path value key,
// with find. When the value is not a number or find has nothing, it answers
// 404 ("<what> <value> not found in session <id>") and ok is false.
func lookup[T any](w http.ResponseWriter, r *http.Request, ss *session, key, what string, find func(id int64) (T, bool)) (T, bool) {
	if id, err := strconv.ParseInt(r.PathValue(key), 10, 64); err == nil {
		if v, ok := find(id); ok {
			return v, true
		}
	}
	writeErr(w, http.StatusNotFound, fmt.Sprintf("%s %s not found in session %d", what, r.PathValue(key), ss.id))
	var zero T
	return zero, false
}

// readJSON decodes the request body into v; when it cannot, it answers 400
// and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := simhttp.ReadJSON(w, r, maxRequestBody, v); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

// writeErr answers an error. A 404 is plain text naming what is missing
// ("Session 3 is not active", "Sensor 12 not found"): cbapi decides from a
// 404 body beginning "Session" or "Sensor" that the session is gone and
// opens another. Other errors are JSON {"error": …}.
func writeErr(w http.ResponseWriter, status int, msg string) {
	if status == http.StatusNotFound {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(msg))
		return
	}
	simhttp.WriteJSON(w, status, map[string]string{"error": msg})
}
