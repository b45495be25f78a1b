package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

// Every command's -h/--help prints its usage on stdout and exits 0 without
// reading the environment: a configuration that would fail (no brokers, a
// Redis URL that is not one) and addresses that would not answer do not
// matter. A flag mistake is still a usage error on stderr (exit 2).
func TestEveryCommandHasHelp(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_URL": "http://not-redis", "LEASE_TTL": "soon", "KAFKA_TLS": "maybe"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "usage: fleetctl <command>"},
		{[]string{"-h"}, "usage: fleetctl <command>"},
		{[]string{"help"}, "usage: fleetctl <command>"},
		{[]string{"status", "--help"}, "usage: fleetctl status"},
		{[]string{"jobs", "--help"}, "usage: fleetctl jobs"},
		{[]string{"job", "--help"}, "usage: fleetctl job <id>"},
		{[]string{"results", "--help"}, "usage: fleetctl results"},
		{[]string{"job", "some-id", "-h"}, "usage: fleetctl job <id>"},
		{[]string{"dlq", "--help"}, "usage: fleetctl <command>"},
		{[]string{"dlq", "list", "--help"}, "usage: fleetctl dlq list"},
		{[]string{"dlq", "replay", "--help"}, "usage: fleetctl dlq replay"},
		{[]string{"release", "--help"}, "usage: fleetctl release <id>"},
		{[]string{"console", "--help"}, "usage: fleetctl console"},
		{[]string{"version", "--help"}, "usage: fleetctl version"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			for _, args := range testutil.HelpForms(c.args) {
				r := runEnv(env, "", args...)
				require.Equal(t, 0, r.code, "%v: %s", args, r)
				require.True(t, strings.HasPrefix(r.stdout, c.want), "%v: %q", args, r.stdout)
				require.Empty(t, r.stderr, "%v", args)
			}
		})
	}
	r := runEnv(env, "", "dlq", "list", "--bogus")
	require.Equal(t, 2, r.code)
	require.Empty(t, r.stdout)
	require.Contains(t, r.stderr, "usage: fleetctl dlq list")
}
