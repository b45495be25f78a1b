package cytomic

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
	"github.com/analysisfleet/analysisfleet/internal/redact"
)

// passwordGrant fetches access tokens with the OAuth2 password grant, for
// the driver's vendorhttp.TokenSource (which keeps the token, replaces it
// shortly before it expires, and once more when a call is refused with it).
//
// The request is the public client's: a form with grant_type=password,
// username, password and scope, and the OAuth client authenticated with
// HTTP Basic (client_id:client_secret). The refresh_token the CAS server
// also issues is not used: a new password grant replaces an expired token,
// so nothing but the configuration is needed to re-authenticate after a
// restart.
type passwordGrant struct {
	hc           *httpc.Client
	answers      *vendorhttp.API // the token endpoint's
	tokenURL     string
	user         string
	password     string
	clientID     string
	clientSecret string
	scope        string
	maxToken     int
}

// newAuthAPI returns the mapper of the token endpoint's answers. Its body is
// never quoted (an identity provider may echo the request): only the OAuth
// error code is kept, and the hint names the settings to check.
func newAuthAPI(clientID string, red *redact.Set) *vendorhttp.API {
	const refused = "the token endpoint refused the credentials: check CYTOMIC_USER and CYTOMIC_PASSWORD"
	return &vendorhttp.API{
		Vendor: vendor,
		Texts: map[vendorhttp.Class]string{
			vendorhttp.BadRequest: refused, vendorhttp.Credentials: refused, vendorhttp.Forbidden: refused,
			vendorhttp.Redirect: "the token endpoint answered with a redirect, which is not followed with credentials: check CYTOMIC_TOKEN_URL",
			vendorhttp.NotFound: msgNotFound,
		},
		Describe: func(status int, body []byte) vendorhttp.Detail {
			code, _ := decodeTokenError(body)
			d := vendorhttp.Detail{Code: code}
			switch {
			case code == "invalid_client":
				d.Explain = "the token endpoint refused the OAuth client: check CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET"
			case clientID == "" && (status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden):
				d.Msg = "no OAuth client credentials are configured: Cytomic's CAS server requires CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET"
			}
			return d
		},
		Quiet:  true,
		Redact: red,
	}
}

// basic returns the HTTP Basic credentials of the OAuth client, "" when
// none are configured.
func (g *passwordGrant) basic() string {
	if g.clientID == "" {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(g.clientID + ":" + g.clientSecret))
}

// fetch runs the grant (vendorhttp.TokenConfig.Fetch).
func (g *passwordGrant) fetch(ctx context.Context) (vendorhttp.Token, error) {
	form := url.Values{
		"grant_type": {"password"},
		"username":   {g.user},
		"password":   {g.password},
		"scope":      {g.scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return vendorhttp.Token{}, edr.Permanent(vendor, "token", "cannot build the token request: check CYTOMIC_TOKEN_URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if b := g.basic(); b != "" {
		req.Header.Set("Authorization", "Basic "+b)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return vendorhttp.Token{}, g.answers.NoAnswer(ctx, "token", err)
	}
	if resp.Status < 200 || resp.Status >= 300 {
		return vendorhttp.Token{}, g.answers.Error(vendorhttp.Call{Op: "token"}, resp)
	}
	if err := checkTokens(resp.Body, g.maxToken); err != nil {
		return vendorhttp.Token{}, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status, Err: err}
	}
	tr, err := decodeToken(resp.Body)
	if err != nil {
		return vendorhttp.Token{}, g.answers.Malformed(vendorhttp.Call{Op: "token"}, resp.Status, err)
	}
	return vendorhttp.Token{Value: tr.AccessToken, TTL: time.Duration(tr.ExpiresIn) * time.Second}, nil
}

// decodeTokenError returns the OAuth "error" code of an error body, clipped.
func decodeTokenError(b []byte) (string, error) {
	var t tokenResponse
	if err := json.Unmarshal(b, &t); err != nil {
		return "", err
	}
	return clip(string(t.Error), 40), nil
}
