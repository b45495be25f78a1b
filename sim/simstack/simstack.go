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

// Config configures a Stack.
type Config struct {
	// Host to listen on; default 127.0.0.1.
	Host string
	// Ports for SampleDB, CBC, CBLR, Cytomic, Sophos; 0 = any free port.
	SampleDBPort, CBCPort, CBLRPort, CytomicPort, SophosPort int
	Timing                                                   Timing
}

// Stack is the running simulators.
type Stack struct {
	SampleDB *sampledb.Server
	CBC      *cbc.Server
	CBLR     *cblr.Server
	Cytomic  *cytomic.Server
	Sophos   *sophos.Server

	SampleDBURL, CBCURL, CBLRURL, CytomicURL, SophosURL string

	servers []*http.Server
	wg      sync.WaitGroup
	once    sync.Once
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
	s := &Stack{
		SampleDB: sampledb.New(sampledb.Config{Keys: map[string]sampledb.Role{
			AnalyzerKey: sampledb.RoleAnalyzer, UserKey: sampledb.RoleUser, ViewerKey: sampledb.RoleViewer,
		}}),
		CBC: cbc.New(cbc.Config{OrgKey: CBCOrgKey, APIID: CBCAPIID, APISecret: CBCAPISecret,
			QueuedFor: t.CBCQueued, RunFor: t.CBCRun}),
		CBLR: cblr.New(cblr.Config{APIToken: CBLRToken, CheckInAfter: t.CBLRCheckIn, CommandTime: t.CBLRCommand}),
		Cytomic: cytomic.New(cytomic.Config{User: CytomicUser, Password: CytomicPassword,
			ClientID: CytomicClientID, ClientSecret: CytomicClientSecret}),
		Sophos: sophos.New(sophos.Config{ClientID: SophosClientID, ClientSecret: SophosClientSecret,
			TenantID: SophosTenantID, PendingFor: t.SophosPending, RunFor: t.SophosRun,
			MinPollInterval: t.SophosMinPoll}),
	}
	for _, sensor := range cblr.DefaultSensors() {
		s.CBLR.AddSensor(sensor)
	}
	for i, c := range CytomicClients {
		var machines []cytomic.Machine
		for m := range 3 {
			spread := t.CytomicAnswerMax - t.CytomicAnswerMin
			machines = append(machines, cytomic.Machine{
				MUID:        fmt.Sprintf("%s-m%d", c, m+1),
				Hostname:    fmt.Sprintf("WS-%02d-%02d", i+1, m+1),
				OS:          "windows",
				AnswerAfter: t.CytomicAnswerMin + spread*time.Duration(m)/2,
			})
		}
		s.Cytomic.AddClient(cytomic.Client{PandaID: c, Machines: machines})
	}
	type svc struct {
		port int
		h    http.Handler
		url  *string
	}
	for _, x := range []svc{
		{cfg.SampleDBPort, s.SampleDB, &s.SampleDBURL},
		{cfg.CBCPort, s.CBC, &s.CBCURL},
		{cfg.CBLRPort, s.CBLR, &s.CBLRURL},
		{cfg.CytomicPort, s.Cytomic, &s.CytomicURL},
		{cfg.SophosPort, s.Sophos, &s.SophosURL},
	} {
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
	return s, nil
}

// Kits returns every simulator's fault kit and request log, by vendor name.
func (s *Stack) Kits() map[string]*simhttp.Kit {
	return map[string]*simhttp.Kit{
		"sampledb": s.SampleDB.Kit(), "cbc": s.CBC.Kit(), "cblr": s.CBLR.Kit(),
		"cytomic": s.Cytomic.Kit(), "sophos": s.Sophos.Kit(),
	}
}

// Plant makes every vendor find sha256 on a few hosts.
func (s *Stack) Plant(sha256 string) {
	s.CBC.SetHits(sha256, "WIN-FIN-LT01", "WIN-HR-WS07")
	s.Sophos.SetHits(sha256, 4, "WIN-FIN-LT01", "WIN-HR-WS07")
	s.Cytomic.SetHits(sha256, "WS-01-01", "WS-02-02")
}

// Env is the worker configuration (the environment contract) pointing at
// the stack, with every vendor on.
func (s *Stack) Env() map[string]string {
	return map[string]string{
		"SAMPLEDB_URL": s.SampleDBURL, "SAMPLEDB_API_KEY": AnalyzerKey,
		"CBC_URL": s.CBCURL, "CBC_ORG_KEY": CBCOrgKey, "CBC_API_ID": CBCAPIID, "CBC_API_SECRET": CBCAPISecret,
		"CBLR_URL": s.CBLRURL, "CBLR_API_TOKEN": CBLRToken,
		"CYTOMIC_URL": s.CytomicURL, "CYTOMIC_TOKEN_URL": s.CytomicURL + cytomic.TokenPath,
		"CYTOMIC_USER": CytomicUser, "CYTOMIC_PASSWORD": CytomicPassword,
		"CYTOMIC_CLIENT_ID": CytomicClientID, "CYTOMIC_CLIENT_SECRET": CytomicClientSecret,
		"CYTOMIC_CLIENT_IDS": strings.Join(CytomicClients, ","),
		"SOPHOS_URL":         s.SophosURL, "SOPHOS_AUTH_URL": s.SophosURL,
		"SOPHOS_CLIENT_ID": SophosClientID, "SOPHOS_CLIENT_SECRET": SophosClientSecret, "SOPHOS_TENANT_ID": SophosTenantID,
		"INSECURE_HTTP": "true",
		// The CBC and Cytomic simulators serve their download URLs themselves.
		"DOWNLOAD_HOSTS": "127.0.0.1,localhost",
	}
}

// Close stops every simulator, releasing hung requests first.
func (s *Stack) Close() {
	s.once.Do(func() {
		for _, k := range []interface{ Close() }{s.SampleDB, s.CBC, s.CBLR, s.Cytomic, s.Sophos} {
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
