package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/sim/simhttp"
	"github.com/analysisfleet/analysisfleet/sim/simstack"
)

func tenantsEnv(t *testing.T, file string, secrets map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	for name, v := range secrets {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600))
	}
	path := filepath.Join(dir, "tenants.yaml")
	require.NoError(t, os.WriteFile(path, []byte(file), 0o600))
	env := baseEnv()
	for _, k := range []string{"CBC_URL", "CBC_ORG_KEY", "CBC_API_ID", "CBC_API_SECRET"} {
		delete(env, k)
	}
	env["TENANTS_FILE"] = path
	return env
}

func TestConfigTenantsFile(t *testing.T) {
	t.Parallel()
	env := tenantsEnv(t, `
tenants:
  acme:
    cbc: {url: "https://defense.conferdeploy.net", orgKey: ACME01, apiID: KEY1, apiSecretFile: cbc.secret}
  globex:
    sophos: {clientID: globex-client, clientSecretFile: sophos.secret, tenantID: t-globex}
`, map[string]string{"cbc.secret": "acme-cbc-s3cr3t", "sophos.secret": "globex-sophos-s3cr3t"})
	c, err := load(env)
	require.NoError(t, err)
	require.Equal(t, []string{"acme", "globex"}, c.tenants.Customers())
	require.NotNil(t, c.tenants["acme"].CBC)
	require.Nil(t, c.tenants["acme"].Sophos)
	masked := c.secrets.String("403 invalid token acme-cbc-s3cr3t/KEY1 and globex-sophos-s3cr3t")
	require.NotContains(t, masked, "s3cr3t", "the file's secrets are masked like the environment's")

	var kinds []string
	c.tenants["globex"].Each(func(kind string, _ any) { kinds = append(kinds, kind) })
	require.Equal(t, []string{edr.KindSophosXDR}, kinds)
}

func TestConfigTenantsFileProblems(t *testing.T) {
	t.Parallel()
	// Together with the single-account variables: ambiguous, refused.
	env := tenantsEnv(t, "tenants:\n  acme:\n    cblr: {url: \"https://e.example\", apiTokenFile: t}\n", map[string]string{"t": "tok"})
	env["CBLR_URL"], env["CBLR_API_TOKEN"] = "https://e.example", "x"
	_, err := load(env)
	require.ErrorContains(t, err, "TENANTS_FILE")
	require.ErrorContains(t, err, "CBLR_URL, CBLR_API_TOKEN")

	// Every problem of a bad file, at once, naming the variable.
	env = tenantsEnv(t, `
tenants:
  acme:
    cbc: {url: "http://plain.example", orgKey: ACME01}
  globex:
    cblr: {url: "https://127.0.0.1:8443", apiTokenFile: missing}
`, nil)
	_, err = load(env)
	require.ErrorContains(t, err, "TENANTS_FILE: ")
	for _, want := range []string{`tenant "acme": cbc: url: must be https://`, `tenant "acme": cbc: apiID is required`,
		`tenant "globex": cblr: url: points at a loopback`, `tenant "globex": cblr: apiTokenFile: cannot read`} {
		require.ErrorContains(t, err, want)
	}
}

// TestNoRequestCrossesCustomers runs worker dev with two customers, each
// with simulated vendor accounts of its own (a tenants file): every request
// any vendor simulator received for a job was for a job of the customer
// whose account it is, and both customers' accounts were used.
func TestNoRequestCrossesCustomers(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	d := &dev{o: devOptions{jobs: 60, bad: 2, aborts: 4, workers: 2, inflight: 200, redis: "embedded",
		short: true, customers: 2, timeout: 5 * time.Minute}, out: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	code, err := d.run(ctx, simstack.TestTiming)
	require.NoError(t, err)
	require.Equal(t, 0, code, out.String())
	t.Cleanup(func() { os.Remove(d.logPath) })

	require.Len(t, d.stack.Accounts, 2)
	for _, a := range d.stack.Accounts {
		used := 0
		for vendor, k := range map[string]*simhttp.Kit{"cbc": a.CBC.Kit(), "cblr": a.CBLR.Kit(), "cytomic": a.Cytomic.Kit(), "sophos": a.Sophos.Kit()} {
			for _, r := range k.Requests() {
				if r.Job == "" {
					continue
				}
				j, ok := d.stack.SampleDB.Job(r.Job)
				require.True(t, ok, "%s %s for an unknown job", r.Method, r.Path)
				require.Equal(t, a.Customer, j.Submission.Customer,
					"%s account of %s received %s %s for %s's job %s", vendor, a.Customer, r.Method, r.Path, j.Submission.Customer, r.Job)
				used++
			}
		}
		require.Positive(t, used, "%s's accounts were used", a.Customer)
	}
}
