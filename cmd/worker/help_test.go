package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/testutil"
)

// `worker run --help` prints every variable with its default and meaning
// and exits 0 without reading the environment (a configuration that would
// exit 2 does not matter).
func TestRunHelpPrintsTheVariables(t *testing.T) {
	t.Setenv("LEASE_TTL", "eventually")
	t.Setenv("KAFKA_BROKERS", "")
	for _, arg := range []string{"--help", "-h", "-help"} {
		var out, errb bytes.Buffer
		require.Equal(t, 0, realMain([]string{"run", arg}, &out, &errb), errb.String())
		require.Empty(t, errb.String())
		help := out.String()
		require.True(t, strings.HasPrefix(help, "usage: worker run\n"), help)
		for _, name := range runVars.Names() {
			require.Contains(t, help, name)
		}
		for _, want := range []string{
			"LEASE_TTL\n    default: 30s\n    lease lifetime: the worker's session is renewed every TTL/3, one command\n    whatever the number of jobs\n",
			"KAFKA_REBALANCE_TIMEOUT, KAFKA_HEARTBEAT_INTERVAL\n    default: 20s, min(3s, session/10)\n",
			"SAMPLEDB_URL, SAMPLEDB_API_KEY (secret)\n    default: — (required)\n",
			"CANCEL_TIMEOUT, PUBLISH_TIMEOUT\n    default: 30s, 2m\n",
			"    default: CBC 20/5, CBLR 20/5, CYTOMIC 10/3, SOPHOS 1.5/5\n",
		} {
			require.Contains(t, help, want)
		}
		for _, line := range strings.Split(help, "\n") {
			require.LessOrEqual(t, len([]rune(line)), 80, "%q", line)
		}
	}
}

// Every command's -h/--help prints its usage on stdout and exits 0, without
// reading the environment (LEASE_TTL and KAFKA_BROKERS below would be
// configuration errors) and without dialing anything (healthcheck does not
// take "--help" for an address).
func TestEveryCommandHasHelp(t *testing.T) {
	t.Setenv("LEASE_TTL", "eventually")
	t.Setenv("KAFKA_BROKERS", "")
	t.Setenv("HTTP_ADDR", "127.0.0.1:1")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "usage: worker <command>"},
		{[]string{"-h"}, "usage: worker <command>"},
		{[]string{"help"}, "usage: worker <command>"},
		{[]string{"run", "--help"}, "usage: worker run\n"},
		{[]string{"healthcheck", "--help"}, "usage: worker healthcheck [addr]"},
		{[]string{"healthcheck", "127.0.0.1:1", "--help"}, "usage: worker healthcheck [addr]"},
		{[]string{"dev", "--help"}, "usage: worker dev [flags]"},
		{[]string{"dev", "--hold", "--help"}, "usage: worker dev [flags]"},
		{[]string{"dev", "submit", "--help"}, "usage: worker dev submit [flags]"},
		{[]string{"sim", "--help"}, "usage: worker sim [flags]"},
		{[]string{"bench", "--help"}, "usage: worker bench [flags]"},
		{[]string{"version", "--help"}, "usage: worker version"},
	} {
		for _, args := range testutil.HelpForms(c.args) {
			var out, errb bytes.Buffer
			require.Equal(t, 0, realMain(args, &out, &errb), "%v: %s", args, errb.String())
			require.True(t, strings.HasPrefix(out.String(), c.want), "%v: %q", args, out.String())
			require.Empty(t, errb.String(), "%v", args)
		}
	}
	// A flag error is still a usage error, on stderr.
	for _, cmd := range []string{"sim", "dev", "bench"} {
		var out, errb bytes.Buffer
		require.Equal(t, 2, realMain([]string{cmd, "--bogus"}, &out, &errb), cmd)
		require.Empty(t, out.String(), cmd)
		require.Contains(t, errb.String(), "usage: worker "+cmd, cmd)
	}
}
