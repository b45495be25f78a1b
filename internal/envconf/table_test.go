package envconf_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
)

var testTable = envconf.Table{
	{Vars: []envconf.Var{{Name: "NAME", Required: true}}, Doc: "a name"},
	{Vars: []envconf.Var{{Name: "TOPICS", Kind: envconf.List, Default: "a,b"}}, Doc: "topics"},
	{Vars: []envconf.Var{{Name: "OUT", Default: "out"}}, Doc: "where; empty disables"},
	{
		Vars: []envconf.Var{
			{Name: "MIN_WAIT", Kind: envconf.Duration, Default: "2s", Min: "1ms", Max: "1h"},
			{Name: "MAX_WAIT", Kind: envconf.Duration, Default: "1m", Min: "1ms", Max: "1h"},
		},
		Doc: "waits",
	},
	{Vars: []envconf.Var{{Name: "COUNT", Kind: envconf.Int, Default: "10", Min: "1", Max: "100"}}, Doc: "how many"},
	{Vars: []envconf.Var{{Name: "RATE", Kind: envconf.Float, Default: "1.5", Min: "0", Max: "10"}}, Doc: "how fast"},
	{Vars: []envconf.Var{{Name: "LOUD", Kind: envconf.Bool, Default: "false"}}, Doc: "`true` to shout"},
	{Vars: []envconf.Var{{Name: "TOKEN", Secret: true}}, Default: "none", Doc: "a [token](https://example.com)"},
}

func TestGettersUseTheTable(t *testing.T) {
	t.Parallel()
	e := envconf.FromMap(testTable, map[string]string{"NAME": " n ", "OUT": "", "COUNT": "42", "LOUD": "true"})
	require.Equal(t, "n", e.Str("NAME"))
	require.Equal(t, []string{"a", "b"}, e.List("TOPICS"))
	out, disabled := e.Optional("OUT")
	require.Equal(t, "", out)
	require.True(t, disabled)
	require.Equal(t, 2*time.Second, e.Duration("MIN_WAIT"))
	require.Equal(t, 42, e.Int("COUNT"))
	require.Equal(t, 1.5, e.Float("RATE"))
	require.True(t, e.Bool("LOUD"))
	require.Equal(t, "", e.Secret("TOKEN"))
	require.NoError(t, e.Err())
	require.True(t, e.Set("COUNT"))
	require.False(t, e.Set("RATE"), "a default is not set")
}

// Every problem is kept, in table order (not reading order), each naming its
// variable; what follows from a variable's first problem is not repeated.
func TestEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e := envconf.FromMap(testTable, map[string]string{
		"TOPICS": " , ", "MIN_WAIT": "2h", "MAX_WAIT": "soon", "COUNT": "0", "RATE": "fast", "LOUD": "maybe",
		"TOKEN": "s3cret", "TOKEN_FILE": filepath.Join(dir, "token"),
	})
	e.Secret("TOKEN")
	e.Secret("TOKEN") // read twice: reported once
	e.Bool("LOUD")
	e.Float("RATE")
	e.Int("COUNT")
	e.Int("COUNT")
	e.Duration("MAX_WAIT")
	e.NotAbove("MIN_WAIT", e.Duration("MIN_WAIT"), "MAX_WAIT", time.Minute) // MIN_WAIT out of range already
	e.List("TOPICS")
	e.Str("NAME")
	e.FailEach("OUT", []error{errors.New("one"), errors.New("two"), errors.New("one")})
	err := e.Err()
	var ps envconf.Problems
	require.True(t, errors.As(err, &ps))
	require.Equal(t, envconf.Problems{
		{Var: "NAME", Msg: "is required"},
		{Var: "TOPICS", Msg: "is an empty list"},
		{Var: "OUT", Msg: "one"},
		{Var: "OUT", Msg: "two"},
		{Var: "MIN_WAIT", Msg: "2h0m0s is out of range [1ms, 1h0m0s]"},
		{Var: "MAX_WAIT", Msg: `"soon" is not a duration (examples: 30s, 5m, 4h)`},
		{Var: "COUNT", Msg: "0 is out of range [1, 100]"},
		{Var: "RATE", Msg: `"fast" is not a number in [0, 10]`},
		{Var: "LOUD", Msg: `"maybe" is not a boolean (true/false)`},
		{Var: "TOKEN", Msg: "set either TOKEN or TOKEN_FILE, not both"},
	}, ps)
	require.NotContains(t, err.Error(), "s3cret")
	require.NotContains(t, err.Error(), "\n", "as an error, one line")
	require.Equal(t, ps, envconf.AsProblems(err))
}

func TestNotAbove(t *testing.T) {
	t.Parallel()
	e := envconf.FromMap(testTable, map[string]string{"MIN_WAIT": "2m"})
	e.NotAbove("MIN_WAIT", e.Duration("MIN_WAIT"), "MAX_WAIT", e.Duration("MAX_WAIT"))
	require.EqualError(t, e.Err(), "MIN_WAIT: 2m0s is more than MAX_WAIT (1m0s)")
	e = envconf.FromMap(testTable, map[string]string{"MIN_WAIT": "1m"})
	e.NotAbove("MIN_WAIT", e.Duration("MIN_WAIT"), "MAX_WAIT", e.Duration("MAX_WAIT"))
	require.NoError(t, e.Err(), "equal bounds are fine")
}

// A secret file that cannot be read is the one problem: no "is required"
// follows it.
func TestSecretFileProblemIsTheOnlyOne(t *testing.T) {
	t.Parallel()
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	for file, want := range map[string]string{"/nonexistent/token": "cannot read the secret file", empty: "the secret file is empty"} {
		e := envconf.FromMap(testTable, map[string]string{"TOKEN_FILE": file})
		require.Empty(t, e.RequiredSecret("TOKEN"))
		ps := envconf.AsProblems(e.Err())
		require.Len(t, ps, 1, "%v", ps)
		require.Equal(t, "TOKEN_FILE", ps[0].Var)
		require.Contains(t, ps[0].Msg, want)
	}
	e := envconf.FromMap(testTable, nil)
	e.RequiredSecret("TOKEN")
	require.EqualError(t, e.Err(), "TOKEN: is required (or TOKEN_FILE)")
}

func TestUndeclaredOrMistypedReadsPanic(t *testing.T) {
	t.Parallel()
	e := envconf.FromMap(testTable, nil)
	require.PanicsWithValue(t, "envconf: OTHER is read but not declared in the table", func() { e.Str("OTHER") })
	require.PanicsWithValue(t, "envconf: COUNT is declared as kind integer, read as kind duration", func() { e.Duration("COUNT") })
	require.Panics(t, func() { e.Secret("NAME") }, "not declared a secret")
	require.Panics(t, func() { e.Raw("NAME_FILE") }, "only secrets have a _FILE")
	_, _ = e.Raw("TOKEN_FILE")
}

func TestCheckFindsMistakesInTheTable(t *testing.T) {
	t.Parallel()
	require.NoError(t, testTable.Check())
	bad := envconf.Table{
		{Vars: []envconf.Var{{Name: "A"}}, Doc: "x"}, // too short a name
		{Vars: []envconf.Var{{Name: "DUP"}, {Name: "DUP"}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "KEY", Secret: true}, {Name: "KEY_FILE"}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "NO_DOC"}}},
		{Vars: []envconf.Var{{Name: "WAIT", Kind: envconf.Duration, Default: "2h", Min: "1s", Max: "1h"}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "COUNT", Kind: envconf.Int, Default: "ten", Min: "1", Max: "100"}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "UNBOUNDED", Kind: envconf.Float}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "BOUNDED_TEXT", Min: "1"}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "SECRET_LIST", Kind: envconf.List, Secret: true}}, Doc: "x"},
		{Vars: []envconf.Var{{Name: "HIDDEN", Default: "42"}}, Default: "unset = off", Doc: "x"},
	}
	err := bad.Check()
	require.Error(t, err)
	for _, want := range []string{`"A": not an environment variable name`, "DUP: declared twice", "KEY_FILE: declared twice",
		"row 3: needs variables and a meaning", `WAIT: default "2h" outside [1s, 1h]`, "COUNT: ", "UNBOUNDED: ",
		"BOUNDED_TEXT: bounds on a text", "SECRET_LIST: a secret must be Text", `HIDDEN: row documents its default "42" nowhere`} {
		require.ErrorContains(t, err, want)
	}
}

func TestMarkdownAndHelp(t *testing.T) {
	t.Parallel()
	require.Equal(t, `| variable | default | meaning |
| --- | --- | --- |
| `+"`NAME`"+` | — (required) | a name |
| `+"`TOPICS`"+` | `+"`a,b`"+` | topics |
| `+"`OUT`"+` | `+"`out`"+` | where; empty disables |
| `+"`MIN_WAIT`, `MAX_WAIT`"+` | `+"`2s`, `1m`"+` | waits |
| `+"`COUNT`"+` | `+"`10`"+` | how many |
| `+"`RATE`"+` | `+"`1.5`"+` | how fast |
| `+"`LOUD`"+` | `+"`false`"+` | `+"`true`"+` to shout |
| `+"`TOKEN` (secret)"+` | none | a [token](https://example.com) |
`, testTable.Markdown())
	var b strings.Builder
	require.NoError(t, envconf.Table{
		{Vars: []envconf.Var{{Name: "A_VARIABLE"}, {Name: "ANOTHER_VARIABLE"}, {Name: "A_THIRD_ONE", Secret: true}},
			Default: "`x`", Doc: "a meaning long enough to wrap, with `code` and a [link](https://example.com) in it"},
	}.Help(&b, 40))
	require.Equal(t, `A_VARIABLE, ANOTHER_VARIABLE,
  A_THIRD_ONE (secret)
    default: x
    a meaning long enough to wrap, with
    code and a link in it
`, b.String())
}

func TestFormatDuration(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{time.Minute: "1m", 4 * time.Hour: "4h", 90 * time.Minute: "1h30m",
		30 * time.Second: "30s", 500 * time.Millisecond: "500ms", 720 * time.Hour: "720h", 61 * time.Second: "1m1s"} {
		require.Equal(t, want, envconf.FormatDuration(d))
	}
}

func TestHelpAsked(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--help"}, true},
		{[]string{"job", "x", "-h"}, true},
		{[]string{"-help"}, true},
		{[]string{"--", "--help"}, false},
		{[]string{"--helpme"}, false},
	} {
		if got := envconf.HelpAsked(c.args); got != c.want {
			t.Errorf("HelpAsked(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
