package sophos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// Who-am-I, for a credential whose tenant or data region is not configured.
const (
	// DefaultGlobalURL is Sophos Central's global API host, where whoami
	// answers.
	DefaultGlobalURL = "https://api.central.sophos.com"
	// WhoamiPath is appended to Config.GlobalURL.
	WhoamiPath = "/whoami/v1"
)

// tenancy is where data-region calls go and which tenant they name.
type tenancy struct {
	base, tenant string
}

// tenancy returns the configured tenant and data region, asking whoami
// (once per process, with tok) for what is not configured, as Sophos's own
// scripts, its Postman collection and SEKOIA's connector do:
// {"id","idType","apiHosts":{"global","dataRegion"}}. Only a tenant
// credential names its tenant and region so; a partner or organization
// credential must be configured with both.
func (d *Driver) tenancy(ctx context.Context, tok string) (tenancy, error) {
	if t := d.knownTenancy(); t.base != "" && t.tenant != "" {
		return t, nil
	}
	select {
	case d.whoamiSem <- struct{}{}:
	case <-ctx.Done():
		return tenancy{}, ctx.Err()
	}
	defer func() { <-d.whoamiSem }()
	if t := d.knownTenancy(); t.base != "" && t.tenant != "" { // another caller asked meanwhile
		return t, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.globalURL+WhoamiPath, nil)
	if err != nil {
		return tenancy{}, &edr.Error{Vendor: vendor, Op: "whoami", Msg: "cannot build the whoami request", Err: err}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	resp, err := d.api.Do(req)
	if err != nil {
		return tenancy{}, d.answers.NoAnswer(ctx, "whoami", err)
	}
	if resp.Status < 200 || resp.Status >= 300 {
		return tenancy{}, d.answers.Error(vendorhttp.Call{Op: "whoami", Msg: "Sophos would not say which tenant the credential belongs to"}, resp)
	}
	who, err := decodeWhoami(resp.Body)
	if err != nil {
		return tenancy{}, d.answers.Malformed(vendorhttp.Call{Op: "whoami"}, resp.Status, err)
	}
	conf := func(msg string) error {
		return &edr.Error{Vendor: vendor, Op: "whoami", Msg: msg + " (set SOPHOS_TENANT_ID and SOPHOS_URL)"}
	}
	if !strings.EqualFold(who.IDType, "tenant") {
		return tenancy{}, conf(fmt.Sprintf("the credential is a %s credential, not a tenant's: it cannot tell which tenant to search", truncate(who.IDType, 20)))
	}
	t := d.knownTenancy()
	switch {
	case t.tenant == "":
		t.tenant = who.ID
	case t.tenant != who.ID:
		return tenancy{}, conf("the credential belongs to another tenant than the one configured")
	}
	if t.base == "" {
		base, err := d.regionURL(who.DataRegion)
		if err != nil {
			return tenancy{}, conf(err.Error())
		}
		t.base = base
	}
	d.whoMu.Lock()
	d.ten = t
	d.whoMu.Unlock()
	return t, nil
}

func (d *Driver) knownTenancy() tenancy {
	d.whoMu.Lock()
	defer d.whoMu.Unlock()
	return d.ten
}

// regionURL checks the data region whoami named. Sophos's own example
// answer names it with http://; the bearer token never goes to it in clear
// text unless the global URL itself is http (a simulator).
func (d *Driver) regionURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.RawQuery != "" {
		return "", fmt.Errorf("whoami names no usable data region")
	}
	if u.Scheme == "http" && !strings.HasPrefix(d.globalURL, "http://") {
		u.Scheme = "https"
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.EscapedPath(), "/"), nil
}

// whoami is a decoded whoami answer.
type whoami struct {
	ID, IDType, DataRegion string
}

func decodeWhoami(body []byte) (whoami, error) {
	var raw struct {
		ID       json.RawMessage `json:"id"`
		IDType   json.RawMessage `json:"idType"`
		APIHosts *struct {
			DataRegion json.RawMessage `json:"dataRegion"`
		} `json:"apiHosts"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return whoami{}, err
	}
	var out whoami
	out.ID, _ = flexString(raw.ID)
	out.IDType, _ = flexString(raw.IDType)
	if raw.APIHosts != nil {
		out.DataRegion, _ = flexString(raw.APIHosts.DataRegion)
	}
	if out.ID == "" || len(out.ID) > maxIDLen || strings.ContainsAny(out.ID, "\r\n") || out.IDType == "" {
		return whoami{}, malformed("whoami names no id or idType")
	}
	return out, nil
}
