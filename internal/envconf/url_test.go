package envconf

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestURLRefusesEverySpellingOfLocal: without INSECURE_HTTP a service URL
// may not name a loopback or private address, however it is spelled.
func TestURLRefusesEverySpellingOfLocal(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"https://127.0.0.1/", "https://127.1/", "https://localhost./", "https://LOCALHOST/", "https://api.localhost/",
		"https://0x7f.0.0.1/", "https://2130706433/", "https://0177.0.0.1/", "https://10.1/", "https://[::1]/",
		"https://[::ffff:127.0.0.1]/", "https://0.0.0.0/", "https://169.254.169.254/",
	} {
		e := FromMap(nil, nil)
		require.Empty(t, e.URL("X_URL", u, false), u)
		require.ErrorContains(t, e.Err(), "loopback or private", u)
	}
	for _, u := range []string{"https://api.mnemonic.no", "https://127.example.com/", "https://1.2.3.4/"} {
		e := FromMap(nil, nil)
		require.NotEmpty(t, e.URL("X_URL", u, false), u)
		require.NoError(t, e.Err(), u)
	}
}

func TestParseIPv4Loose(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"127.1": "127.0.0.1", "2130706433": "127.0.0.1", "0x7f.1": "127.0.0.1", "10.0x10000": "10.1.0.0", "1.2.3.4": "1.2.3.4",
	} {
		ip, ok := parseIPv4Loose(in)
		require.True(t, ok, in)
		require.Equal(t, want, ip.String(), in)
	}
	for _, in := range []string{"1.2.3.4.5", "256.1", "1.2.3.256", "a.b", "", "1..2", "4294967296"} {
		_, ok := parseIPv4Loose(in)
		require.False(t, ok, in)
	}
}
