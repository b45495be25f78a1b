// Package cytomic simulates the Cytomic Orion OSQuery API: an OAuth2
// password-grant token endpoint, the start endpoints /osQuery/client and
// /osQuery/machine (one operation per client), the batched /osQuery/info and
// /osQuery/state endpoints, and the pre-signed result files with their
// five-minute lifetime.
//
// It speaks what Cytomic's sources say the real API speaks: the public
// client (demisto/content Packs/CytomicOrion/Integrations/CytomicOrion,
// commit ff3346a2807c43b11f03ea78cdd9391b59ef0b2c) and Cytomic's "OSQuery
// Access API" page (specs/003 is a copy that lost its field tables). Where
// they disagree or are silent it accepts every form: the API paths are
// served both below / (the public client, on https://api.cytomic.ai) and
// below /api/v1 (Cytomic's page), and the client list of a start request
// may be named pandaIDs (the public client's argument), clientIds or
// clients.
//
// Endpoints (JSON unless noted; "[/api/v1]" means both forms):
//
//	POST /oauth/token                 form grant_type=password&username=&password=[&scope=orion.api]
//	                                  Authorization: Basic base64(client_id:client_secret) when
//	                                  Config.ClientID is set
//	                                  → {"access_token","token_type":"bearer","expires_in","refresh_token","scope"}
//	POST [/api/v1]/osQuery/client     {"query", "pandaIDs"|"clientIds"|"clients", "ttl"}
//	POST [/api/v1]/osQuery/machine    {"query", "MUIDs", "ttl"}
//	                                  → [{"pandaID","operationId","MUIDs":[…]}]
//	POST [/api/v1]/osQuery/info       [{"operationId"}, …]
//	                                  → [{"panda","operationId","info":[{"MUID","status","errorCode","errorDescription"}]}]
//	POST [/api/v1]/osQuery/state      [{"operationId"}, …]
//	                                  → [{"panda","operationId","url","counters":{…}}]  (no url before any data)
//	GET  /files/osquery_<operationId>?sig=…   the ";"-separated result file (text/plain)
//
// "ttl" is in minutes (Config.TTLUnit), as Cytomic's page and the public
// client document it; 0 means 24 hours. API requests must carry a JSON
// content type: application/json-patch+json (what Cytomic's page and the
// public client send) or application/json (or any application/*+json); any
// other is answered 415, as an ASP.NET Core API with Swagger's
// "application/json-patch+json" (the documented header) would.
//
// The simulator is asynchronous like the real API: each machine of an
// operation answers AnswerAfter after the operation was created (never when
// Never is set or when AnswerAfter exceeds the operation's ttl). Every state
// is computed from Config.Now on each request; no goroutine runs per
// operation. Machines that are not Windows answer Error 202, machines without
// osquery Error 203, and a query the simulator cannot parse (not a SELECT,
// unbalanced quotes or parentheses) Error 201 on every machine.
//
// A start request without a query, without clients/MUIDs, without a ttl or
// with a negative one, or naming an unknown client or machine is answered
// 400. /info and /state leave unknown operation IDs out of their answer and
// answer 400 to more than MaxBatch IDs. API calls without a valid bearer
// token get 401; the token endpoint answers 401 {"error":"invalid_grant"} to
// wrong user credentials and 401 {"error":"invalid_client"} to wrong or
// missing client credentials (when Config.ClientID is set). Cytomic offers
// no way to list operations, and neither does the simulator's API.
//
// Operator/test surface over HTTP, beside simhttp's /_sim/faults:
//
//	GET  /_sim/cytomic/operations     the operations created so far
//	GET  /_sim/cytomic/batches        {"info":[…],"state":[…]}: operation IDs per request
//	POST /_sim/cytomic/expire-urls    every download URL issued so far now answers 403
//	POST /_sim/cytomic/revoke-tokens  every access token issued so far now answers 401
//	POST /_sim/cytomic/clients        add a Client (JSON)
//	POST /_sim/cytomic/hits           {"sha256","hostnames":[…]}
//
// A Server is safe for concurrent use.
package cytomic

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/analysisfleet/analysisfleet/sim/simhttp"
)

// Paths served by the simulator. The API paths are also served below
// DocPrefix.
const (
	TokenPath   = "/oauth/token"
	ClientPath  = "/osQuery/client"
	MachinePath = "/osQuery/machine"
	InfoPath    = "/osQuery/info"
	StatePath   = "/osQuery/state"
	FilesPath   = "/files/"
	// DocPrefix is the prefix Cytomic's page writes before the API paths.
	DocPrefix = "/api/v1"
)

// Defaults for Config fields left zero.
const (
	DefaultTokenTTL = time.Hour
	DefaultURLTTL   = 5 * time.Minute
	// MaxBatch is the most operation IDs /info and /state accept in one
	// request; more is answered 400.
	MaxBatch = 1000
	maxBody  = 1 << 20
)

// Error codes the machines answer with (source document, "Error Types").
const (
	CodeExecutingOsQuery    = 201
	CodeOsNotSupported      = 202
	CodeOsQueryNotInstalled = 203
)

var codeDescription = map[int]string{
	CodeExecutingOsQuery:    `near "name": syntax error`,
	CodeOsNotSupported:      "Operating system not supported",
	CodeOsQueryNotInstalled: "OSQuery not installed",
}

// Per-machine statuses in /info.
const (
	StatusPending            = "Pending"
	StatusSuccess            = "Success"
	StatusPartiallySucceeded = "PartiallySucceeded"
	StatusError              = "Error"
)

// RowsPerHost is how many result rows a machine that has a hit contributes.
const RowsPerHost = 2

// FileHeader is the header line of every result file the simulator serves.
const FileHeader = "hostname;MUID;source;pid;name;path;sha256"

// Config configures a Server. The zero value works (no credentials are then
// accepted, so set User and Password).
type Config struct {
	// User and Password are the only credentials the token endpoint accepts.
	User, Password string
	// ClientID and ClientSecret, when ClientID is set, are the only OAuth
	// client credentials the token endpoint accepts (HTTP Basic). Unset,
	// client credentials are not checked.
	ClientID, ClientSecret string
	// TTLUnit is the unit of a start request's "ttl". Default time.Minute.
	TTLUnit time.Duration
	// TokenTTL is an access token's lifetime. Default DefaultTokenTTL.
	TokenTTL time.Duration
	// URLTTL is a download URL's lifetime. Default DefaultURLTTL.
	URLTTL time.Duration
	// NumericIDs makes the simulator answer operation IDs (and numeric
	// client IDs) as JSON numbers instead of strings, as some Cytomic
	// deployments might.
	NumericIDs bool
	// Now is the simulator's clock. Default time.Now.
	Now func() time.Time
}

// Machine is one computer of a client.
type Machine struct {
	MUID     string `json:"MUID"`
	Hostname string `json:"hostname"`
	// OS is "windows" (also the default when empty) or anything else
	// ("linux", "macos"), which answers Error 202.
	OS string `json:"os"`
	// AnswerAfter is when, measured from the operation's creation, the
	// machine answers.
	AnswerAfter time.Duration `json:"answerAfter"`
	// Never makes the machine stay Pending forever (turned off).
	Never bool `json:"never"`
	// ErrorCode, when non-zero, is the error the machine answers with.
	ErrorCode int `json:"errorCode"`
	// OSQueryMissing answers Error 203.
	OSQueryMissing bool `json:"osqueryMissing"`
	// Partial answers PartiallySucceeded (its rows are still in the file).
	Partial bool `json:"partial"`
}

// Client is one Cytomic client (customer account) and its computers.
type Client struct {
	PandaID  string    `json:"pandaID"`
	Machines []Machine `json:"machines"`
}

// Operation is an operation as the simulator created it.
type Operation struct {
	ID       string        `json:"operationId"`
	PandaID  string        `json:"pandaID"`
	Endpoint string        `json:"endpoint"` // "client" or "machine"
	Query    string        `json:"query"`
	MUIDs    []string      `json:"MUIDs"`
	TTL      time.Duration `json:"ttl"`
	Created  time.Time     `json:"created"`
}

type operation struct {
	Operation
	machines []Machine
	badQuery string // non-empty: why the query does not parse (201)
	hashes   []string
}

type grant struct {
	opID    string
	expires time.Time
}

// Server is the simulated Cytomic API. It is an http.Handler.
type Server struct {
	cfg     Config
	kit     *simhttp.Kit
	handler http.Handler
	tokens  simhttp.Tokens

	mu         sync.Mutex
	clients    map[string]*Client // by pandaID
	machineOf  map[string]string  // MUID → pandaID
	hits       map[string]map[string]bool
	ops        map[string]*operation
	opOrder    []string
	grants     map[string]grant // download signature → grant
	infoSizes  []int
	stateSizes []int
	nextNum    int64
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	cfg.TokenTTL = cmp.Or(cfg.TokenTTL, DefaultTokenTTL)
	cfg.URLTTL = cmp.Or(cfg.URLTTL, DefaultURLTTL)
	cfg.TTLUnit = cmp.Or(cfg.TTLUnit, time.Minute)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{
		cfg:       cfg,
		kit:       simhttp.New(),
		clients:   map[string]*Client{},
		machineOf: map[string]string{},
		hits:      map[string]map[string]bool{},
		ops:       map[string]*operation{},
		grants:    map[string]grant{},
		nextNum:   7000000001,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+TokenPath, s.token)
	for _, prefix := range []string{"", DocPrefix} {
		mux.HandleFunc("POST "+prefix+ClientPath, s.authed(s.startClient))
		mux.HandleFunc("POST "+prefix+MachinePath, s.authed(s.startMachine))
		mux.HandleFunc("POST "+prefix+InfoPath, s.authed(s.info))
		mux.HandleFunc("POST "+prefix+StatePath, s.authed(s.state))
	}
	mux.HandleFunc("GET "+FilesPath+"{name}", s.file)
	mux.HandleFunc("GET /_sim/cytomic/operations", func(w http.ResponseWriter, _ *http.Request) {
		simhttp.WriteJSON(w, http.StatusOK, s.Operations())
	})
	mux.HandleFunc("GET /_sim/cytomic/batches", func(w http.ResponseWriter, _ *http.Request) {
		info, state := s.BatchSizes()
		simhttp.WriteJSON(w, http.StatusOK, map[string][]int{"info": info, "state": state})
	})
	mux.HandleFunc("POST /_sim/cytomic/expire-urls", func(w http.ResponseWriter, _ *http.Request) {
		s.ExpireURLs()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/cytomic/revoke-tokens", func(w http.ResponseWriter, _ *http.Request) {
		s.RevokeTokens()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/cytomic/clients", func(w http.ResponseWriter, r *http.Request) {
		var c Client
		if err := simhttp.ReadJSON(w, r, maxBody, &c); err != nil || c.PandaID == "" {
			simhttp.WriteJSON(w, http.StatusBadRequest, apiError("a client needs a pandaID"))
			return
		}
		s.AddClient(c)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_sim/cytomic/hits", func(w http.ResponseWriter, r *http.Request) {
		var h struct {
			SHA256    string   `json:"sha256"`
			Hostnames []string `json:"hostnames"`
		}
		if err := simhttp.ReadJSON(w, r, maxBody, &h); err != nil || h.SHA256 == "" {
			simhttp.WriteJSON(w, http.StatusBadRequest, apiError("hits need a sha256"))
			return
		}
		s.SetHits(h.SHA256, h.Hostnames...)
		w.WriteHeader(http.StatusNoContent)
	})
	s.handler = s.kit.Wrap(mux)
	return s
}

// ServeHTTP serves the API, the token endpoint and the result files.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Kit returns the fault switches and request log.
func (s *Server) Kit() *simhttp.Kit { return s.kit }

// Close releases hung requests. Call it before closing the HTTP server.
func (s *Server) Close() { s.kit.Close() }

// AddClient adds (or replaces) a client and its machines. Operations already
// created keep the machines they were created with.
func (s *Server) AddClient(c Client) {
	c.Machines = slices.Clone(c.Machines)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.clients[c.PandaID]; ok {
		for _, m := range old.Machines {
			delete(s.machineOf, m.MUID)
		}
	}
	s.clients[c.PandaID] = &c
	for _, m := range c.Machines {
		s.machineOf[m.MUID] = c.PandaID
	}
}

// SetHits says which hosts (by hostname, case-insensitive) have a file or
// process with the hash; each contributes RowsPerHost rows. It replaces any
// earlier hosts for that hash.
func (s *Server) SetHits(sha256 string, hostnames ...string) {
	set := map[string]bool{}
	for _, h := range hostnames {
		set[strings.ToLower(h)] = true
	}
	s.mu.Lock()
	s.hits[strings.ToLower(sha256)] = set
	s.mu.Unlock()
}

// Operations returns the operations created so far, oldest first.
func (s *Server) Operations() []Operation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Operation, 0, len(s.opOrder))
	for _, id := range s.opOrder {
		o := s.ops[id].Operation
		o.MUIDs = slices.Clone(o.MUIDs)
		out = append(out, o)
	}
	return out
}

// BatchSizes returns how many operation IDs each /info and each /state
// request carried, in arrival order (requests answered 2xx or 4xx by the
// simulator itself; requests a fault answered are not counted).
func (s *Server) BatchSizes() (info, state []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.infoSizes), slices.Clone(s.stateSizes)
}

// ExpireURLs makes every download URL issued so far answer 403, as it would
// after its five minutes. New /state answers carry fresh URLs.
func (s *Server) ExpireURLs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.grants)
}

// RevokeTokens makes every access token issued so far answer 401.
func (s *Server) RevokeTokens() { s.tokens.Revoke() }

// TokensIssued returns how many access tokens the token endpoint issued.
func (s *Server) TokensIssued() int { return s.tokens.Issued() }

// DownloadSignatures returns every download-URL signature issued so far
// (tests check they never reach a log).
func (s *Server) DownloadSignatures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.grants))
}

// Tokens returns the access tokens issued and not revoked (tests check
// they never leak into errors).
func (s *Server) Tokens() []string { return s.tokens.List() }

// --- token endpoint ---

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<16)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form body")
		return
	}
	if s.cfg.ClientID != "" {
		id, secret, ok := r.BasicAuth()
		if !ok || id != s.cfg.ClientID || secret != s.cfg.ClientSecret {
			w.Header().Set("WWW-Authenticate", `Basic realm="cas"`)
			oauthError(w, http.StatusUnauthorized, "invalid_client", "Bad client credentials")
			return
		}
	}
	if gt := r.PostForm.Get("grant_type"); gt != "password" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only grant_type=password is supported")
		return
	}
	user, pass := r.PostForm.Get("username"), r.PostForm.Get("password")
	if s.cfg.User == "" || user != s.cfg.User || pass != s.cfg.Password {
		oauthError(w, http.StatusUnauthorized, "invalid_grant", "Bad credentials")
		return
	}
	tok := randomHex(24)
	s.tokens.Issue(tok, s.cfg.Now().Add(s.cfg.TokenTTL))
	secs := int64((s.cfg.TokenTTL + time.Second - 1) / time.Second)
	w.Header().Set("Cache-Control", "no-store")
	simhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token":  tok,
		"token_type":    "bearer",
		"expires_in":    secs,
		"refresh_token": randomHex(24), // issued, as the CAS server does; never accepted back
		"scope":         cmp.Or(r.PostForm.Get("scope"), "orion.api"),
	})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	simhttp.WriteJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// jsonContent says whether a request content type is one an ASP.NET Core
// JSON input formatter reads: application/json, text/json or any
// application/*+json (application/json-patch+json, the documented one).
func jsonContent(ct string) bool {
	mt, _, _ := strings.Cut(strings.ToLower(ct), ";")
	mt = strings.TrimSpace(mt)
	return mt == "application/json" || mt == "text/json" ||
		(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json"))
}

func (s *Server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		scheme, tok, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orion"`)
			simhttp.WriteJSON(w, http.StatusUnauthorized, apiError("missing bearer token"))
			return
		}
		if !s.tokens.Valid(tok, s.cfg.Now()) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="orion", error="invalid_token"`)
			simhttp.WriteJSON(w, http.StatusUnauthorized, apiError("invalid or expired access token"))
			return
		}
		if !jsonContent(r.Header.Get("Content-Type")) {
			simhttp.WriteJSON(w, http.StatusUnsupportedMediaType, apiError("Content-Type must be application/json-patch+json or application/json"))
			return
		}
		h(w, r)
	}
}

func apiError(msg string) map[string]string { return map[string]string{"error": msg} }

// --- start ---

// startBody is a start request. Field names match case-insensitively (Go,
// like ASP.NET Core): "Ttl" (as Cytomic's English page writes it) is ttl.
type startBody struct {
	Query     string            `json:"query"`
	OSQuery   string            `json:"osQuery"`
	PandaIDs  []json.RawMessage `json:"pandaIDs"`
	ClientIDs []json.RawMessage `json:"clientIds"`
	Clients   []json.RawMessage `json:"clients"`
	MUIDs     []json.RawMessage `json:"MUIDs"`
	TTL       json.RawMessage   `json:"ttl"`
}

func (b *startBody) query() string { return cmp.Or(b.Query, b.OSQuery) }

// ttl reads "ttl" in unit; 0 is 24 hours ("0 para 24 horas").
func (b *startBody) ttl(unit time.Duration) (time.Duration, error) {
	raw := bytes.Trim(bytes.TrimSpace(b.TTL), `"`)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, fmt.Errorf("ttl is required (%s)", unitName(unit))
	}
	n, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || n < 0 || n > float64(30*24*time.Hour/unit) {
		return 0, fmt.Errorf("ttl must be a non-negative number of %s", unitName(unit))
	}
	if n == 0 {
		return 24 * time.Hour, nil
	}
	return time.Duration(n * float64(unit)), nil
}

func unitName(unit time.Duration) string {
	if unit == time.Minute {
		return "minutes"
	}
	return unit.String() + " units"
}

// readStart decodes a start request's body and the ID list its field (lists
// of b, the first one set) holds; when either is wrong it answers 400.
func readStart(w http.ResponseWriter, r *http.Request, field string, lists func(b *startBody) [][]json.RawMessage) (*startBody, []string, bool) {
	var b startBody
	if err := simhttp.ReadJSON(w, r, maxBody, &b); err != nil {
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError("request body is not valid JSON"))
		return nil, nil, false
	}
	ids, err := idList(lists(&b)...)
	if err != nil || len(ids) == 0 {
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError(field+" must be a non-empty list"))
		return nil, nil, false
	}
	return &b, ids, true
}

func (s *Server) startClient(w http.ResponseWriter, r *http.Request) {
	b, ids, ok := readStart(w, r, "pandaIDs", func(b *startBody) [][]json.RawMessage { return [][]json.RawMessage{b.PandaIDs, b.ClientIDs, b.Clients} })
	if !ok {
		return
	}
	s.start(w, b, "client", func() (map[string][]Machine, []string, error) {
		groups := map[string][]Machine{}
		var order []string
		for _, id := range ids {
			c, ok := s.clients[id]
			if !ok {
				return nil, nil, fmt.Errorf("unknown client %s", id)
			}
			if _, dup := groups[id]; !dup {
				order = append(order, id)
			}
			groups[id] = slices.Clone(c.Machines)
		}
		return groups, order, nil
	})
}

func (s *Server) startMachine(w http.ResponseWriter, r *http.Request) {
	b, muids, ok := readStart(w, r, "MUIDs", func(b *startBody) [][]json.RawMessage { return [][]json.RawMessage{b.MUIDs} })
	if !ok {
		return
	}
	s.start(w, b, "machine", func() (map[string][]Machine, []string, error) {
		groups := map[string][]Machine{}
		var order []string
		seen := map[string]bool{}
		for _, muid := range muids {
			if seen[muid] {
				continue
			}
			seen[muid] = true
			pid, ok := s.machineOf[muid]
			if !ok {
				return nil, nil, fmt.Errorf("unknown machine %s", muid)
			}
			if _, known := groups[pid]; !known {
				order = append(order, pid)
			}
			for _, m := range s.clients[pid].Machines {
				if m.MUID == muid {
					groups[pid] = append(groups[pid], m)
				}
			}
		}
		return groups, order, nil
	})
}

// start creates one operation per client group. pick runs under s.mu.
func (s *Server) start(w http.ResponseWriter, b *startBody, endpoint string, pick func() (map[string][]Machine, []string, error)) {
	q := strings.TrimSpace(b.query())
	if q == "" {
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError("query is required"))
		return
	}
	ttl, err := b.ttl(s.cfg.TTLUnit)
	if err != nil {
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError(err.Error()))
		return
	}
	s.mu.Lock()
	groups, order, err := pick()
	if err != nil {
		s.mu.Unlock()
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError(err.Error()))
		return
	}
	now := s.cfg.Now()
	bad := parseProblem(q)
	hashes := hashRe.FindAllString(strings.ToLower(q), -1)
	slices.Sort(hashes)
	hashes = slices.Compact(hashes)
	out := make([]map[string]any, 0, len(order))
	for _, pid := range order {
		ms := groups[pid]
		o := &operation{
			Operation: Operation{
				ID: s.newID(), PandaID: pid, Endpoint: endpoint, Query: q, TTL: ttl, Created: now,
			},
			machines: ms,
			badQuery: bad,
			hashes:   hashes,
		}
		for _, m := range ms {
			o.MUIDs = append(o.MUIDs, m.MUID)
		}
		s.ops[o.ID] = o
		s.opOrder = append(s.opOrder, o.ID)
		out = append(out, map[string]any{
			"pandaID":     s.wireID(pid),
			"operationId": s.wireID(o.ID),
			"MUIDs":       append([]string{}, o.MUIDs...),
		})
	}
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, out)
}

// newID runs under s.mu.
func (s *Server) newID() string {
	if s.cfg.NumericIDs {
		s.nextNum++
		return strconv.FormatInt(s.nextNum, 10)
	}
	return uuid.NewString()
}

// wireID renders an ID as a JSON number when NumericIDs is set and it is
// numeric.
func (s *Server) wireID(id string) any {
	if s.cfg.NumericIDs {
		if n, err := strconv.ParseInt(id, 10, 64); err == nil {
			return n
		}
	}
	return id
}

var (
	hashRe   = regexp.MustCompile(`[0-9a-f]{64}`)
	selectRe = regexp.MustCompile(`(?i)^\s*select\s`)
	tokenRe  = regexp.MustCompile(`^\s*([^\s(]+)`)
)

// parseProblem is the simulator's stand-in for the osquery SQL parser: it
// returns a 201 description for a statement that is not a SELECT or has
// unbalanced quotes or parentheses, "" otherwise.
func parseProblem(q string) string {
	near := func(s string) string {
		if m := tokenRe.FindStringSubmatch(s); m != nil {
			return fmt.Sprintf("near %q: syntax error", m[1])
		}
		return "syntax error"
	}
	if !selectRe.MatchString(q) {
		return near(q)
	}
	depth, inQuote := 0, false
	for i, c := range q {
		switch {
		case c == '\'':
			inQuote = !inQuote
		case inQuote:
		case c == '(':
			depth++
		case c == ')':
			depth--
			if depth < 0 {
				return near(q[i:])
			}
		}
	}
	if inQuote {
		return "unrecognized token: \"'\""
	}
	if depth != 0 {
		return `near "": syntax error`
	}
	return ""
}

// --- info / state ---

// readIDs reads a /info or /state body: a JSON array of {"operationId": …}
// (also accepted: bare IDs, an "operationID"/"id" key, or an object wrapping
// the list as "operations"/"operationIds"). IDs may be strings or numbers.
func readIDs(w http.ResponseWriter, r *http.Request) ([]string, string) {
	var raw json.RawMessage
	if err := simhttp.ReadJSON(w, r, maxBody, &raw); err != nil {
		return nil, "request body is not valid JSON (or larger than 1 MiB)"
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		var wrap struct {
			Operations   []json.RawMessage `json:"operations"`
			OperationIDs []json.RawMessage `json:"operationIds"`
		}
		if err := json.Unmarshal(raw, &wrap); err != nil {
			return nil, `body must be a list of {"operationId": …}`
		}
		list = append(wrap.Operations, wrap.OperationIDs...)
	}
	if len(list) > MaxBatch {
		return nil, fmt.Sprintf("at most %d operations per request, got %d", MaxBatch, len(list))
	}
	ids := make([]string, 0, len(list))
	for _, item := range list {
		src := item
		var obj struct {
			OperationID json.RawMessage `json:"operationId"`
			ID          json.RawMessage `json:"id"`
		}
		if bytes.HasPrefix(bytes.TrimSpace(item), []byte("{")) {
			if err := json.Unmarshal(item, &obj); err != nil {
				return nil, "unreadable operation entry"
			}
			src = obj.OperationID
			if len(src) == 0 {
				src = obj.ID
			}
		}
		id, ok := scalar(src)
		if !ok || id == "" {
			return nil, "every entry needs an operationId"
		}
		ids = append(ids, id)
	}
	return ids, ""
}

// scalar returns a JSON string's value or a JSON number's text.
func scalar(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false
		}
		return strings.TrimSpace(s), true
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n.String(), true
}

func idList(lists ...[]json.RawMessage) ([]string, error) {
	var out []string
	for _, l := range lists {
		for _, raw := range l {
			id, ok := scalar(raw)
			if !ok || id == "" {
				return nil, fmt.Errorf("bad ID")
			}
			out = append(out, id)
		}
	}
	return out, nil
}

type machineState struct {
	status string
	code   int
	desc   string
}

func (st machineState) hasData() bool {
	return st.status == StatusSuccess || st.status == StatusPartiallySucceeded
}

// machineState computes what machine m of o reports at now.
func (o *operation) machineState(m Machine, now time.Time) machineState {
	if m.Never || m.AnswerAfter > o.TTL || now.Before(o.Created.Add(m.AnswerAfter)) {
		return machineState{status: StatusPending}
	}
	code, desc := m.ErrorCode, ""
	switch {
	case code != 0:
	case m.OS != "" && !strings.HasPrefix(strings.ToLower(m.OS), "win"):
		code = CodeOsNotSupported
	case m.OSQueryMissing:
		code = CodeOsQueryNotInstalled
	case o.badQuery != "":
		code, desc = CodeExecutingOsQuery, o.badQuery
	}
	if code != 0 {
		return machineState{status: StatusError, code: code, desc: cmp.Or(desc, codeDescription[code], "Unknown error")}
	}
	if m.Partial {
		return machineState{status: StatusPartiallySucceeded}
	}
	return machineState{status: StatusSuccess}
}

// batch answers a /info or /state request: it reads the operation IDs
// (answering 400 when it can't), counts the batch in sizes, and answers a
// JSON list of what entry makes, with s.mu held, of each operation it
// knows. Unknown operations are left out of the answer.
func (s *Server) batch(w http.ResponseWriter, r *http.Request, sizes *[]int, entry func(o *operation, now time.Time) map[string]any) {
	ids, bad := readIDs(w, r)
	if bad != "" {
		simhttp.WriteJSON(w, http.StatusBadRequest, apiError(bad))
		return
	}
	s.mu.Lock()
	*sizes = append(*sizes, len(ids))
	now := s.cfg.Now()
	out := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		if o, ok := s.ops[id]; ok {
			out = append(out, entry(o, now))
		}
	}
	s.mu.Unlock()
	simhttp.WriteJSON(w, http.StatusOK, out)
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	s.batch(w, r, &s.infoSizes, func(o *operation, now time.Time) map[string]any {
		infos := make([]map[string]any, 0, len(o.machines))
		for _, m := range o.machines {
			st := o.machineState(m, now)
			e := map[string]any{"MUID": m.MUID, "status": st.status}
			if st.status == StatusError {
				e["errorCode"] = st.code
				e["errorDescription"] = st.desc
			}
			infos = append(infos, e)
		}
		return map[string]any{"panda": s.wireID(o.PandaID), "operationId": s.wireID(o.ID), "info": infos}
	})
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	s.batch(w, r, &s.stateSizes, func(o *operation, now time.Time) map[string]any {
		var success, partial, failed int
		for _, m := range o.machines {
			switch o.machineState(m, now).status {
			case StatusSuccess:
				success++
			case StatusPartiallySucceeded:
				partial++
			case StatusError:
				failed++
			}
		}
		e := map[string]any{
			"panda":       s.wireID(o.PandaID),
			"operationId": s.wireID(o.ID),
			"counters": map[string]int{
				"totalOperationElements":  len(o.machines),
				"totalSuccess":            success,
				"totalPartiallySucceeded": partial,
				"totalError":              failed,
			},
		}
		if success+partial+failed > 0 {
			sig := randomHex(16)
			s.grants[sig] = grant{opID: o.ID, expires: now.Add(s.cfg.URLTTL)}
			e["url"] = fmt.Sprintf("%s://%s%sosquery_%s?sig=%s&expires=%d", scheme, r.Host, FilesPath, o.ID, sig, now.Add(s.cfg.URLTTL).Unix())
		}
		return e
	})
}

// --- files ---

func (s *Server) file(w http.ResponseWriter, r *http.Request) {
	id, ok := strings.CutPrefix(r.PathValue("name"), "osquery_")
	sig := r.URL.Query().Get("sig")
	s.mu.Lock()
	g, granted := s.grants[sig]
	o, known := s.ops[id]
	now := s.cfg.Now()
	if !ok || !granted || g.opID != id || !now.Before(g.expires) {
		s.mu.Unlock()
		// S3-style: an expired or unknown signature is 403.
		http.Error(w, "AccessDenied: Request has expired or signature does not match", http.StatusForbidden)
		return
	}
	if !known {
		s.mu.Unlock()
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	var b strings.Builder
	b.WriteString(FileHeader + "\n")
	for _, m := range o.machines {
		if !o.machineState(m, now).hasData() {
			continue
		}
		for _, h := range o.hashes {
			if !s.hits[h][strings.ToLower(m.Hostname)] {
				continue
			}
			fmt.Fprintf(&b, "%s;%s;process;%d;sample.exe;C:\\Users\\Public\\sample.exe;%s\n", m.Hostname, m.MUID, 4000+len(m.MUID), h)
			fmt.Fprintf(&b, "%s;%s;file;;sample.exe;C:\\Users\\Public\\Downloads\\sample.exe;%s\n", m.Hostname, m.MUID, h)
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="osquery_%s"`, id))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(b.String()))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
