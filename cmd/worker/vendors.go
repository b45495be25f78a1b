package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/cbc"
	"github.com/analysisfleet/analysisfleet/edr/cblr"
	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/sophos"
	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/metrics"
	"github.com/analysisfleet/analysisfleet/internal/redact"
	"github.com/analysisfleet/analysisfleet/internal/tenant"
	"github.com/analysisfleet/analysisfleet/state"
)

// vendorSettings are what every account of a vendor gets, whichever
// customer it belongs to: fleet-wide rate limits per credential, polling,
// and the vendor-specific knobs.
type vendorSettings struct {
	ua       string
	insecure bool
	rate     map[string]float64 // by vendor
	burst    map[string]int

	cbcMaxSpool int64

	cblrPoll time.Duration

	cytomicRound, cytomicTTL, cytomicTTLUnit  time.Duration
	cytomicScope, cytomicPrefix, cytomicField string

	sophosPoll, sophosWindow time.Duration
	sophosMaxPages           int
	sophosMaxBytes           int64
}

// readVendorSettings reads the per-vendor settings of runVars.
func readVendorSettings(e *envconf.Env, ua string, insecure bool) vendorSettings {
	v := vendorSettings{ua: ua, insecure: insecure, rate: map[string]float64{}, burst: map[string]int{}}
	for _, d := range vendorRates {
		up := strings.ToUpper(d.vendor)
		v.rate[d.vendor] = e.Float(up + "_RATE_LIMIT")
		v.burst[d.vendor] = e.Int(up + "_RATE_BURST")
	}
	v.cbcMaxSpool = int64(e.Int("CBC_MAX_SPOOL"))
	v.cblrPoll = e.Duration("CBLR_POLL_INTERVAL")
	v.cytomicRound = e.Duration("CYTOMIC_ROUND")
	v.cytomicTTL = e.Duration("CYTOMIC_TTL")
	switch u := e.Str("CYTOMIC_TTL_UNIT"); u {
	case "minutes":
		v.cytomicTTLUnit = time.Minute
	case "seconds":
		v.cytomicTTLUnit = time.Second
	default:
		e.Fail("CYTOMIC_TTL_UNIT", "%q is not minutes or seconds", u)
	}
	v.cytomicScope = e.Str("CYTOMIC_SCOPE")
	v.cytomicPrefix = e.Str("CYTOMIC_API_PREFIX")
	v.cytomicField = e.Str("CYTOMIC_CLIENTS_FIELD")
	v.sophosPoll = e.Duration("SOPHOS_POLL_INTERVAL")
	v.sophosWindow = e.Duration("SOPHOS_WINDOW")
	v.sophosMaxPages = e.Int("SOPHOS_MAX_PAGES")
	v.sophosMaxBytes = int64(e.Int("SOPHOS_MAX_RESULT_BYTES"))
	return v
}

// envAccounts are the single-account variables: the default tenant of a
// single-customer deployment. names lists the variables that were set.
type envAccountSet struct {
	tenant.Accounts
	names []string
}

// envAccounts reads each vendor's group of variables: all unset = vendor
// off; partly set = a problem naming each missing variable.
func envAccounts(e *envconf.Env, insecure bool) envAccountSet {
	var out envAccountSet
	group := func(names ...string) bool {
		found := false
		for _, n := range names {
			k := []string{n}
			if v, _ := runVars.Lookup(n); v.Secret {
				k = append(k, n+"_FILE")
			}
			for _, k := range k {
				if e.Set(k) {
					found = true
					out.names = append(out.names, k)
				}
			}
		}
		return found
	}
	if group("CBC_URL", "CBC_ORG_KEY", "CBC_API_ID", "CBC_API_SECRET") {
		out.CBC = &tenant.CBC{URL: e.URL("CBC_URL", e.Required("CBC_URL"), insecure),
			OrgKey: e.Required("CBC_ORG_KEY"), APIID: e.Required("CBC_API_ID"), APISecret: e.RequiredSecret("CBC_API_SECRET")}
	}
	if group("CBLR_URL", "CBLR_API_TOKEN") {
		out.CBLR = &tenant.CBLR{URL: e.URL("CBLR_URL", e.Required("CBLR_URL"), insecure), APIToken: e.RequiredSecret("CBLR_API_TOKEN")}
	}
	if group("CYTOMIC_URL", "CYTOMIC_TOKEN_URL", "CYTOMIC_USER", "CYTOMIC_PASSWORD", "CYTOMIC_CLIENT_IDS", "CYTOMIC_CLIENT_ID", "CYTOMIC_CLIENT_SECRET") {
		c := &tenant.Cytomic{
			URL:      e.URL("CYTOMIC_URL", e.Str("CYTOMIC_URL"), insecure),
			TokenURL: e.URL("CYTOMIC_TOKEN_URL", e.Str("CYTOMIC_TOKEN_URL"), insecure),
			User:     e.Required("CYTOMIC_USER"), Password: e.RequiredSecret("CYTOMIC_PASSWORD"),
			ClientID: e.Str("CYTOMIC_CLIENT_ID"), ClientSecret: e.Secret("CYTOMIC_CLIENT_SECRET"),
			ClientIDs: e.List("CYTOMIC_CLIENT_IDS"),
		}
		if (c.ClientID == "") != (c.ClientSecret == "") && !e.Failed("CYTOMIC_CLIENT_SECRET") && !e.Failed("CYTOMIC_CLIENT_SECRET_FILE") {
			e.Fail("CYTOMIC_CLIENT_ID", "set CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET together (the OAuth client's Basic credentials)")
		}
		if len(c.ClientIDs) == 0 {
			e.Fail("CYTOMIC_CLIENT_IDS", "is required (comma-separated client IDs)")
		}
		out.Cytomic = c
	}
	if group("SOPHOS_URL", "SOPHOS_AUTH_URL", "SOPHOS_CLIENT_ID", "SOPHOS_CLIENT_SECRET", "SOPHOS_TENANT_ID") {
		// SOPHOS_URL and SOPHOS_TENANT_ID may be left out: a tenant
		// credential learns both from whoami.
		out.Sophos = &tenant.Sophos{
			URL:      e.URL("SOPHOS_URL", e.Str("SOPHOS_URL"), insecure),
			AuthURL:  e.URL("SOPHOS_AUTH_URL", e.Str("SOPHOS_AUTH_URL"), insecure),
			ClientID: e.Required("SOPHOS_CLIENT_ID"), ClientSecret: e.RequiredSecret("SOPHOS_CLIENT_SECRET"),
			TenantID: e.Str("SOPHOS_TENANT_ID"),
		}
	}
	return out
}

// addTenantSecrets puts every secret of cfg, in every wire form, in set.
func addTenantSecrets(set *redact.Set, cfg tenant.Config) {
	secrets, basic := cfg.Secrets()
	set.Add(secrets...)
	for _, b := range basic {
		set.AddBasic(b[0], b[1])
	}
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}

// driverFactory builds the driver of one vendor account (tenant.Builder):
// its fleet-wide rate limiter is per credential, with a fair share per
// customer when customers share the credential; transports count requests
// per vendor; downloads share one credential-free downloader and one zip
// spool budget; every driver masks with, and adds the access tokens it
// fetches to, the process's redact.Set.
type driverFactory struct {
	set    vendorSettings
	redact *redact.Set
	store  *state.Store
	m      *metrics.Metrics
	log    *zap.Logger
	dl     *httpc.Downloader
	spool  *cbc.SpoolBudget

	mu       sync.Mutex
	limiters map[string]*state.RateLimiter
}

func newDriverFactory(cfg *config, store *state.Store, m *metrics.Metrics, log *zap.Logger) *driverFactory {
	dcfg := cfg.download
	dcfg.Wrap = func(rt http.RoundTripper) http.RoundTripper { return m.Transport("download", rt) }
	return &driverFactory{set: cfg.vendors, redact: cfg.secrets, store: store, m: m, log: log, dl: httpc.NewDownloader(dcfg),
		spool: cbc.NewSpoolBudget(cfg.vendors.cbcMaxSpool), limiters: map[string]*state.RateLimiter{}}
}

// limiter returns the fleet-wide limiter of a credential, for customer.
func (f *driverFactory) limiter(vendor, credential, customer string) httpc.Limiter {
	key := vendor + ":" + digest(credential)
	f.mu.Lock()
	l := f.limiters[key]
	if l == nil {
		l = f.store.RateLimiter(key, f.set.rate[vendor], f.set.burst[vendor], f.log)
		l.OnWait = f.m.RateLimitWait(vendor)
		f.limiters[key] = l
	}
	f.mu.Unlock()
	if customer == tenant.Default {
		return l
	}
	return l.ForTenant(digest(customer))
}

func (f *driverFactory) build(customer, kind string, account any) (edr.Driver, error) {
	s := f.set
	log := f.log.With(zap.String("customer", customer))
	switch a := account.(type) {
	case *tenant.CBC:
		return cbc.New(cbc.Config{URL: a.URL, OrgKey: a.OrgKey, APIID: a.APIID, APISecret: a.APISecret,
			UserAgent: s.ua, Limiter: f.limiter("cbc", a.OrgKey+"/"+a.APIID, customer), Downloader: f.dl, Spool: f.spool,
			Transport: f.m.Transport("cbc", apiTransport(s.insecure)), Logger: log, Redact: f.redact})
	case *tenant.CBLR:
		return cblr.New(cblr.Config{URL: a.URL, APIToken: a.APIToken, UserAgent: s.ua,
			Limiter: f.limiter("cblr", a.URL+"/"+a.APIToken, customer), PollInterval: s.cblrPoll,
			Transport: f.m.Transport("cblr", apiTransport(s.insecure)), Logger: log, Redact: f.redact})
	case *tenant.Cytomic:
		return cytomic.New(cytomic.Config{URL: a.URL, TokenURL: a.TokenURL, User: a.User, Password: a.Password,
			ClientID: a.ClientID, ClientSecret: a.ClientSecret, Scope: s.cytomicScope, APIPrefix: s.cytomicPrefix,
			ClientsField: s.cytomicField, TTLUnit: s.cytomicTTLUnit, ClientIDs: a.ClientIDs, Round: s.cytomicRound, TTL: s.cytomicTTL,
			UserAgent: s.ua, Limiter: f.limiter("cytomic", a.URL+"/"+a.User, customer), Downloader: f.dl,
			Transport: f.m.Transport("cytomic", apiTransport(s.insecure)), Logger: log, Redact: f.redact})
	case *tenant.Sophos:
		return sophos.New(sophos.Config{URL: a.URL, AuthURL: a.AuthURL, ClientID: a.ClientID, ClientSecret: a.ClientSecret,
			TenantID: a.TenantID, PollEvery: s.sophosPoll, Window: s.sophosWindow, MaxPages: s.sophosMaxPages,
			MaxResultBytes: s.sophosMaxBytes, UserAgent: s.ua, Limiter: f.limiter("sophos", a.ClientID, customer),
			Transport: f.m.Transport("sophos", apiTransport(s.insecure)), Redact: f.redact})
	}
	return nil, errors.New("unknown vendor account")
}

// newRegistry builds the drivers of every configured account.
func newRegistry(cfg *config, store *state.Store, m *metrics.Metrics, log *zap.Logger) (*tenant.Registry, error) {
	f := newDriverFactory(cfg, store, m, log)
	reg := tenant.NewRegistry(f.build)
	if err := reg.Apply(cfg.tenants); err != nil {
		return nil, err
	}
	for _, c := range cfg.tenants.Customers() {
		var kinds []string
		cfg.tenants[c].Each(func(kind string, _ any) { kinds = append(kinds, kind) })
		log.Info("vendor accounts configured", zap.String("customer", c), zap.Strings("tasks", kinds))
	}
	return reg, nil
}
