package cytomic

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseFile(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		in    string
		rows  int64
		hosts []string
		col   int
	}{
		"simple": {
			in:   "hostname;pid;path\nWIN-A;1;C:\\a.exe\nWIN-B;2;C:\\b.exe\nwin-a;3;C:\\c.exe\n",
			rows: 3, hosts: []string{"WIN-A", "WIN-B"}, col: 0,
		},
		"preference order, case-insensitive": {
			in:   "MUID;ComputerName;pid\nm1;PC-1;1\nm2;PC-2;2",
			rows: 2, hosts: []string{"PC-1", "PC-2"}, col: 1,
		},
		"CRLF, BOM, blank lines, quotes": {
			in:   "\uFEFF\"Machine\";\"pid\"\r\n\r\n\"PC-1\";\"1\"\r\n  \r\nPC-2;2\r\n",
			rows: 2, hosts: []string{"PC-1", "PC-2"}, col: 0,
		},
		"repeated header is not a row": {
			in:   "hostname;pid\nA;1\nhostname;pid\nB;2\n",
			rows: 2, hosts: []string{"A", "B"}, col: 0,
		},
		"no host column": {
			in:   "pid;path\n1;x\n2;y\n",
			rows: 2, col: -1,
		},
		"short rows and empty hosts": {
			in:   "pid;path;hostname\n1\n2;y;\n3;z;H\n",
			rows: 3, hosts: []string{"H"}, col: 2,
		},
		"header only":   {in: "hostname;pid\n", col: 0},
		"empty":         {in: "", col: -1},
		"no final EOL":  {in: "hostname\nA", rows: 1, hosts: []string{"A"}, col: 0},
		"semicolon row": {in: "hostname;cmd\nA;x;y;z\n", rows: 1, hosts: []string{"A"}, col: 0},
	} {
		sum, err := parseFile(strings.NewReader(tc.in), DefaultMaxLine)
		require.NoError(t, err, name)
		require.Equal(t, tc.rows, sum.Rows, name)
		require.Equal(t, tc.col, sum.HostColumn, name)
		var hosts []string
		for _, h := range sum.Hosts {
			hosts = append(hosts, h)
		}
		require.ElementsMatch(t, tc.hosts, hosts, name)
	}
}

func TestParseFileLineTooLong(t *testing.T) {
	t.Parallel()
	_, err := parseFile(strings.NewReader("hostname\n"+strings.Repeat("x", DefaultMaxLine+10)+"\n"), DefaultMaxLine)
	require.ErrorIs(t, err, errLineTooLong)
	sum, err := parseFile(strings.NewReader("hostname\n"+strings.Repeat("x", DefaultMaxLine)+"\n"), DefaultMaxLine)
	require.NoError(t, err, "exactly maxLine is fine")
	require.Equal(t, int64(1), sum.Rows)
}

func TestCappedReader(t *testing.T) {
	t.Parallel()
	_, err := io.ReadAll(&cappedReader{r: strings.NewReader("0123456789"), max: 5})
	require.ErrorIs(t, err, errFileTooLarge)
	b, err := io.ReadAll(&cappedReader{r: strings.NewReader("01234"), max: 5})
	require.NoError(t, err)
	require.Equal(t, "01234", string(b))
}

func TestParseFileCapsTheHeaderFields(t *testing.T) {
	t.Parallel()
	_, err := parseFile(strings.NewReader("hostname"+strings.Repeat(";c", maxFields)+"\nA\n"), DefaultMaxLine)
	require.ErrorIs(t, err, errTooManyFields)
	sum, err := parseFile(strings.NewReader("hostname"+strings.Repeat(";c", maxFields-1)+"\nA\n"), DefaultMaxLine)
	require.NoError(t, err, "exactly maxFields is fine")
	require.Len(t, sum.Header, maxFields)
	// Data rows are not split: a row of many fields is one row, its host
	// cut out.
	sum, err = parseFile(strings.NewReader("pid;hostname\n1;H"+strings.Repeat(";x", 100000)+"\n"), DefaultMaxLine)
	require.NoError(t, err)
	require.Equal(t, int64(1), sum.Rows)
	require.Equal(t, map[string]string{"h": "H"}, sum.Hosts)
}

func TestParseFileLineCapIsConfigurable(t *testing.T) {
	t.Parallel()
	_, err := parseFile(strings.NewReader("hostname\n"+strings.Repeat("x", 101)+"\n"), 100)
	require.ErrorIs(t, err, errLineTooLong)
	require.ErrorContains(t, err, "more than 100 bytes")
}
