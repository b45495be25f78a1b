package cytomic

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// maxRefreshMargin bounds how long before its expiry a token is replaced.
const maxRefreshMargin = time.Minute

// tokens holds the current access token and fetches a new one with the OAuth2
// password grant when it is missing, about to expire, or was rejected. One
// fetch runs at a time; concurrent callers wait for it (or for their
// context). Safe for concurrent use.
//
// The request is the public client's: a form with grant_type=password,
// username, password and scope, and the OAuth client authenticated with
// HTTP Basic (client_id:client_secret). The refresh_token the CAS server
// also issues is not used: a new password grant replaces an expired token,
// so nothing but the configuration is needed to re-authenticate after a
// restart.
type tokens struct {
	hc           *httpc.Client
	tokenURL     string
	user         string
	password     string
	clientID     string
	clientSecret string
	scope        string
	maxToken     int
	now          func() time.Time
	log          *zap.Logger

	sem chan struct{} // one holder: guards the fields below and the fetch
	tok string
	gen uint64    // increments with every new token
	exp time.Time // zero: unknown, used until rejected
}

// get returns a valid token and its generation.
func (t *tokens) get(ctx context.Context) (string, uint64, error) {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return "", 0, ctx.Err()
	}
	defer func() { <-t.sem }()
	if t.tok != "" && (t.exp.IsZero() || t.now().Before(t.exp)) {
		return t.tok, t.gen, nil
	}
	tok, life, err := t.fetch(ctx)
	if err != nil {
		return "", 0, err
	}
	t.tok, t.gen = tok, t.gen+1
	t.exp = time.Time{}
	if life > 0 {
		// Refresh shortly before the token runs out: a tenth of its
		// lifetime early, at most a minute.
		t.exp = t.now().Add(life - min(life/10, maxRefreshMargin))
	}
	t.log.Debug("obtained access token", zap.Duration("lifetime", life), zap.Uint64("generation", t.gen))
	return t.tok, t.gen, nil
}

// invalidate drops the token of generation gen (rejected with 401), unless
// it was already replaced.
func (t *tokens) invalidate(ctx context.Context, gen uint64) {
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	if t.gen == gen {
		t.tok = ""
	}
	<-t.sem
}

// basic returns the HTTP Basic credentials of the OAuth client, "" when
// none are configured.
func (t *tokens) basic() string {
	if t.clientID == "" {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(t.clientID + ":" + t.clientSecret))
}

func (t *tokens) fetch(ctx context.Context) (string, time.Duration, error) {
	form := url.Values{
		"grant_type": {"password"},
		"username":   {t.user},
		"password":   {t.password},
		"scope":      {t.scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, edr.Permanent(vendor, "token", "cannot build the token request: check CYTOMIC_TOKEN_URL")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if b := t.basic(); b != "" {
		req.Header.Set("Authorization", "Basic "+b)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return "", 0, edr.Wrap(vendor, "token", err)
	}
	switch {
	case resp.Status == http.StatusBadRequest || resp.Status == http.StatusUnauthorized || resp.Status == http.StatusForbidden:
		// The body is not quoted: an identity provider may echo the
		// request. Only the OAuth error code is kept.
		msg := fmt.Sprintf("the token endpoint refused the credentials (HTTP %d): check CYTOMIC_USER and CYTOMIC_PASSWORD", resp.Status)
		tr, derr := decodeTokenError(resp.Body)
		switch {
		case derr == nil && tr == "invalid_client":
			msg = fmt.Sprintf("the token endpoint refused the OAuth client (HTTP %d): check CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET", resp.Status)
		case t.clientID == "":
			msg += " (no OAuth client credentials are configured: Cytomic's CAS server requires CYTOMIC_CLIENT_ID and CYTOMIC_CLIENT_SECRET)"
		}
		if derr == nil && tr != "" {
			msg += " (OAuth error " + tr + ")"
		}
		return "", 0, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status, Msg: msg}
	case resp.Status >= 300 && resp.Status < 400:
		return "", 0, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status,
			Msg: "the token endpoint answered with a redirect, which is not followed with credentials: check CYTOMIC_TOKEN_URL"}
	case resp.Status >= 400:
		return "", 0, statusError("token", resp, t.password, t.clientSecret, t.basic())
	}
	if err := checkTokens(resp.Body, t.maxToken); err != nil {
		return "", 0, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status, Err: err}
	}
	tr, err := decodeToken(resp.Body)
	if err != nil {
		return "", 0, &edr.Error{Vendor: vendor, Op: "token", Status: resp.Status, Err: err}
	}
	return tr.AccessToken, time.Duration(tr.ExpiresIn) * time.Second, nil
}

// decodeTokenError returns the OAuth "error" code of an error body, clipped.
func decodeTokenError(b []byte) (string, error) {
	var t tokenResponse
	if err := json.Unmarshal(b, &t); err != nil {
		return "", err
	}
	return clip(string(t.Error), 40), nil
}
