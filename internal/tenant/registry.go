package tenant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/analysisfleet/analysisfleet/edr"
)

// ErrNoAccounts is returned (wrapped in *NoAccountsError) for a customer
// with no entry and no Default entry.
var ErrNoAccounts = errors.New("no vendor accounts for this customer")

// NoAccountsError names the customer without accounts.
type NoAccountsError struct{ Customer string }

func (e *NoAccountsError) Error() string {
	return fmt.Sprintf("customer %q has no vendor accounts (no entry in TENANTS_FILE and no \"*\" entry); the fleet hunts only in a customer's own accounts", e.Customer)
}

func (e *NoAccountsError) Unwrap() error { return ErrNoAccounts }

// Builder makes the driver of one vendor account for a customer. account is
// a *CBC, *CBLR, *Cytomic or *Sophos (secrets filled in).
type Builder func(customer, kind string, account any) (edr.Driver, error)

// Registry resolves a customer's drivers. It is safe for concurrent use.
type Registry struct {
	build Builder

	mu      sync.RWMutex
	tenants map[string]map[string]edr.Driver // customer → kind → driver
	slots   map[string]*slot                 // account fingerprint → driver
	closed  bool

	closing sync.WaitGroup
}

// NewRegistry returns an empty registry building drivers with build.
func NewRegistry(build Builder) *Registry {
	return &Registry{build: build, tenants: map[string]map[string]edr.Driver{}, slots: map[string]*slot{}}
}

// Drivers returns customer's drivers by task kind (the Default entry's for a
// customer not listed), or a *NoAccountsError. The map is shared: read it,
// never change it. Resolve again for every call: after a reload the map of
// a customer changes, and a replaced driver answers retryable errors.
func (r *Registry) Drivers(customer string) (map[string]edr.Driver, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if d, ok := r.tenants[customer]; ok {
		return d, nil
	}
	if d, ok := r.tenants[Default]; ok {
		return d, nil
	}
	return nil, &NoAccountsError{Customer: customer}
}

// Kinds returns every task kind some customer has an account for.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	seen := map[string]bool{}
	var out []string
	for _, ds := range r.tenants {
		for k := range ds {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// Apply makes cfg current. Drivers of accounts whose settings (secrets
// included) did not change are kept; new ones are built first — if any
// build fails nothing changes and every error is returned — and replaced
// ones are closed once their in-flight calls have ended.
func (r *Registry) Apply(cfg Config) error {
	type want struct{ customer, kind, fp string }
	var wants []want
	built := map[string]*slot{}
	var errs []error
	r.mu.RLock()
	have := r.slots
	r.mu.RUnlock()
	for _, customer := range cfg.Customers() {
		cfg[customer].Each(func(kind string, account any) {
			fp := fingerprint(kind, account)
			wants = append(wants, want{customer, kind, fp})
			if have[fp] != nil || built[fp] != nil {
				return
			}
			d, err := r.build(customer, kind, account)
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %q: %s: %w", customer, kind, err))
				return
			}
			built[fp] = &slot{d: d}
		})
	}
	if len(errs) > 0 {
		for _, s := range built {
			s.close()
		}
		return errors.Join(errs...)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		for _, s := range built {
			s.close()
		}
		return errors.New("tenant: registry closed")
	}
	slots := map[string]*slot{}
	tenants := map[string]map[string]edr.Driver{}
	for _, w := range wants {
		s := r.slots[w.fp]
		if s == nil {
			s = built[w.fp]
		}
		slots[w.fp] = s
		if tenants[w.customer] == nil {
			tenants[w.customer] = map[string]edr.Driver{}
		}
		tenants[w.customer][w.kind] = &guarded{s: s, kind: w.kind}
	}
	var gone []*slot
	for fp, s := range r.slots {
		if slots[fp] == nil {
			gone = append(gone, s)
		}
	}
	r.slots, r.tenants = slots, tenants
	r.mu.Unlock()
	for _, s := range gone {
		r.closing.Add(1)
		go func() {
			defer r.closing.Done()
			s.close()
		}()
	}
	return nil
}

// Close closes every driver (after in-flight calls end) and waits.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	slots := r.slots
	r.slots, r.tenants = map[string]*slot{}, map[string]map[string]edr.Driver{}
	r.mu.Unlock()
	for _, s := range slots {
		s.close()
	}
	r.closing.Wait()
}

// fingerprint identifies an account by everything that makes its driver:
// two customers with identical settings share one driver, and a changed
// secret builds a new one.
func fingerprint(kind string, account any) string {
	b, _ := json.Marshal(account)
	h := sha256.New()
	h.Write([]byte(kind))
	h.Write(b)
	// Secrets are json:"-": add them explicitly.
	for _, s := range secretsOf(account) {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func secretsOf(account any) []string {
	switch a := account.(type) {
	case *CBC:
		return []string{a.APISecret}
	case *CBLR:
		return []string{a.APIToken}
	case *Cytomic:
		return []string{a.Password, a.ClientSecret}
	case *Sophos:
		return []string{a.ClientSecret}
	}
	return nil
}

// slot is one built driver; calls hold its read lock, closing takes the
// write lock, so a driver is closed only once no call is running on it.
type slot struct {
	mu     sync.RWMutex
	d      edr.Driver
	closed bool
}

func (s *slot) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.d.Close()
}

// errReloaded answers a call on a replaced driver: the caller resolves the
// customer's drivers again and retries.
func errReloaded(kind string) error {
	return &edr.Error{Vendor: kind, Op: "call", Retryable: true, Msg: "the vendor account was reloaded; retrying on its new driver"}
}

// guarded is the edr.Driver a Registry hands out for a slot.
type guarded struct {
	s    *slot
	kind string
}

func (g *guarded) Kind() string { return g.kind }

// Close does nothing: the Registry closes the drivers it built (Apply,
// Close), once no call is running on them.
func (g *guarded) Close() {}

func (g *guarded) Start(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	return call(g, func(d edr.Driver) (edr.Ref, error) { return d.Start(ctx, t, in) })
}

func (g *guarded) Find(ctx context.Context, t edr.Target, in edr.Intent) (edr.Ref, error) {
	return call(g, func(d edr.Driver) (edr.Ref, error) { return d.Find(ctx, t, in) })
}

func (g *guarded) Poll(ctx context.Context, ref edr.Ref) (edr.Status, error) {
	return call(g, func(d edr.Driver) (edr.Status, error) { return d.Poll(ctx, ref) })
}

func (g *guarded) Collect(ctx context.Context, ref edr.Ref) (edr.Result, error) {
	return call(g, func(d edr.Driver) (edr.Result, error) { return d.Collect(ctx, ref) })
}

func (g *guarded) Cancel(ctx context.Context, ref edr.Ref) error {
	_, err := call(g, func(d edr.Driver) (struct{}, error) { return struct{}{}, d.Cancel(ctx, ref) })
	return err
}

func call[T any](g *guarded, fn func(edr.Driver) (T, error)) (T, error) {
	g.s.mu.RLock()
	defer g.s.mu.RUnlock()
	if g.s.closed {
		var zero T
		return zero, errReloaded(g.kind)
	}
	return fn(g.s.d)
}
