package testutil

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
)

// FullEnv sets every variable of table to a value that lets its reader go
// on to the variables read after it: its default, else a number's or a
// duration's minimum, "true" for a flag, "x" for the rest. The caller sets
// what a reader needs beyond that (a mechanism before its user, a
// rediss:// URL before its TLS files).
func FullEnv(table envconf.Table) map[string]string {
	env := map[string]string{}
	for _, r := range table {
		for _, v := range r.Vars {
			switch {
			case v.Default != "":
				env[v.Name] = v.Default
			case v.Kind == envconf.Int || v.Kind == envconf.Float || v.Kind == envconf.Duration:
				env[v.Name] = v.Min
			case v.Kind == envconf.Bool:
				env[v.Name] = "true"
			default:
				env[v.Name] = "x"
			}
		}
	}
	return env
}

// RequireReadsExactly runs read with a lookup into env and requires that it
// looked up every variable of table (and every secret's <NAME>_FILE) and
// nothing else: a variable read ad hoc, or declared and no longer read,
// fails.
func RequireReadsExactly(t testing.TB, table envconf.Table, env map[string]string, read func(lookup func(string) (string, bool))) {
	t.Helper()
	seen := map[string]bool{}
	read(func(k string) (string, bool) {
		seen[k] = true
		v, ok := env[k]
		return v, ok
	})
	want := table.Names()
	for _, s := range table.Secrets() {
		want = append(want, s+"_FILE")
	}
	slices.Sort(want)
	require.Equal(t, want, slices.Sorted(maps.Keys(seen)))
}

// HelpForms returns args once for each way of asking for help that
// envconf.HelpAsked accepts (--help, -h, -help): the --help or -h in args
// replaced by that form.
func HelpForms(args []string) [][]string {
	var forms [][]string
	for _, help := range []string{"--help", "-h", "-help"} {
		a := slices.Clone(args)
		for i, s := range a {
			if s == "--help" || s == "-h" {
				a[i] = help
			}
		}
		forms = append(forms, a)
	}
	return forms
}
