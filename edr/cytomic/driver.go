package cytomic

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

const vendor = "cytomic"

// API paths, below Config.URL and Config.APIPrefix. The public client
// (demisto/content Packs/CytomicOrion) posts to /osQuery/... on
// https://api.cytomic.ai; Cytomic's OSQuery page writes /api/v1/osQuery/...
// (set Config.APIPrefix to "/api/v1" for that form).
const (
	ClientPath = "/osQuery/client"
	InfoPath   = "/osQuery/info"
	StatePath  = "/osQuery/state"
)

// Defaults for Config fields left zero.
const (
	// DefaultURL is the API base the public client is configured with.
	DefaultURL = "https://api.cytomic.ai"
	// DefaultTokenURL is the token endpoint the public client is configured
	// with (Panda's CAS server).
	DefaultTokenURL = "https://auth.pandasecurity.com/oauth/token"
	// DefaultScope is the OAuth2 scope the public client requests.
	DefaultScope = "orion.api"
	// DefaultClientsField names the client list in the start body: the
	// public client's command argument for it is "pandaIDs" (the answers
	// name a client "pandaID").
	DefaultClientsField = "pandaIDs"
	// DefaultTTLUnit is the unit of "ttl": minutes, per Cytomic's page and
	// the public client ("máximo tiempo de espera en minutos").
	DefaultTTLUnit = time.Minute
	DefaultTTL     = time.Hour
	DefaultRound   = 5 * time.Second
	DefaultMaxFile = 64 << 20
	// DefaultMaxLine caps one line of a result file.
	DefaultMaxLine = 1 << 20
	// DefaultMaxToken caps one JSON string or number in an answer.
	DefaultMaxToken = 64 << 10
	DefaultMaxBatch = 500
	// PollInterval is the NextPoll Poll suggests: Poll itself blocks until
	// the next round, so the runner should call again at once and join
	// every round.
	PollInterval = 5 * time.Millisecond
)

// contentType is the request content type Cytomic's page and the public
// client use for every API call.
const contentType = "application/json-patch+json"

const (
	// urlAttempts bounds how many /state answers Collect asks for when a
	// download URL has expired (or is not there yet) before giving up with
	// a retryable error.
	urlAttempts = 3
	// unknownGrace is how long after Start an operation may be missing from
	// Cytomic's answers (not visible yet) before it counts as lost.
	unknownGrace = 2 * time.Minute
)

// Config configures a Driver.
type Config struct {
	// URL is the API base. Default DefaultURL.
	URL string
	// APIPrefix goes between URL and the /osQuery/... paths: "" (the
	// default, as the public client) or "/api/v1" (as Cytomic's page
	// writes the paths).
	APIPrefix string
	// TokenURL is the full OAuth2 token URL. Default DefaultTokenURL.
	TokenURL string
	// User and Password are the OAuth2 password-grant credentials of the
	// application authorised in the Orion console. Required.
	User, Password string
	// ClientID and ClientSecret are the OAuth2 client credentials, sent as
	// HTTP Basic authentication with the token request. Cytomic's page
	// says the CAS server requires them and publishes the pair to use
	// ("Enable Access to the API from External Programs"). Set both or
	// neither; neither sends no Authorization header (a proxy that adds
	// it, or the simulator).
	ClientID, ClientSecret string
	// Redact is the process's set of secrets, which every text built from
	// an answer goes through; the driver adds its password, OAuth client
	// secret and every access token it fetches to it. nil: a set of the
	// driver's own.
	Redact *redact.Set
	// Scope is the OAuth2 scope requested. Default DefaultScope.
	Scope string
	// ClientIDs are the Cytomic clients (customer accounts) to query.
	// Required.
	ClientIDs []string
	// ClientsField names the client list in the start body. Default
	// DefaultClientsField ("pandaIDs"); "clientIds" is what this driver
	// sent before the public client was consulted.
	ClientsField string
	// TTL is the operation TTL. Default DefaultTTL. It is sent as "ttl" in
	// TTLUnit, rounded up and at least 1 (Cytomic reads 0 as 24 hours).
	TTL time.Duration
	// TTLUnit is the unit of "ttl": time.Minute (default DefaultTTLUnit,
	// as documented) or time.Second.
	TTLUnit time.Duration
	// Round is the period of the batched /info and /state rounds. Default
	// DefaultRound.
	Round time.Duration
	// MaxBatch caps the operation IDs of one /info or /state request; a
	// round with more splits them. Default DefaultMaxBatch.
	MaxBatch int
	// UserAgent, Timeout and MaxBody configure API requests (internal/httpc).
	UserAgent string
	Timeout   time.Duration
	MaxBody   int64
	// MaxFile caps one result file. Default DefaultMaxFile.
	MaxFile int64
	// MaxLine caps one line of a result file. Default DefaultMaxLine.
	MaxLine int
	// MaxToken caps one JSON string or number in an API or token answer.
	// Default DefaultMaxToken.
	MaxToken int
	// Limiter paces API requests fleet-wide; nil means none.
	Limiter httpc.Limiter
	// Downloader fetches the result files (credential-free, allow-listed).
	// Required.
	Downloader *httpc.Downloader
	// Transport overrides the API HTTP transport (tests).
	Transport http.RoundTripper
	// Now is the clock for the operation TTL and token expiry. Default
	// time.Now.
	Now func() time.Time
	// Logger is optional.
	Logger *zap.Logger
}

// String describes cfg without its secrets.
func (c Config) String() string {
	return fmt.Sprintf("cytomic.Config{URL: %s, TokenURL: %s, User: %s, Password: %s, ClientID: %s, ClientSecret: %s}",
		httpc.Redact(c.URL), httpc.Redact(c.TokenURL), c.User, redact.Mask, c.ClientID, redact.Mask)
}

// GoString is String, so %#v does not print the secrets either.
func (c Config) GoString() string { return c.String() }

// Driver runs Cytomic OSQuery operations. It implements edr.Driver and is
// safe for concurrent use: concurrent Poll and Collect calls share batched
// rounds. Close stops a running round loop at once.
type Driver struct {
	base         string // URL and APIPrefix
	clientIDs    []string
	clientsField string
	ttlUnits     int64         // "ttl" as sent, in ttlUnit
	ttl          time.Duration // ttlUnits × ttlUnit: what Cytomic applies
	maxFile      int64
	maxLine      int
	maxToken     int
	now          func() time.Time
	log          *zap.Logger
	hc           *httpc.Client
	dl           *httpc.Downloader
	tokens       *vendorhttp.TokenSource
	rounds       *batcher
	settled      settledCache // answers of the rounds that found operations settled
	// answers maps the API's answers to *edr.Error; redact masks the
	// secrets and tokens in every text built from one.
	answers *vendorhttp.API
	redact  *redact.Set
}

var _ edr.Driver = (*Driver)(nil)

// New validates cfg and returns a Driver. It sends nothing: the first token
// is fetched by the first call that needs one.
func New(cfg Config) (*Driver, error) {
	base, err := checkURL("URL", cmp.Or(cfg.URL, DefaultURL))
	if err != nil {
		return nil, err
	}
	prefix := strings.TrimRight(strings.TrimSpace(cfg.APIPrefix), "/")
	if prefix != "" && (!strings.HasPrefix(prefix, "/") || strings.ContainsAny(prefix, "?#")) {
		return nil, errors.New(`cytomic: Config.APIPrefix must be empty or a path such as "/api/v1"`)
	}
	tokenURL, err := checkURL("TokenURL", cmp.Or(cfg.TokenURL, DefaultTokenURL))
	if err != nil {
		return nil, err
	}
	unit := cmp.Or(cfg.TTLUnit, DefaultTTLUnit)
	switch {
	case cfg.User == "":
		return nil, errors.New("cytomic: Config.User is required")
	case cfg.Password == "":
		return nil, errors.New("cytomic: Config.Password is required")
	case (cfg.ClientID == "") != (cfg.ClientSecret == ""):
		return nil, errors.New("cytomic: Config.ClientID and Config.ClientSecret go together: set both or neither")
	case strings.Contains(cfg.ClientID, ":"):
		return nil, errors.New("cytomic: Config.ClientID must not contain ':' (HTTP Basic authentication)")
	case cfg.Downloader == nil:
		return nil, errors.New("cytomic: Config.Downloader is required (result files are fetched without credentials)")
	case cfg.TTL < 0, cfg.Round < 0, cfg.MaxBatch < 0, cfg.MaxFile < 0, cfg.MaxLine < 0, cfg.MaxToken < 0:
		return nil, errors.New("cytomic: Config.TTL, Round, MaxBatch, MaxFile, MaxLine and MaxToken must not be negative")
	case unit != time.Minute && unit != time.Second:
		return nil, errors.New("cytomic: Config.TTLUnit must be time.Minute or time.Second")
	}
	var clients []string
	for _, c := range cfg.ClientIDs {
		if c = strings.TrimSpace(c); c != "" && !slices.Contains(clients, c) {
			clients = append(clients, c)
		}
	}
	if len(clients) == 0 {
		return nil, errors.New("cytomic: Config.ClientIDs needs at least one client ID")
	}
	field := strings.TrimSpace(cmp.Or(cfg.ClientsField, DefaultClientsField))
	if field == "query" || field == "ttl" {
		return nil, errors.New("cytomic: Config.ClientsField must not be query or ttl")
	}
	ttl := cmp.Or(cfg.TTL, DefaultTTL)
	if ttl < time.Second {
		return nil, errors.New("cytomic: Config.TTL must be at least one second")
	}
	// Rounded up and at least one unit: "ttl": 0 would be 24 hours.
	units := max(int64((ttl+unit-1)/unit), 1)
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.Named("cytomic")
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	hc := httpc.New(httpc.Config{
		Service:   vendor,
		UserAgent: cfg.UserAgent,
		Timeout:   cfg.Timeout,
		MaxBody:   cfg.MaxBody,
		Limiter:   cfg.Limiter,
		Transport: cfg.Transport,
	})
	red := cmp.Or(cfg.Redact, redact.New())
	red.Add(cfg.Password, cfg.ClientSecret)
	red.AddBasic(cfg.ClientID, cfg.ClientSecret)
	d := &Driver{
		answers: &vendorhttp.API{
			Vendor: vendor,
			Texts: map[vendorhttp.Class]string{
				vendorhttp.Redirect:    "unexpected redirect, not followed with credentials: check CYTOMIC_URL",
				vendorhttp.Credentials: "Cytomic rejected a freshly issued access token: check the account's API permissions",
				vendorhttp.Forbidden:   "forbidden: the account may not run OSQuery on these clients (check CYTOMIC_CLIENT_IDS and permissions)",
				vendorhttp.NotFound:    msgNotFound,
				vendorhttp.BadRequest:  "Cytomic refused the request as invalid",
			},
			Redact: red,
		},
		redact:       red,
		base:         base + prefix,
		clientIDs:    clients,
		clientsField: field,
		ttlUnits:     units,
		ttl:          time.Duration(units) * unit,
		maxFile:      cmp.Or(cfg.MaxFile, DefaultMaxFile),
		maxLine:      cmp.Or(cfg.MaxLine, DefaultMaxLine),
		maxToken:     cmp.Or(cfg.MaxToken, DefaultMaxToken),
		now:          now,
		log:          log,
		hc:           hc,
		dl:           cfg.Downloader,
	}
	grant := &passwordGrant{
		hc: hc, answers: newAuthAPI(cfg.ClientID, red), tokenURL: tokenURL, user: cfg.User, password: cfg.Password,
		clientID: cfg.ClientID, clientSecret: cfg.ClientSecret, scope: cmp.Or(cfg.Scope, DefaultScope),
		maxToken: d.maxToken,
	}
	// Every call that sees a 401 re-authenticates once and tries again,
	// even when the refused token was fetched for that very call.
	d.tokens = vendorhttp.NewTokenSource(vendorhttp.TokenConfig{Fetch: grant.fetch, RetryFresh: true, Now: now,
		Redact: red, Logger: log})
	d.rounds = newBatcher(cmp.Or(cfg.Round, DefaultRound), cmp.Or(cfg.MaxBatch, DefaultMaxBatch), log,
		fetchRound(d, "info", InfoPath, decodeInfo), fetchRound(d, "state", StatePath, decodeState))
	return d, nil
}

// fetchRound is a batcher's fetch of one endpoint: a POST of the operation
// IDs to path, its answer read by decode.
func fetchRound[T any](d *Driver, op, path string,
	decode func([]byte) (map[string]T, error)) func(context.Context, []opID) (map[string]T, error) {
	return func(ctx context.Context, ids []opID) (map[string]T, error) {
		var out map[string]T
		err := d.call(ctx, op, path, opList(ids), func(b []byte) (err error) {
			out, err = decode(b)
			return err
		})
		return out, err
	}
}

func checkURL(field, raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("cytomic: Config.%s must be an http(s) URL with a host", field)
	}
	if u.User != nil {
		return "", fmt.Errorf("cytomic: Config.%s must not carry credentials", field)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Kind returns edr.KindCytomicOSQuery.
func (d *Driver) Kind() string { return edr.KindCytomicOSQuery }

// Stats returns what the batched rounds have sent so far.
func (d *Driver) Stats() Stats { return d.rounds.snapshot() }

// Close fails pending Poll and Collect calls with a retryable error and
// stops the round loop, waiting for it. Later calls fail the same way. Safe
// to call twice.
func (d *Driver) Close() { d.rounds.close() }

// Query returns the OSQuery statement Start sends for sha256, which must
// already be validated (edr.ValidSHA256). It finds running processes whose
// image has the hash and files with the hash in the usual drop locations
// (users' Downloads, Desktop and temp folders, Windows\Temp, ProgramData),
// and names the host in every row (system_info.hostname), so the result
// file says where each row came from whatever columns Cytomic adds.
func Query(sha256 string) string {
	return "SELECT si.hostname AS hostname, 'process' AS source, p.pid AS pid, p.name AS name, p.path AS path, h.sha256 AS sha256" +
		" FROM system_info si CROSS JOIN processes p JOIN hash h ON h.path = p.path" +
		" WHERE h.sha256 = '" + sha256 + "'" +
		" UNION ALL" +
		" SELECT si.hostname, 'file', NULL, f.filename, f.path, h.sha256" +
		" FROM system_info si CROSS JOIN file f JOIN hash h ON h.path = f.path" +
		" WHERE (f.path LIKE 'C:\\Users\\%\\Downloads\\%' OR f.path LIKE 'C:\\Users\\%\\Desktop\\%'" +
		" OR f.path LIKE 'C:\\Users\\%\\AppData\\Local\\Temp\\%' OR f.path LIKE 'C:\\Windows\\Temp\\%'" +
		" OR f.path LIKE 'C:\\ProgramData\\%')" +
		" AND h.sha256 = '" + sha256 + "'"
}

// reference is the operation reference (edr.Ref):
//
//	{"ops":[{"pandaID","operationId","machines"}],"startedAt":<unix ms>,"ttl":<s>}
//
// IDs keep the JSON type Cytomic gave them. machines is how many MUIDs the
// start answer listed for the operation.
type reference struct {
	Ops       []refOp `json:"ops"`
	StartedAt int64   `json:"startedAt"`
	TTL       int64   `json:"ttl"`
}

type refOp struct {
	PandaID     opID `json:"pandaID"`
	OperationID opID `json:"operationId"`
	Machines    int  `json:"machines,omitempty"`
}

func (r reference) ids() []opID {
	out := make([]opID, len(r.Ops))
	for i, op := range r.Ops {
		out[i] = op.OperationID
	}
	return out
}

func (r reference) deadline() time.Time {
	return time.UnixMilli(r.StartedAt).Add(time.Duration(r.TTL) * time.Second)
}

func decodeRef(op string, raw edr.Ref) (reference, error) {
	var r reference
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, edr.Permanent(vendor, op, "invalid operation reference: "+jsonProblem(err))
	}
	if len(r.Ops) == 0 || r.TTL <= 0 || r.StartedAt <= 0 {
		return r, edr.Permanent(vendor, op, "invalid operation reference: needs ops, startedAt and ttl")
	}
	for _, o := range r.Ops {
		if o.OperationID.text == "" {
			return r, edr.Permanent(vendor, op, "invalid operation reference: an operation has no operationId")
		}
	}
	return r, nil
}

// Find returns edr.ErrFindUnsupported at once, without a request: Cytomic's
// OSQuery API cannot list operations nor look one up by anything the start
// request sets (it carries no name or label, and /info and /state answer
// only for operation IDs already known). The runner then starts again; see
// the package doc ("Restarts") for what that costs.
func (d *Driver) Find(context.Context, edr.Target, edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrFindUnsupported
}

// Start validates the hash, then runs Query on every configured client with
// one POST /osQuery/client and returns the reference of the operations (one
// per client). The request depends only on the hash and the configuration,
// never on the clock, and is sent once: Start does not retry, so each call
// starts at most one set of operations.
func (d *Driver) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	sha, err := edr.ValidSHA256(t.SHA256)
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "start", Msg: "refusing to build a query", Err: err}
	}
	if hold := d.rounds.throttledFor(); hold > 0 {
		return nil, throttled("start", hold)
	}
	// Nothing here depends on the clock: the same intent sends the same
	// request.
	body := map[string]any{
		"query":        Query(sha),
		"ttl":          d.ttlUnits,
		d.clientsField: d.clientIDs,
	}
	var ops []startOp
	err = d.call(ctx, "start", ClientPath, body, func(b []byte) (err error) {
		ops, err = decodeStart(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		return nil, edr.Permanent(vendor, "start", fmt.Sprintf(
			"Cytomic started no operation for clients %s: check CYTOMIC_CLIENT_IDS", strings.Join(d.clientIDs, ",")))
	}
	ref := reference{StartedAt: d.now().UnixMilli(), TTL: int64(d.ttl / time.Second)}
	for _, op := range ops {
		ref.Ops = append(ref.Ops, refOp{PandaID: op.PandaID, OperationID: op.OperationID, Machines: len(op.MUIDs)})
	}
	raw, err := json.Marshal(ref)
	if err != nil {
		return nil, fmt.Errorf("cytomic start: encode reference: %w", err)
	}
	d.log.Debug("started", zap.String("job_id", t.JobID), zap.Int("operations", len(ops)))
	return raw, nil
}

// Poll joins the driver's next batched round (/osQuery/info and
// /osQuery/state, each one request for every waiting operation) with the
// operations of ref and blocks until that round answers (or ctx ends). It is
// Done when every operation's counters add up (totalOperationElements equals
// totalSuccess + totalPartiallySucceeded + totalError, the source document's
// rule; /info's per-machine statuses when the counters are absent) or when
// the operation TTL has passed. When every machine failed it returns a permanent
// error naming the Cytomic error code(s). Poll blocks for up to Config.Round
// plus one request, so a caller's deadline must exceed that.
func (d *Driver) Poll(ctx context.Context, raw edr.Ref) (edr.Status, error) {
	ref, err := decodeRef("poll", raw)
	if err != nil {
		return edr.Status{}, err
	}
	res, err := d.rounds.wait(ctx, "poll", ref.ids(), wantInfo|wantState)
	if err != nil {
		return edr.Status{}, err
	}
	return d.status(ref, res)
}

// status reads one operation's progress out of a round's answers.
func (d *Driver) status(ref reference, res roundResult) (edr.Status, error) {
	tally, now, err := d.checkedTally(ref, res, "poll")
	if err != nil {
		return edr.Status{}, err
	}
	ttlOver := !now.Before(ref.deadline())
	if tally.settled || ttlOver {
		d.settled.keep(ref, res, now) // for its Collect, next
	}
	return edr.Status{
		Done:     tally.settled || ttlOver,
		Progress: tally.progress(ttlOver),
		NextPoll: PollInterval,
	}, nil
}

// checkedTally reads ref's operations out of a round's answers at the current
// time, which it returns too. Operations Cytomic still does not know well
// after Start (tally.lost) or every machine failed (tally.allFailed, masked)
// are op's permanent error.
func (d *Driver) checkedTally(ref reference, res roundResult, op string) (tally, time.Time, error) {
	now := d.now()
	t := tallyRound(ref, res.info, res.state, now)
	if err := t.lost(ref, now, op); err != nil {
		return tally{}, now, err
	}
	if err := d.answers.Mask(t.allFailed(op)); err != nil {
		return tally{}, now, err
	}
	return t, now, nil
}

// PollBatch polls every operation of refs with one /osQuery/info and one
// /osQuery/state request (split only past MaxBatch IDs), on the caller's
// goroutine (edr.BatchPoller): the runner gathers the due polls of an
// account into one call.
func (d *Driver) PollBatch(ctx context.Context, raws []edr.Ref) []edr.PollAnswer {
	out := make([]edr.PollAnswer, len(raws))
	refs := make([]reference, len(raws))
	ok := make([]bool, len(raws))
	var ids []opID
	seen := map[string]bool{}
	for i, raw := range raws {
		ref, err := decodeRef("poll", raw)
		if err != nil {
			out[i].Err = err
			continue
		}
		refs[i], ok[i] = ref, true
		for _, id := range ref.ids() {
			if !seen[id.text] {
				seen[id.text] = true
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return out
	}
	res, err := d.rounds.now(ctx, "poll", ids)
	for i, ref := range refs {
		switch {
		case !ok[i]:
		case err != nil:
			out[i].Err = err
		default:
			out[i].Status, out[i].Err = d.status(ref, res)
		}
	}
	return out
}

// Collect takes the /osQuery/info and /osQuery/state answers of the poll
// that found the operations settled (kept for settledFresh), or else joins
// the next batched round for them, downloads every operation's result file
// with the Downloader and summarises them. A download answered 403/410 (the
// URL expired) or 404 is retried with a fresh URL from the following /state
// round, at most a few times. A Collect that waits for a round blocks for
// up to Config.Round, so a caller's deadline must exceed it.
func (d *Driver) Collect(ctx context.Context, raw edr.Ref) (edr.Result, error) {
	ref, err := decodeRef("collect", raw)
	if err != nil {
		return edr.Result{}, err
	}
	res, fresh := d.settled.take(ref.ids(), d.now())
	if !fresh {
		if res, err = d.rounds.wait(ctx, "collect", ref.ids(), wantInfo|wantState); err != nil {
			return edr.Result{}, err
		}
	}
	tally, now, err := d.checkedTally(ref, res, "collect")
	if err != nil {
		return edr.Result{}, err
	}

	acc := newAccumulator()
	pending := slices.Clone(ref.Ops)
	for attempt := 1; ; attempt++ {
		var again []refOp
		for _, op := range pending {
			st, ok := res.state[op.OperationID.text]
			if !ok {
				again = append(again, op)
				continue
			}
			acc.counters[op.OperationID.text] = st.Counters
			if st.URL == "" {
				if st.Counters.Success+st.Counters.Partial > 0 {
					again = append(again, op) // data reported, file not published yet
				}
				continue
			}
			sum, err := d.download(ctx, op, st.URL)
			switch {
			case errors.Is(err, errURLExpired):
				again = append(again, op)
			case err != nil:
				return edr.Result{}, err
			default:
				acc.add(sum)
			}
		}
		if len(again) == 0 {
			break
		}
		if attempt >= urlAttempts {
			return edr.Result{}, &edr.Error{Vendor: vendor, Op: "collect", Retryable: true, Msg: fmt.Sprintf(
				"no usable download URL for %d operation(s) after %d /state answers (expired, missing or not published yet)",
				len(again), attempt)}
		}
		d.log.Info("asking /state again for fresh download URLs", zap.Int("operations", len(again)), zap.Int("attempt", attempt))
		pending = again
		ids := make([]opID, len(again))
		for i, op := range again {
			ids[i] = op.OperationID
		}
		if res, err = d.rounds.wait(ctx, "collect", ids, wantState); err != nil {
			return edr.Result{}, err
		}
	}
	return acc.result(tally, !now.Before(ref.deadline())), nil
}

// Cancel returns edr.ErrCancelUnsupported: Cytomic has no way to cancel an
// OSQuery operation; it ends by itself at its TTL. Cancel sends nothing; it
// releases Poll and Collect calls still waiting for a round on ref's
// operations.
func (d *Driver) Cancel(_ context.Context, raw edr.Ref) error {
	if ref, err := decodeRef("cancel", raw); err == nil {
		d.rounds.drop(ref.ids())
		d.settled.forget(ref.ids())
	}
	return edr.ErrCancelUnsupported
}

// errURLExpired marks a download answered 400, 401, 403, 404 or 410.
var errURLExpired = errors.New("download URL expired")

// download fetches and parses one result file. The URL is never logged nor
// put in an error (the Downloader redacts it).
func (d *Driver) download(ctx context.Context, op refOp, rawURL string) (fileSummary, error) {
	resp, err := d.dl.Get(ctx, rawURL)
	if err != nil {
		var se *httpc.StatusError
		switch {
		case errors.As(err, &se) && (se.Status == http.StatusForbidden || se.Status == http.StatusGone ||
			se.Status == http.StatusNotFound || se.Status == http.StatusBadRequest ||
			se.Status == http.StatusUnauthorized):
			// 403/410 (400/401 from some stores): the five minutes ran out
			// (S3 answers 403). 404: the object is not visible (yet) behind
			// a fresh URL. All are answered by asking /state again, a
			// bounded number of times.
			return fileSummary{}, errURLExpired
		case errors.Is(err, httpc.ErrDownloadRefused):
			return fileSummary{}, &edr.Error{Vendor: vendor, Op: "collect", Err: err,
				Msg: "result file URL refused: its host must be in DOWNLOAD_HOSTS"}
		}
		return fileSummary{}, edr.Wrap(vendor, "collect", fmt.Errorf("download result file of operation %s: %w", op.OperationID, err))
	}
	defer resp.Body.Close()
	sum, err := parseFile(&cappedReader{r: resp.Body, max: d.maxFile}, d.maxLine)
	switch {
	case err == nil:
		return sum, nil
	case errors.Is(err, errFileTooLarge), errors.Is(err, httpc.ErrTooLarge):
		return fileSummary{}, &edr.Error{Vendor: vendor, Op: "collect", Err: err,
			Msg: fmt.Sprintf("result file of operation %s is larger than the %d-byte limit", op.OperationID, d.maxFile)}
	case errors.Is(err, errLineTooLong), errors.Is(err, errTooManyFields):
		return fileSummary{}, &edr.Error{Vendor: vendor, Op: "collect", Err: err,
			Msg: fmt.Sprintf("result file of operation %s is malformed", op.OperationID)}
	}
	return fileSummary{}, edr.Wrap(vendor, "collect", fmt.Errorf("read result file of operation %s: %w", op.OperationID, err))
}

// opList is the /info and /state request body: [{"operationId": …}, …].
func opList(ids []opID) []map[string]opID {
	out := make([]map[string]opID, len(ids))
	for i, id := range ids {
		out[i] = map[string]opID{"operationId": id}
	}
	return out
}

// msgNotFound explains a 404 from the API or the token endpoint.
const msgNotFound = "endpoint not found: check CYTOMIC_URL (and CYTOMIC_TOKEN_URL)"

// call POSTs body as JSON to path with the bearer token and hands a 2xx
// body to decode. A 401 gets one transparent re-authentication and retry
// (vendorhttp.TokenSource); other answers are mapped by d.answers.
func (d *Driver) call(ctx context.Context, op, path string, body any, decode func([]byte) error) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("cytomic %s: encode request: %w", op, err)
	}
	var resp *httpc.Response
	refused, err := d.tokens.Do(ctx, func(tok string) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.base+path, bytes.NewReader(payload))
		if err != nil {
			return false, edr.Permanent(vendor, op, "cannot build the request: check CYTOMIC_URL")
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Accept", "application/json")
		if resp, err = d.hc.Do(req); err != nil {
			return false, d.answers.NoAnswer(ctx, op, err)
		}
		return resp.Status == http.StatusUnauthorized, nil
	})
	switch {
	case err != nil:
		return err
	case refused, resp.Status < 200 || resp.Status >= 300:
		return d.answers.Error(vendorhttp.Call{Op: op}, resp)
	}
	if err := checkTokens(resp.Body, d.maxToken); err != nil {
		return &edr.Error{Vendor: vendor, Op: op, Status: resp.Status, Err: err}
	}
	if err := decode(resp.Body); err != nil {
		return d.answers.Malformed(vendorhttp.Call{Op: op}, resp.Status, err)
	}
	return nil
}
