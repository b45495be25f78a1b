// Package tenant maps SampleDB customers to their own vendor accounts, so
// that a job is hunted only in the accounts of the customer who submitted
// it: a Carbon Black Cloud org, a CB EDR server, Cytomic client IDs, a
// Sophos tenant.
//
// A Config comes from a tenants file (TENANTS_FILE, YAML or JSON):
//
//	tenants:
//	  acme:                              # submission.customer, exactly
//	    cbc:     {url: https://defense.conferdeploy.net, orgKey: ACME01, apiID: KEY1, apiSecretFile: acme-cbc.secret}
//	    cblr:    {url: https://edr.acme.example, apiTokenFile: acme-cblr.token}
//	    cytomic: {user: soc@acme.example, passwordFile: acme-cytomic.pw, clientIDs: ["1234"]}
//	    sophos:  {clientID: 0c9e…, clientSecretFile: acme-sophos.secret, tenantID: 5f1d…}
//	  "*":                               # optional: customers not listed
//	    sophos:  {…}
//
// Secrets are never written in the file: every one is a *File reference (a
// path, relative to the tenants file's directory), so the file can live in
// a ConfigMap and the secrets in a Secret. A customer without an entry uses
// the "*" entry when there is one, and otherwise has no accounts at all:
// its jobs fail with a clear reason, never borrowing another customer's.
// Without a tenants file, the single-account environment variables are the
// "*" entry of a single-customer deployment.
//
// A Registry holds the drivers built for a Config and swaps them when the
// file changes (Reloader): accounts whose settings are unchanged keep their
// drivers; replaced ones are closed once their in-flight calls end.
package tenant

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/analysisfleet/analysisfleet/edr"
)

// Default is the entry of customers the file does not list.
const Default = "*"

// MaxFileBytes bounds a tenants file and each secret file.
const MaxFileBytes = 4 << 20

// CBC is a Carbon Black Cloud account: an org and an API key.
type CBC struct {
	URL           string `yaml:"url" json:"url"`
	OrgKey        string `yaml:"orgKey" json:"orgKey"`
	APIID         string `yaml:"apiID" json:"apiID"`
	APISecretFile string `yaml:"apiSecretFile" json:"apiSecretFile"`
	APISecret     string `yaml:"-" json:"-"`
}

// CBLR is a CB EDR server and its API token (Live Response).
type CBLR struct {
	URL          string `yaml:"url" json:"url"`
	APITokenFile string `yaml:"apiTokenFile" json:"apiTokenFile"`
	APIToken     string `yaml:"-" json:"-"`
}

// Cytomic is a Cytomic Orion user and the customer's client IDs. URL and
// TokenURL default to Cytomic's; ClientID/ClientSecretFile are the OAuth
// client's Basic credentials.
type Cytomic struct {
	URL              string   `yaml:"url" json:"url,omitempty"`
	TokenURL         string   `yaml:"tokenURL" json:"tokenURL,omitempty"`
	User             string   `yaml:"user" json:"user"`
	PasswordFile     string   `yaml:"passwordFile" json:"passwordFile"`
	ClientID         string   `yaml:"clientID" json:"clientID,omitempty"`
	ClientSecretFile string   `yaml:"clientSecretFile" json:"clientSecretFile,omitempty"`
	ClientIDs        []string `yaml:"clientIDs" json:"clientIDs"`
	Password         string   `yaml:"-" json:"-"`
	ClientSecret     string   `yaml:"-" json:"-"`
}

// Sophos is a Sophos Central credential and the customer's tenant. A
// partner credential serves several tenants; URL and TenantID may be left
// out for a tenant credential (learnt from whoami).
type Sophos struct {
	URL              string `yaml:"url" json:"url,omitempty"`
	AuthURL          string `yaml:"authURL" json:"authURL,omitempty"`
	ClientID         string `yaml:"clientID" json:"clientID"`
	ClientSecretFile string `yaml:"clientSecretFile" json:"clientSecretFile"`
	TenantID         string `yaml:"tenantID" json:"tenantID,omitempty"`
	ClientSecret     string `yaml:"-" json:"-"`
}

// Accounts are one customer's vendor accounts; a nil vendor is not
// configured for the customer (its tasks are not planned).
type Accounts struct {
	CBC     *CBC     `yaml:"cbc" json:"cbc,omitempty"`
	CBLR    *CBLR    `yaml:"cblr" json:"cblr,omitempty"`
	Cytomic *Cytomic `yaml:"cytomic" json:"cytomic,omitempty"`
	Sophos  *Sophos  `yaml:"sophos" json:"sophos,omitempty"`
}

// Each calls fn for every configured vendor account, by task kind, in a
// fixed order.
func (a Accounts) Each(fn func(kind string, account any)) {
	if a.CBC != nil {
		fn(edr.KindCBCEventExport, a.CBC)
	}
	if a.CBLR != nil {
		fn(edr.KindCBLRTriage, a.CBLR)
	}
	if a.Cytomic != nil {
		fn(edr.KindCytomicOSQuery, a.Cytomic)
	}
	if a.Sophos != nil {
		fn(edr.KindSophosXDR, a.Sophos)
	}
}

// Empty reports whether no vendor is configured.
func (a Accounts) Empty() bool {
	n := 0
	a.Each(func(string, any) { n++ })
	return n == 0
}

// Config maps customers to their accounts; Default holds the accounts of
// customers not listed.
type Config map[string]Accounts

// Customers returns the customers, sorted (Default included when present).
func (c Config) Customers() []string {
	return slices.Sorted(maps.Keys(c))
}

// Secrets returns every secret the config holds, and the HTTP Basic
// (user, password) pairs some vendors send, for the process's redact.Set.
func (c Config) Secrets() (secrets []string, basic [][2]string) {
	for _, a := range c {
		if a.CBC != nil {
			secrets = append(secrets, a.CBC.APISecret, a.CBC.APISecret+"/"+a.CBC.APIID)
		}
		if a.CBLR != nil {
			secrets = append(secrets, a.CBLR.APIToken)
		}
		if a.Cytomic != nil {
			secrets = append(secrets, a.Cytomic.Password, a.Cytomic.ClientSecret)
			basic = append(basic, [2]string{a.Cytomic.ClientID, a.Cytomic.ClientSecret})
		}
		if a.Sophos != nil {
			secrets = append(secrets, a.Sophos.ClientSecret)
			basic = append(basic, [2]string{a.Sophos.ClientID, a.Sophos.ClientSecret})
		}
	}
	return secrets, basic
}

// URLCheck validates a service URL (https, not a local address unless the
// deployment allows it); cmd/worker passes the same check the environment's
// URLs get.
type URLCheck func(url string) error

// file is the on-disk shape.
type file struct {
	Tenants map[string]Accounts `yaml:"tenants"`
}

var customerRe = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,256}$`)

// Load reads and validates a tenants file, resolving every secret file
// (relative paths from the file's directory). It returns every problem
// found, each naming the customer and the field, not just the first. The
// digest changes whenever the file or any secret it names changes.
func Load(path string, check URLCheck) (cfg Config, digest string, errs []error) {
	raw, err := readCapped(path)
	if err != nil {
		return nil, "", []error{fmt.Errorf("tenants file: %w", err)}
	}
	h := sha256.New()
	h.Write(raw)
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, "", []error{fmt.Errorf("tenants file: %s", yamlError(err))}
	}
	if len(f.Tenants) == 0 {
		return nil, "", []error{errors.New("tenants file: no tenants (want a top-level \"tenants\" map of customer → accounts)")}
	}
	dir := filepath.Dir(path)
	secret := func(where, field, ref string, required bool) string {
		if ref == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s: %s is required (a path to the file holding the secret)", where, field))
			}
			return ""
		}
		p := ref
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := readCapped(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", where, field, err))
			return ""
		}
		h.Write([]byte{0})
		h.Write(b)
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			errs = append(errs, fmt.Errorf("%s: %s: the secret file is empty", where, field))
		}
		return s
	}
	need := func(where, field, v string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s: %s is required", where, field))
		}
	}
	url := func(where, field, v string, required bool) {
		if v == "" {
			if required {
				errs = append(errs, fmt.Errorf("%s: %s is required", where, field))
			}
			return
		}
		if err := check(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", where, field, err))
		}
	}
	cfg = Config{}
	folded := map[string]string{}
	for _, customer := range sortedKeys(f.Tenants) {
		a := f.Tenants[customer]
		if !customerRe.MatchString(customer) {
			errs = append(errs, fmt.Errorf("tenant %q: a customer is 1 to 256 printable characters", customer))
			continue
		}
		if other, dup := folded[strings.ToLower(customer)]; dup {
			errs = append(errs, fmt.Errorf("tenant %q: differs from %q only in case; customers are matched exactly, so one of them is a mistake", customer, other))
		}
		folded[strings.ToLower(customer)] = customer
		if a.Empty() {
			errs = append(errs, fmt.Errorf("tenant %q: no vendor account (cbc, cblr, cytomic or sophos)", customer))
			continue
		}
		w := func(v string) string { return fmt.Sprintf("tenant %q: %s", customer, v) }
		if c := a.CBC; c != nil {
			url(w("cbc"), "url", c.URL, true)
			need(w("cbc"), "orgKey", c.OrgKey)
			need(w("cbc"), "apiID", c.APIID)
			c.APISecret = secret(w("cbc"), "apiSecretFile", c.APISecretFile, true)
		}
		if c := a.CBLR; c != nil {
			url(w("cblr"), "url", c.URL, true)
			c.APIToken = secret(w("cblr"), "apiTokenFile", c.APITokenFile, true)
		}
		if c := a.Cytomic; c != nil {
			url(w("cytomic"), "url", c.URL, false)
			url(w("cytomic"), "tokenURL", c.TokenURL, false)
			need(w("cytomic"), "user", c.User)
			c.Password = secret(w("cytomic"), "passwordFile", c.PasswordFile, true)
			if (c.ClientID == "") != (c.ClientSecretFile == "") {
				errs = append(errs, fmt.Errorf("%s: set clientID and clientSecretFile together", w("cytomic")))
			}
			c.ClientSecret = secret(w("cytomic"), "clientSecretFile", c.ClientSecretFile, false)
			if len(c.ClientIDs) == 0 {
				errs = append(errs, fmt.Errorf("%s: clientIDs is required (the customer's Cytomic client IDs)", w("cytomic")))
			}
		}
		if c := a.Sophos; c != nil {
			url(w("sophos"), "url", c.URL, false)
			url(w("sophos"), "authURL", c.AuthURL, false)
			need(w("sophos"), "clientID", c.ClientID)
			c.ClientSecret = secret(w("sophos"), "clientSecretFile", c.ClientSecretFile, true)
		}
		cfg[customer] = a
	}
	if len(errs) > 0 {
		return nil, "", errs
	}
	return cfg, hex.EncodeToString(h.Sum(nil)), nil
}

func readCapped(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("cannot read %s: %w", path, pe.Err)
		}
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxFileBytes)
	}
	return b, nil
}

func yamlError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "yaml: ")
	if len(s) > 500 {
		s = s[:500] + "…"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
