package sophos

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// fetchToken runs the client-credentials grant for the driver's
// vendorhttp.TokenSource (which keeps the token, replaces it shortly before
// it expires, and once when a call is refused with a token it did not fetch
// for that call). The credentials go in the form body, as Sophos documents;
// when the server answers 401 to that, it is asked once more with HTTP Basic
// client authentication (RFC 6749 §2.3.1), which some OAuth servers require.
//
// A refusal keeps of the identity service's answer only the status, its
// errorCode and trackingId (d.identity): whatever else it says may quote the
// request, and the request carries the client secret (in the form, or base64
// in the Authorization header). The identity service answers 400
// invalid_client / 401 for a wrong ID or secret: nothing a retry can fix.
func (d *Driver) fetchToken(ctx context.Context) (vendorhttp.Token, error) {
	resp, err := d.tokenRequest(ctx, false)
	if err == nil && resp.Status == http.StatusUnauthorized {
		resp, err = d.tokenRequest(ctx, true)
	}
	if err != nil {
		return vendorhttp.Token{}, err
	}
	if resp.Status < 200 || resp.Status >= 300 {
		return vendorhttp.Token{}, d.identity.Error(vendorhttp.Call{Op: "token"}, resp)
	}
	t, err := decodeToken(resp.Body)
	if err != nil {
		return vendorhttp.Token{}, d.identity.Malformed(vendorhttp.Call{Op: "token", What: "the Sophos identity service"}, resp.Status, err)
	}
	return vendorhttp.Token{Value: t.access, TTL: t.ttl}, nil
}

// tokenRequest sends one token request: the credentials in the form body,
// or with basic in an Authorization: Basic header (each part form-encoded,
// as RFC 6749 §2.3.1 asks) and not in the body.
func (d *Driver) tokenRequest(ctx context.Context, basic bool) (*httpc.Response, error) {
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"token"}}
	if !basic {
		form.Set("client_id", d.cfg.ClientID)
		form.Set("client_secret", d.cfg.ClientSecret)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, &edr.Error{Vendor: vendor, Op: "token", Msg: "cannot build the token request"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(d.cfg.ClientID), url.QueryEscape(d.cfg.ClientSecret))
	}
	resp, err := d.auth.Do(req)
	if err != nil {
		return nil, d.identity.NoAnswer(ctx, "token", err)
	}
	return resp, nil
}
