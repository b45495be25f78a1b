// Package simstack runs every simulator together — SampleDB, Carbon Black
// Cloud, CB EDR Live Response, Cytomic Orion and Sophos Central — each on
// its own loopback listener, with fixed development credentials and data
// that gives the vendors something to find. worker dev, the integration
// tests and `worker sim` (multi-process tests) use it; Env returns the
// worker configuration that points at it.
package simstack

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/analysisfleet/analysisfleet/sim/cbc"
	"github.com/analysisfleet/analysisfleet/sim/cblr"
	"github.com/analysisfleet/analysisfleet/sim/cytomic"
	"github.com/analysisfleet/analysisfleet/sim/sampledb"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/sophos"
)

// Development credentials of the stack. They are not secrets: they only
// open the simulators.
const (
	AnalyzerKey = "dev-analyzer-key"
	UserKey     = "dev-user-key"
	ViewerKey   = "dev-viewer-key"

	CBCOrgKey    = "DEVORG01"
	CBCAPIID     = "DEVAPIID01"
	CBCAPISecret = "dev-cbc-secret"

	CBLRToken = "dev-cblr-token"

	CytomicUser         = "dev-analyst"
	CytomicPassword     = "dev-cytomic-password"
	CytomicClientID     = "dev-cytomic-client"
	CytomicClientSecret = "dev-cytomic-client-secret"

	SophosClientID     = "dev-sophos-client"
	SophosClientSecret = "dev-sophos-secret"
	SophosTenantID     = "11111111-2222-3333-4444-555555555555"
)

// CytomicClients are the Cytomic client (customer) IDs the stack serves.
var CytomicClients = []string{"client-eu-1", "client-eu-2"}

// Timing is how fast the simulated vendors progress.
type Timing struct {
	CBCQueued, CBCRun                  time.Duration
	SophosPending, SophosRun           time.Duration
	SophosMinPoll                      time.Duration
	CBLRCheckIn, CBLRCommand           time.Duration
	CytomicAnswerMin, CytomicAnswerMax time.Duration
}

// DevTiming is a few seconds per vendor operation: watchable in worker dev.
var DevTiming = Timing{
	CBCQueued: time.Second, CBCRun: 3 * time.Second,
	SophosPending: time.Second, SophosRun: 3 * time.Second, SophosMinPoll: 500 * time.Millisecond,
	CBLRCheckIn: time.Second, CBLRCommand: time.Second,
	CytomicAnswerMin: time.Second, CytomicAnswerMax: 4 * time.Second,
}

// TestTiming is tens of milliseconds: fast tests.
var TestTiming = Timing{
	CBCQueued: 20 * time.Millisecond, CBCRun: 50 * time.Millisecond,
	SophosPending: 20 * time.Millisecond, SophosRun: 50 * time.Millisecond,
	CBLRCheckIn: 20 * time.Millisecond, CBLRCommand: 30 * time.Millisecond,
	CytomicAnswerMin: 20 * time.Millisecond, CytomicAnswerMax: 80 * time.Millisecond,
}

// Customers of the stack: the first is served by the accounts above; with
// Config.Customers 2 the second has vendor simulators of its own, with
// credentials of its own (Other).
const (
	CustomerA = "dev-customer"
	CustomerB = "dev-customer-b"
)

// Credentials are one customer's simulated vendor accounts' credentials.
type Credentials struct {
	CBCOrgKey, CBCAPIID, CBCAPISecret    string
	CBLRToken                            string
	CytomicUser, CytomicPassword         string
	CytomicClientID, CytomicClientSecret string
	CytomicClients                       []string
	SophosClientID, SophosClientSecret   string
	SophosTenantID                       string
}

// DevCredentials are CustomerA's.
var DevCredentials = Credentials{
	CBCOrgKey: CBCOrgKey, CBCAPIID: CBCAPIID, CBCAPISecret: CBCAPISecret,
	CBLRToken:   CBLRToken,
	CytomicUser: CytomicUser, CytomicPassword: CytomicPassword,
	CytomicClientID: CytomicClientID, CytomicClientSecret: CytomicClientSecret,
	CytomicClients: CytomicClients,
	SophosClientID: SophosClientID, SophosClientSecret: SophosClientSecret, SophosTenantID: SophosTenantID,
}

// OtherCredentials are CustomerB's: nothing in common with CustomerA's, so
// a request made with the wrong customer's account is refused.
var OtherCredentials = Credentials{
	CBCOrgKey: "DEVORG02", CBCAPIID: "DEVAPIID02", CBCAPISecret: "dev-cbc-secret-b",
	CBLRToken:   "dev-cblr-token-b",
	CytomicUser: "dev-analyst-b", CytomicPassword: "dev-cytomic-password-b",
	CytomicClientID: "dev-cytomic-client-b", CytomicClientSecret: "dev-cytomic-client-secret-b",
	CytomicClients: []string{"client-us-1"},
	SophosClientID: "dev-sophos-client-b", SophosClientSecret: "dev-sophos-secret-b",
	SophosTenantID: "99999999-8888-7777-6666-555555555555",
}

// Config configures a Stack.
type Config struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Ports for SampleDB, CBC, CBLR, Cytomic, Sophos; 0 = any free port.
	SampleDBPort, CBCPort, CBLRPort, CytomicPort, SophosPort int
	Timing                                                   Timing
	// Customers is 1 (default) or 2: the second customer's vendor
	// simulators listen on free ports.
	Customers int
}

// Account is one customer's simulated vendor accounts.
type Account struct {
	Customer string
	Creds    Credentials
	CBC      *cbc.Server
	CBLR     *cblr.Server
	Cytomic  *cytomic.Server
	Sophos   *sophos.Server

	CBCURL, CBLRURL, CytomicURL, SophosURL string
}

// Stack is the running simulators.
type Stack struct {
	SampleDB *sampledb.Server
	// CBC, CBLR, Cytomic and Sophos are CustomerA's (Accounts[0]).
	CBC     *cbc.Server
	CBLR    *cblr.Server
	Cytomic *cytomic.Server
	Sophos  *sophos.Server

	SampleDBURL, CBCURL, CBLRURL, CytomicURL, SophosURL string

	// Accounts are every customer's, CustomerA's first.
	Accounts []*Account

	servers []*http.Server
	wg      sync.WaitGroup
	once    sync.Once
}

func newAccount(customer string, c Credentials, t Timing) *Account {
	a := &Account{
		Customer: customer, Creds: c,
		CBC: cbc.New(cbc.Config{OrgKey: c.CBCOrgKey, APIID: c.CBCAPIID, APISecret: c.CBCAPISecret,
			QueuedFor: t.CBCQueued, RunFor: t.CBCRun}),
		CBLR: cblr.New(cblr.Config{APIToken: c.CBLRToken, CheckInAfter: t.CBLRCheckIn, CommandTime: t.CBLRCommand}),
		Cytomic: cytomic.New(cytomic.Config{User: c.CytomicUser, Password: c.CytomicPassword,
			ClientID: c.CytomicClientID, ClientSecret: c.CytomicClientSecret}),
		Sophos: sophos.New(sophos.Config{ClientID: c.SophosClientID, ClientSecret: c.SophosClientSecret,
			TenantID: c.SophosTenantID, PendingFor: t.SophosPending, RunFor: t.SophosRun,
			MinPollInterval: t.SophosMinPoll}),
	}
	for _, sensor := range cblr.DefaultSensors() {
		a.CBLR.AddSensor(sensor)
	}
	for i, cl := range c.CytomicClients {
		var machines []cytomic.Machine
		for m := range 3 {
			spread := t.CytomicAnswerMax - t.CytomicAnswerMin
			machines = append(machines, cytomic.Machine{
				MUID:        fmt.Sprintf("%s-m%d", cl, m+1),
				Hostname:    fmt.Sprintf("WS-%02d-%02d", i+1, m+1),
				OS:          "windows",
				AnswerAfter: t.CytomicAnswerMin + spread*time.Duration(m)/2,
			})
		}
		a.Cytomic.AddClient(cytomic.Client{PandaID: cl, Machines: machines})
	}
	return a
}

// Start starts every simulator.
func Start(cfg Config) (*Stack, error) {
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	t := cfg.Timing
	if t == (Timing{}) {
		t = DevTiming
	}
	if cfg.Customers < 0 || cfg.Customers > 2 {
		return nil, fmt.Errorf("simstack: Customers %d: 1 or 2", cfg.Customers)
	}
	a := newAccount(CustomerA, DevCredentials, t)
	s := &Stack{
		SampleDB: sampledb.New(sampledb.Config{Keys: map[string]sampledb.Role{
			AnalyzerKey: sampledb.RoleAnalyzer, UserKey: sampledb.RoleUser, ViewerKey: sampledb.RoleViewer,
		}}),
		CBC: a.CBC, CBLR: a.CBLR, Cytomic: a.Cytomic, Sophos: a.Sophos,
		Accounts: []*Account{a},
	}
	type svc struct {
		port int
		h    http.Handler
		url  *string
	}
	svcs := []svc{
		{cfg.SampleDBPort, s.SampleDB, &s.SampleDBURL},
		{cfg.CBCPort, a.CBC, &a.CBCURL},
		{cfg.CBLRPort, a.CBLR, &a.CBLRURL},
		{cfg.CytomicPort, a.Cytomic, &a.CytomicURL},
		{cfg.SophosPort, a.Sophos, &a.SophosURL},
	}
	if cfg.Customers == 2 {
		b := newAccount(CustomerB, OtherCredentials, t)
		s.Accounts = append(s.Accounts, b)
		svcs = append(svcs, svc{0, b.CBC, &b.CBCURL}, svc{0, b.CBLR, &b.CBLRURL}, svc{0, b.Cytomic, &b.CytomicURL}, svc{0, b.Sophos, &b.SophosURL})
	}
	for _, x := range svcs {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(x.port)))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("simstack: listen: %w", err)
		}
		*x.url = "http://" + ln.Addr().String()
		srv := &http.Server{Handler: x.h, ReadHeaderTimeout: 10 * time.Second}
		s.servers = append(s.servers, srv)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				_ = err // the listener closed under us: Close is running
			}
		}()
	}
	s.CBCURL, s.CBLRURL, s.CytomicURL, s.SophosURL = a.CBCURL, a.CBLRURL, a.CytomicURL, a.SophosURL
	return s, nil
}

// Customers returns the stack's customers, CustomerA first.
func (s *Stack) Customers() []string {
	out := make([]string, len(s.Accounts))
	for i, a := range s.Accounts {
		out[i] = a.Customer
	}
	return out
}

// Kits returns every simulator's fault kit and request log, by vendor name
// ("cbc"…, and "cbc@<customer>" for a second customer's).
func (s *Stack) Kits() map[string]*simhttp.Kit {
	out := map[string]*simhttp.Kit{"sampledb": s.SampleDB.Kit()}
	for i, a := range s.Accounts {
		sfx := ""
		if i > 0 {
			sfx = "@" + a.Customer
		}
		out["cbc"+sfx], out["cblr"+sfx], out["cytomic"+sfx], out["sophos"+sfx] = a.CBC.Kit(), a.CBLR.Kit(), a.Cytomic.Kit(), a.Sophos.Kit()
	}
	return out
}

// Plant makes every vendor of every customer find sha256 on a few hosts.
func (s *Stack) Plant(sha256 string) {
	for _, a := range s.Accounts {
		a.CBC.SetHits(sha256, "WIN-FIN-LT01", "WIN-HR-WS07")
		a.Sophos.SetHits(sha256, 4, "WIN-FIN-LT01", "WIN-HR-WS07")
		a.Cytomic.SetHits(sha256, "WS-01-01", "WS-02-02")
	}
}

// RunFor makes every customer's CB Cloud exports and Sophos runs for
// sha256 take d instead of the stack's Timing (worker dev --hold: jobs that
// last, to abort and watch). The other vendors keep their timing.
func (s *Stack) RunFor(sha256 string, d time.Duration) {
	for _, a := range s.Accounts {
		a.CBC.SetRunFor(sha256, d)
		a.Sophos.SetRunFor(sha256, d)
	}
}

// Env is the worker configuration (the environment contract) pointing at
// the stack, with every vendor on: CustomerA's accounts as the
// single-account variables (the default tenant).
func (s *Stack) Env() map[string]string {
	env := s.baseEnv()
	c := DevCredentials
	for k, v := range map[string]string{
		"CBC_URL": s.CBCURL, "CBC_ORG_KEY": c.CBCOrgKey, "CBC_API_ID": c.CBCAPIID, "CBC_API_SECRET": c.CBCAPISecret,
		"CBLR_URL": s.CBLRURL, "CBLR_API_TOKEN": c.CBLRToken,
		"CYTOMIC_URL": s.CytomicURL, "CYTOMIC_TOKEN_URL": s.CytomicURL + cytomic.TokenPath,
		"CYTOMIC_USER": c.CytomicUser, "CYTOMIC_PASSWORD": c.CytomicPassword,
		"CYTOMIC_CLIENT_ID": c.CytomicClientID, "CYTOMIC_CLIENT_SECRET": c.CytomicClientSecret,
		"CYTOMIC_CLIENT_IDS": strings.Join(c.CytomicClients, ","),
		"SOPHOS_URL":         s.SophosURL, "SOPHOS_AUTH_URL": s.SophosURL,
		"SOPHOS_CLIENT_ID": c.SophosClientID, "SOPHOS_CLIENT_SECRET": c.SophosClientSecret, "SOPHOS_TENANT_ID": c.SophosTenantID,
	} {
		env[k] = v
	}
	return env
}

func (s *Stack) baseEnv() map[string]string {
	return map[string]string{
		"SAMPLEDB_URL": s.SampleDBURL, "SAMPLEDB_API_KEY": AnalyzerKey,
		"INSECURE_HTTP": "true",
		// The CBC and Cytomic simulators serve their download URLs themselves.
		"DOWNLOAD_HOSTS": "127.0.0.1,localhost",
	}
}

// TenantsEnv is the worker configuration with every customer's accounts in
// a tenants file written to dir (secrets in files beside it), instead of
// the single-account variables.
func (s *Stack) TenantsEnv(dir string) (map[string]string, error) {
	var b strings.Builder
	b.WriteString("# The simulated customers' vendor accounts (worker dev).\ntenants:\n")
	write := func(name, v string) (string, error) {
		return name, os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600)
	}
	for i, a := range s.Accounts {
		c, p := a.Creds, fmt.Sprintf("c%d-", i)
		files := map[string]string{"cbc": c.CBCAPISecret, "cblr": c.CBLRToken, "cytomic-pw": c.CytomicPassword,
			"cytomic-client": c.CytomicClientSecret, "sophos": c.SophosClientSecret}
		for n, v := range files {
			if _, err := write(p+n+".secret", v); err != nil {
				return nil, fmt.Errorf("simstack: tenants file: %w", err)
			}
		}
		fmt.Fprintf(&b, "  %q:\n", a.Customer)
		fmt.Fprintf(&b, "    cbc: {url: %q, orgKey: %q, apiID: %q, apiSecretFile: %q}\n", a.CBCURL, c.CBCOrgKey, c.CBCAPIID, p+"cbc.secret")
		fmt.Fprintf(&b, "    cblr: {url: %q, apiTokenFile: %q}\n", a.CBLRURL, p+"cblr.secret")
		fmt.Fprintf(&b, "    cytomic: {url: %q, tokenURL: %q, user: %q, passwordFile: %q, clientID: %q, clientSecretFile: %q, clientIDs: [%s]}\n",
			a.CytomicURL, a.CytomicURL+cytomic.TokenPath, c.CytomicUser, p+"cytomic-pw.secret", c.CytomicClientID, p+"cytomic-client.secret",
			quoteAll(c.CytomicClients))
		fmt.Fprintf(&b, "    sophos: {url: %q, authURL: %q, clientID: %q, clientSecretFile: %q, tenantID: %q}\n",
			a.SophosURL, a.SophosURL, c.SophosClientID, p+"sophos.secret", c.SophosTenantID)
	}
	path := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("simstack: tenants file: %w", err)
	}
	env := s.baseEnv()
	env["TENANTS_FILE"] = path
	return env, nil
}

func quoteAll(v []string) string {
	q := make([]string, len(v))
	for i, x := range v {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// Close stops every simulator, releasing hung requests first.
func (s *Stack) Close() {
	s.once.Do(func() {
		closers := []interface{ Close() }{s.SampleDB}
		for _, a := range s.Accounts {
			closers = append(closers, a.CBC, a.CBLR, a.Cytomic, a.Sophos)
		}
		for _, k := range closers {
			if k != nil {
				k.Close()
			}
		}
		// No graceful shutdown: a simulator owes nobody an answer, and
		// Shutdown would wait out connections dialled but never used.
		for _, srv := range s.servers {
			_ = srv.Close()
		}
		s.wg.Wait()
	})
}
