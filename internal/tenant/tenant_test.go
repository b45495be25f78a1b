package tenant

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func httpsOnly(u string) error {
	if !strings.HasPrefix(u, "https://") {
		return errors.New("must be https://")
	}
	return nil
}

// write puts files (name → content) in a fresh directory and returns the
// path of "tenants.yaml" there.
func write(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}
	return filepath.Join(dir, "tenants.yaml")
}

const goodFile = `
tenants:
  acme:
    cbc: {url: "https://defense.conferdeploy.net", orgKey: ACME01, apiID: KEY1, apiSecretFile: acme-cbc.secret}
    sophos: {clientID: acme-client, clientSecretFile: acme-sophos.secret, tenantID: t-acme}
  globex:
    cblr: {url: "https://edr.globex.example", apiTokenFile: /dev/null}
`

func TestLoadReadsSecretsByReference(t *testing.T) {
	t.Parallel()
	path := write(t, map[string]string{
		"tenants.yaml":       strings.Replace(goodFile, "/dev/null", "globex.token", 1),
		"acme-cbc.secret":    "cbc-secret-acme\n",
		"acme-sophos.secret": "sophos-secret-acme",
		"globex.token":       "cblr-token-globex",
	})
	cfg, digest, errs := Load(path, httpsOnly)
	require.Empty(t, errs)
	require.NotEmpty(t, digest)
	require.Equal(t, []string{"acme", "globex"}, cfg.Customers())
	require.Equal(t, "cbc-secret-acme", cfg["acme"].CBC.APISecret, "trailing newline trimmed")
	require.Equal(t, "sophos-secret-acme", cfg["acme"].Sophos.ClientSecret)
	require.Equal(t, "cblr-token-globex", cfg["globex"].CBLR.APIToken)
	secrets, basic := cfg.Secrets()
	require.Contains(t, secrets, "cbc-secret-acme/KEY1", "the CB Cloud token as sent")
	require.Contains(t, basic, [2]string{"acme-client", "sophos-secret-acme"})

	// Rotating a secret changes the digest (the reloader rebuilds).
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "acme-cbc.secret"), []byte("rotated"), 0o600))
	_, digest2, errs := Load(path, httpsOnly)
	require.Empty(t, errs)
	require.NotEqual(t, digest, digest2)
}

func TestLoadListsEveryProblem(t *testing.T) {
	t.Parallel()
	path := write(t, map[string]string{"tenants.yaml": `
tenants:
  acme:
    cbc: {url: "http://plain.example", orgKey: "", apiID: KEY1}
    cytomic: {user: soc, passwordFile: missing.pw, clientID: only-half}
  ACME:
    sophos: {clientSecretFile: empty.secret}
  nobody: {}
`, "empty.secret": "\n"})
	_, _, errs := Load(path, httpsOnly)
	var all []string
	for _, e := range errs {
		all = append(all, e.Error())
	}
	text := strings.Join(all, "\n")
	for _, want := range []string{
		`tenant "acme": cbc: url: must be https://`,
		`tenant "acme": cbc: orgKey is required`,
		`tenant "acme": cbc: apiSecretFile is required`,
		`tenant "acme": cytomic: passwordFile: cannot read`,
		`tenant "acme": cytomic: set clientID and clientSecretFile together`,
		`tenant "acme": cytomic: clientIDs is required`,
		`tenant "acme": differs from "ACME" only in case`,
		`tenant "ACME": sophos: clientID is required`,
		`tenant "ACME": sophos: clientSecretFile: the secret file is empty`,
		`tenant "nobody": no vendor account`,
	} {
		require.Contains(t, text, want)
	}
	require.GreaterOrEqual(t, len(errs), 10, "every problem, not the first")
}

func TestLoadRefusesUnknownFieldsAndInlineSecrets(t *testing.T) {
	t.Parallel()
	path := write(t, map[string]string{"tenants.yaml": `
tenants:
  acme:
    cbc: {url: "https://x.example", orgKey: O, apiID: I, apiSecret: "inline-secret"}
`})
	_, _, errs := Load(path, httpsOnly)
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Error(), "apiSecret")
	require.NotContains(t, errs[0].Error(), "inline-secret")

	_, _, errs = Load(filepath.Join(t.TempDir(), "absent.yaml"), httpsOnly)
	require.Len(t, errs, 1)
	_, _, errs = Load(write(t, map[string]string{"tenants.yaml": "tenants: {}"}), httpsOnly)
	require.Len(t, errs, 1)
	require.Contains(t, errs[0].Error(), "no tenants")
}

func TestLoadAcceptsJSON(t *testing.T) {
	t.Parallel()
	path := write(t, map[string]string{
		"tenants.yaml": `{"tenants": {"*": {"cblr": {"url": "https://edr.example", "apiTokenFile": "t"}}}}`,
		"t":            "token-json",
	})
	cfg, _, errs := Load(path, httpsOnly)
	require.Empty(t, errs)
	require.Equal(t, "token-json", cfg[Default].CBLR.APIToken)
}

// fakeDriver counts the calls in flight and records whether it was closed.
type fakeDriver struct {
	kind     string
	secret   string
	inflight atomic.Int32
	entered  chan struct{} // told when a call has entered (when set)
	release  chan struct{}
	closed   atomic.Bool
}

func (d *fakeDriver) Kind() string { return d.kind }
func (d *fakeDriver) Start(context.Context, edr.Target, edr.Intent) (edr.Ref, error) {
	if d.closed.Load() {
		return nil, errors.New("closed driver used")
	}
	d.inflight.Add(1)
	defer d.inflight.Add(-1)
	if d.entered != nil {
		d.entered <- struct{}{}
	}
	if d.release != nil {
		<-d.release
	}
	return edr.Ref(`{}`), nil
}
func (d *fakeDriver) Find(context.Context, edr.Target, edr.Intent) (edr.Ref, error) {
	return nil, edr.ErrFindUnsupported
}
func (d *fakeDriver) Poll(context.Context, edr.Ref) (edr.Status, error)    { return edr.Status{}, nil }
func (d *fakeDriver) Collect(context.Context, edr.Ref) (edr.Result, error) { return edr.Result{}, nil }
func (d *fakeDriver) Cancel(context.Context, edr.Ref) error                { return nil }
func (d *fakeDriver) Close()                                               { d.closed.Store(true) }

type builds struct {
	mu      sync.Mutex
	made    []*fakeDriver
	fail    string // a secret whose build fails
	block   chan struct{}
	entered chan struct{}
}

func (b *builds) build(_, kind string, account any) (edr.Driver, error) {
	secret := secretsOf(account)[0]
	if secret == b.fail {
		return nil, errors.New("cannot build")
	}
	d := &fakeDriver{kind: kind, secret: secret, release: b.block, entered: b.entered}
	b.mu.Lock()
	b.made = append(b.made, d)
	b.mu.Unlock()
	return d, nil
}

func cbcAccount(secret string) *CBC {
	return &CBC{URL: "https://x.example", OrgKey: "O", APIID: "I", APISecret: secret}
}

func TestRegistryResolvesOnlyTheCustomersOwnAccounts(t *testing.T) {
	t.Parallel()
	b := &builds{}
	r := NewRegistry(b.build)
	defer r.Close()
	require.NoError(t, r.Apply(Config{
		"acme":   {CBC: cbcAccount("acme-secret")},
		"globex": {CBC: cbcAccount("globex-secret"), CBLR: &CBLR{URL: "https://e.example", APIToken: "tok"}},
	}))
	acme, err := r.Drivers("acme")
	require.NoError(t, err)
	require.Len(t, acme, 1)
	require.Equal(t, "acme-secret", acme[edr.KindCBCEventExport].(*guarded).s.d.(*fakeDriver).secret)
	globex, err := r.Drivers("globex")
	require.NoError(t, err)
	require.Len(t, globex, 2)
	require.Equal(t, "globex-secret", globex[edr.KindCBCEventExport].(*guarded).s.d.(*fakeDriver).secret)

	_, err = r.Drivers("initech")
	var na *NoAccountsError
	require.ErrorAs(t, err, &na, "no entry and no default: no accounts, never another customer's")
	require.ErrorIs(t, err, ErrNoAccounts)
	require.Contains(t, err.Error(), `"initech"`)

	require.NoError(t, r.Apply(Config{"acme": {CBC: cbcAccount("acme-secret")}, Default: {CBC: cbcAccount("shared")}}))
	other, err := r.Drivers("initech")
	require.NoError(t, err)
	require.Equal(t, "shared", other[edr.KindCBCEventExport].(*guarded).s.d.(*fakeDriver).secret)
}

func TestRegistryReloadKeepsUnchangedAndClosesReplacedWhenIdle(t *testing.T) {
	t.Parallel()
	b := &builds{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	r := NewRegistry(b.build)
	defer r.Close()
	require.NoError(t, r.Apply(Config{"acme": {CBC: cbcAccount("v1")}, "globex": {CBC: cbcAccount("g")}}))
	ds, _ := r.Drivers("acme")
	old := ds[edr.KindCBCEventExport]
	oldFake := b.made[0]

	// A call is in flight on acme's driver when its secret rotates.
	started := make(chan error, 1)
	go func() {
		_, err := old.Start(context.Background(), edr.Target{}, edr.Intent{})
		started <- err
	}()
	<-b.entered
	require.NoError(t, r.Apply(Config{"acme": {CBC: cbcAccount("v2")}, "globex": {CBC: cbcAccount("g")}}))
	require.Len(t, b.made, 3, "only the changed account was built again")
	ds, _ = r.Drivers("acme")
	require.NotSame(t, old, ds[edr.KindCBCEventExport])
	require.False(t, oldFake.closed.Load(), "not closed while a call runs on it")

	close(b.block)
	require.NoError(t, <-started)
	r.closing.Wait()
	require.True(t, oldFake.closed.Load(), "closed once idle")
	_, err := old.Start(context.Background(), edr.Target{}, edr.Intent{})
	require.True(t, edr.IsRetryable(err), "a call on a replaced driver is retried on the new one: %v", err)
	require.False(t, b.made[1].closed.Load(), "globex's unchanged driver is kept")
}

func TestRegistryApplyIsAllOrNothing(t *testing.T) {
	t.Parallel()
	b := &builds{fail: "broken"}
	r := NewRegistry(b.build)
	defer r.Close()
	require.NoError(t, r.Apply(Config{"acme": {CBC: cbcAccount("ok")}}))
	err := r.Apply(Config{"acme": {CBC: cbcAccount("ok2")}, "globex": {CBC: cbcAccount("broken")}})
	require.Error(t, err)
	require.Contains(t, err.Error(), `tenant "globex"`)
	ds, err := r.Drivers("acme")
	require.NoError(t, err)
	require.Equal(t, "ok", ds[edr.KindCBCEventExport].(*guarded).s.d.(*fakeDriver).secret, "the previous accounts stay")
	require.True(t, b.made[1].closed.Load(), "what was built for the refused config is closed")
	_, err = r.Drivers("globex")
	require.ErrorIs(t, err, ErrNoAccounts)
}

func TestReloaderAppliesChangesAndKeepsThePreviousOnErrors(t *testing.T) {
	t.Parallel()
	path := write(t, map[string]string{
		"tenants.yaml": "tenants:\n  acme:\n    cblr: {url: \"https://e.example\", apiTokenFile: tok}\n",
		"tok":          "token-1",
	})
	b := &builds{}
	r := NewRegistry(b.build)
	defer r.Close()
	var results []error
	rl := &Reloader{Path: path, Check: httpsOnly, Registry: r, Result: func(err error) { results = append(results, err) }}
	changed, err := rl.ReloadOnce()
	require.NoError(t, err)
	require.True(t, changed)
	changed, err = rl.ReloadOnce()
	require.NoError(t, err)
	require.False(t, changed, "same content: nothing rebuilt")
	require.Len(t, b.made, 1)

	// A bad edit is refused; acme keeps its driver.
	require.NoError(t, os.WriteFile(path, []byte("tenants:\n  acme:\n    cblr: {url: \"http://e.example\"}\n"), 0o600))
	changed, err = rl.ReloadOnce()
	require.Error(t, err)
	require.False(t, changed)
	_, err = rl.ReloadOnce()
	require.Error(t, err)
	require.Len(t, results, 2, "the refusal is reported once, not at every poll")
	ds, err := r.Drivers("acme")
	require.NoError(t, err)
	require.Contains(t, ds, edr.KindCBLRTriage)

	// The token rotates: rebuilt.
	require.NoError(t, os.WriteFile(path, []byte("tenants:\n  acme:\n    cblr: {url: \"https://e.example\", apiTokenFile: tok}\n"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(path), "tok"), []byte("token-2"), 0o600))
	changed, err = rl.ReloadOnce()
	require.NoError(t, err)
	require.True(t, changed)
	require.Len(t, b.made, 2)
	require.NoError(t, results[2])
}
