package vendorhttp

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/analysisfleet/analysisfleet/internal/redact"
)

// MaxRefreshMargin bounds how long before its expiry a token is replaced:
// a token is replaced a tenth of its lifetime early, at most this much, so
// it is never sent in its last seconds.
const MaxRefreshMargin = time.Minute

// Token is an access token a vendor's grant issued.
type Token struct {
	Value string
	// TTL is how long the token may be used from when it was fetched; 0
	// means until the vendor refuses it.
	TTL time.Duration
}

// TokenConfig configures a TokenSource.
type TokenConfig struct {
	// Fetch runs the vendor's grant (client credentials, password, …).
	// Its errors are returned to the callers of Do as they are. Required.
	Fetch func(ctx context.Context) (Token, error)
	// RetryFresh makes Do fetch another token and send once more also when
	// the refused token was fetched for this very call. Off: such a refusal
	// means the credentials themselves are refused, and Do stops there.
	RetryFresh bool
	// Now is the clock expiry is judged by. Default time.Now.
	Now func() time.Time
	// Redact learns every token fetched, so no error text shows one.
	Redact *redact.Set
	// Logger is optional.
	Logger *zap.Logger
}

// TokenSource keeps an access token: it fetches one when there is none,
// replaces it shortly before it expires (MaxRefreshMargin), and once more
// when a call says it was refused (a 401). One fetch runs at a time;
// concurrent callers wait for it (or for their context) and share its
// token. Safe for concurrent use.
type TokenSource struct {
	cfg TokenConfig
	sem chan struct{} // held while fetching

	mu        sync.Mutex
	tok       string
	refreshAt time.Time // zero: used until refused
}

// NewTokenSource returns a TokenSource for cfg. It fetches nothing yet.
func NewTokenSource(cfg TokenConfig) *TokenSource {
	if cfg.Fetch == nil {
		panic("vendorhttp: TokenConfig.Fetch is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &TokenSource{cfg: cfg, sem: make(chan struct{}, 1)}
}

// ErrNoToken is returned when Fetch answered no error and no token.
var ErrNoToken = errors.New("the token endpoint issued no access token")

// Do calls send with a token. When send reports the token refused, Do
// forgets it, fetches another and calls send once more — unless the refused
// token was fetched for this very call and TokenConfig.RetryFresh is off.
// It returns what the last send returned: refused true tells the caller to
// map that answer as refused credentials.
func (ts *TokenSource) Do(ctx context.Context, send func(token string) (refused bool, err error)) (refused bool, err error) {
	tok, fresh, err := ts.get(ctx)
	if err != nil {
		return false, err
	}
	if refused, err = send(tok); err != nil || !refused {
		return refused, err
	}
	if fresh && !ts.cfg.RetryFresh {
		return true, nil
	}
	ts.cfg.Logger.Info("access token refused; fetching another")
	ts.invalidate(tok)
	if tok, _, err = ts.get(ctx); err != nil {
		return false, err
	}
	return send(tok)
}

// cached returns the token if it is still good to use.
func (ts *TokenSource) cached() string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok != "" && (ts.refreshAt.IsZero() || ts.cfg.Now().Before(ts.refreshAt)) {
		return ts.tok
	}
	return ""
}

// get returns a usable token; fresh reports that this call fetched it.
func (ts *TokenSource) get(ctx context.Context) (tok string, fresh bool, err error) {
	if tok := ts.cached(); tok != "" {
		return tok, false, nil
	}
	select {
	case ts.sem <- struct{}{}:
	case <-ctx.Done():
		return "", false, ctx.Err()
	}
	defer func() { <-ts.sem }()
	if tok := ts.cached(); tok != "" { // another caller fetched one meanwhile
		return tok, false, nil
	}
	t, err := ts.cfg.Fetch(ctx)
	if err != nil {
		return "", false, err
	}
	if t.Value == "" {
		return "", false, ErrNoToken
	}
	ts.cfg.Redact.Add(t.Value)
	var refreshAt time.Time
	if t.TTL > 0 {
		refreshAt = ts.cfg.Now().Add(t.TTL - min(t.TTL/10, MaxRefreshMargin))
	}
	ts.mu.Lock()
	ts.tok, ts.refreshAt = t.Value, refreshAt
	ts.mu.Unlock()
	ts.cfg.Logger.Debug("obtained access token", zap.Duration("lifetime", t.TTL))
	return t.Value, true, nil
}

// invalidate forgets tok if it is still the kept token.
func (ts *TokenSource) invalidate(tok string) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.tok == tok {
		ts.tok, ts.refreshAt = "", time.Time{}
	}
}
