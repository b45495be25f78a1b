package envdoc_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf"
	"github.com/analysisfleet/analysisfleet/internal/envconf/envdoc"
)

const readme = "# x\n\n## Configuration\n\nSome words.\n\n" + envdoc.Marker + `
| variable | default | meaning |
| --- | --- | --- |
| ` + "`KAFKA_BROKERS`" + ` | — | seed brokers |
| ` + "`KAFKA_TLS`, `KAFKA_TLS_CA_FILE` (secret)" + ` | off | TLS; written ` + "`a \\| b`" + ` |

## Next

| ` + "`NOT_CONFIG`" + ` | x | y |
`

func TestDocumentedReadsEveryNameOfEveryRow(t *testing.T) {
	t.Parallel()
	names, err := envdoc.Documented(readme)
	require.NoError(t, err)
	require.Equal(t, []string{"KAFKA_BROKERS", "KAFKA_TLS", "KAFKA_TLS_CA_FILE"}, names)
}

// The check fails both ways: a variable read but not documented, and one
// documented but not read.
func TestDiffFindsDriftBothWays(t *testing.T) {
	t.Parallel()
	names, err := envdoc.Documented(readme)
	require.NoError(t, err)
	undocumented, unread := envdoc.Diff(names, []string{"KAFKA_BROKERS", "KAFKA_TLS", "KAFKA_REBALANCE_TIMEOUT"})
	require.Equal(t, []string{"KAFKA_REBALANCE_TIMEOUT"}, undocumented)
	require.Equal(t, []string{"KAFKA_TLS_CA_FILE"}, unread)
}

func TestDocumentedRefusesWhatItCannotCheck(t *testing.T) {
	t.Parallel()
	for name, md := range map[string]string{
		"a pattern":      strings.Replace(readme, "`KAFKA_BROKERS`", "`<VENDOR>_RATE_LIMIT`", 1),
		"no name":        strings.Replace(readme, "`KAFKA_BROKERS`", "brokers", 1),
		"a missing cell": strings.Replace(readme, "| — | seed brokers |", "| seed brokers |", 1),
		"no marker":      strings.Replace(readme, envdoc.Marker, "", 1),
		"no section":     strings.Replace(readme, "## Configuration", "## Settings", 1),
	} {
		_, err := envdoc.Documented(md)
		require.Error(t, err, name)
	}
}

func TestUpdateReplacesOnlyTheTable(t *testing.T) {
	t.Parallel()
	table := envconf.Table{{Vars: []envconf.Var{{Name: "ONLY_ONE", Default: "1"}}, Doc: "the one"}}
	out, err := envdoc.Update(readme, table.Markdown())
	require.NoError(t, err)
	got, err := envdoc.Generated(out)
	require.NoError(t, err)
	require.Equal(t, table.Markdown(), got)
	require.True(t, strings.HasPrefix(out, "# x\n\n## Configuration\n\nSome words.\n\n"+envdoc.Marker+"\n| variable |"))
	require.True(t, strings.HasSuffix(out, "\n\n## Next\n\n| `NOT_CONFIG` | x | y |\n"), out)
	names, err := envdoc.Documented(out)
	require.NoError(t, err)
	require.Equal(t, []string{"ONLY_ONE"}, names)
}
