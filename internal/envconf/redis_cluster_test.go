package envconf_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/internal/envconf/pkitest"
)

func TestRedisConfigIsOneServerByDefault(t *testing.T) {
	t.Parallel()
	e := fromMap(map[string]string{"REDIS_URL": "rediss://fleet:" + password + "@redis.example.net:6380/0?dial_timeout=3s"})
	c := e.RedisConfig()
	require.NoError(t, e.Err())
	require.Nil(t, c.Cluster)
	require.Equal(t, "redis.example.net:6380", c.Server.Addr)
	require.Equal(t, password, c.Server.Password)
	require.Equal(t, "rediss://redis.example.net:6380/0", c.Show, "no user, password or options")
	require.Contains(t, e.Secrets(), password)
}

func TestRedisClusterAddrs(t *testing.T) {
	t.Parallel()
	e := fromMap(map[string]string{
		"REDIS_CLUSTER_ADDRS":    "10.0.0.5:7000, 10.0.0.6:7000,redis-3.example.net:7001",
		"REDIS_CLUSTER_USERNAME": "fleet",
		"REDIS_CLUSTER_PASSWORD": password,
	})
	c := e.RedisConfig()
	require.NoError(t, e.Err())
	require.Nil(t, c.Server)
	require.Equal(t, []string{"10.0.0.5:7000", "10.0.0.6:7000", "redis-3.example.net:7001"}, c.Cluster.Addrs)
	require.Equal(t, "fleet", c.Cluster.Username)
	require.Equal(t, password, c.Cluster.Password)
	require.Nil(t, c.Cluster.TLSConfig, "plaintext unless REDIS_CLUSTER_TLS=true")
	require.Equal(t, "redis://10.0.0.5:7000,10.0.0.6:7000,redis-3.example.net:7001 (cluster)", c.Show)
	require.Contains(t, e.Secrets(), password, "the password is masked in logs")
}

func TestRedisClusterTLSAndPasswordFile(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	pwFile := filepath.Join(t.TempDir(), "redis-password")
	require.NoError(t, os.WriteFile(pwFile, []byte(password+"\n"), 0o600))

	t.Run("system roots, each node's own name", func(t *testing.T) {
		t.Parallel()
		e := fromMap(map[string]string{"REDIS_CLUSTER_ADDRS": "redis-1.example.net:7000", "REDIS_CLUSTER_TLS": "true",
			"REDIS_CLUSTER_PASSWORD_FILE": pwFile})
		c := e.RedisConfig()
		require.NoError(t, e.Err())
		require.Equal(t, password, c.Cluster.Password)
		tc := c.Cluster.TLSConfig
		require.NotNil(t, tc)
		require.Nil(t, tc.RootCAs)
		require.Empty(t, tc.ServerName, "crypto/tls checks each node against the host it dials")
		require.Equal(t, uint16(tls.VersionTLS12), tc.MinVersion)
		require.Equal(t, "rediss://redis-1.example.net:7000 (cluster)", c.Show)
	})
	t.Run("private CA, client certificate, server name", func(t *testing.T) {
		t.Parallel()
		e := fromMap(map[string]string{
			"REDIS_CLUSTER_ADDRS": "127.0.0.1:7000", "REDIS_CLUSTER_TLS": "true",
			"REDIS_TLS_CA_FILE": p.CAFile, "REDIS_TLS_CERT_FILE": p.ClientCertFile, "REDIS_TLS_KEY_FILE": p.ClientKeyFile,
			"REDIS_TLS_SERVER_NAME": pkitest.ServerName,
		})
		c := e.RedisConfig()
		require.NoError(t, e.Err())
		tc := c.Cluster.TLSConfig
		require.Equal(t, pkitest.ServerName, tc.ServerName)
		require.Len(t, tc.Certificates, 1)
		require.True(t, verifies(t, p, tc.RootCAs, pkitest.ServerName), "the CA file is trusted")
	})
}

func TestRedisClusterProblemsNameTheVariableAndHideThePassword(t *testing.T) {
	t.Parallel()
	p := pkitest.New(t)
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	require.NoError(t, os.WriteFile(urlFile, []byte("redis://h:6379/0"), 0o600))
	seeds := "127.0.0.1:7000,127.0.0.1:7001"
	cases := []problemCase{
		{"neither URL nor cluster", map[string]string{}, "REDIS_URL"},
		{"URL and cluster", map[string]string{"REDIS_URL": "redis://fleet:" + password + "@h:6379/0", "REDIS_CLUSTER_ADDRS": seeds},
			"REDIS_CLUSTER_ADDRS"},
		{"URL file and cluster", map[string]string{"REDIS_URL_FILE": urlFile, "REDIS_CLUSTER_ADDRS": seeds}, "REDIS_CLUSTER_ADDRS"},
		{"blank list", map[string]string{"REDIS_CLUSTER_ADDRS": " , "}, "REDIS_CLUSTER_ADDRS"},
		{"a URL pasted as a seed", map[string]string{"REDIS_CLUSTER_ADDRS": "redis://fleet:" + password + "@h:7000"}, "REDIS_CLUSTER_ADDRS"},
		{"user info in a seed", map[string]string{"REDIS_CLUSTER_ADDRS": "127.0.0.1:7000,fleet:" + password + "@h:7000"}, "REDIS_CLUSTER_ADDRS"},
		{"no port", map[string]string{"REDIS_CLUSTER_ADDRS": "redis-1.example.net"}, "REDIS_CLUSTER_ADDRS"},
		{"port 0", map[string]string{"REDIS_CLUSTER_ADDRS": "h:0"}, "REDIS_CLUSTER_ADDRS"},
		{"port out of range", map[string]string{"REDIS_CLUSTER_ADDRS": "h:65536"}, "REDIS_CLUSTER_ADDRS"},
		{"no host", map[string]string{"REDIS_CLUSTER_ADDRS": ":7000"}, "REDIS_CLUSTER_ADDRS"},
		{"user without the cluster", map[string]string{"REDIS_URL": "redis://h:6379/0", "REDIS_CLUSTER_USERNAME": "fleet"},
			"REDIS_CLUSTER_USERNAME"},
		{"password without the cluster", map[string]string{"REDIS_URL": "redis://h:6379/0", "REDIS_CLUSTER_PASSWORD": password},
			"REDIS_CLUSTER_PASSWORD"},
		{"password file without the cluster", map[string]string{"REDIS_URL": "redis://h:6379/0", "REDIS_CLUSTER_PASSWORD_FILE": urlFile},
			"REDIS_CLUSTER_PASSWORD_FILE"},
		{"TLS without the cluster", map[string]string{"REDIS_URL": "rediss://h:6379/0", "REDIS_CLUSTER_TLS": "true"}, "REDIS_CLUSTER_TLS"},
		{"not a boolean", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_CLUSTER_TLS": "yes please"}, "REDIS_CLUSTER_TLS"},
		{"password twice", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_CLUSTER_PASSWORD": password,
			"REDIS_CLUSTER_PASSWORD_FILE": urlFile}, "REDIS_CLUSTER_PASSWORD"},
		{"missing password file", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_CLUSTER_PASSWORD_FILE": filepath.Join(dir, "nope")},
			"REDIS_CLUSTER_PASSWORD_FILE"},
		{"CA without TLS", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_TLS_CA_FILE": p.CAFile}, "REDIS_TLS_CA_FILE"},
		{"server name without TLS", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_TLS_SERVER_NAME": "x"}, "REDIS_TLS_SERVER_NAME"},
		{"missing CA", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_CLUSTER_TLS": "true",
			"REDIS_TLS_CA_FILE": filepath.Join(dir, "nope.pem")}, "REDIS_TLS_CA_FILE"},
		{"cert without key", map[string]string{"REDIS_CLUSTER_ADDRS": seeds, "REDIS_CLUSTER_TLS": "true",
			"REDIS_TLS_CERT_FILE": p.ClientCertFile}, "REDIS_TLS_KEY_FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := fromMap(c.env)
			got := e.RedisConfig()
			require.Nil(t, got.Server)
			require.Nil(t, got.Cluster)
			requireProblem(t, e.Err(), c.want)
			require.NotContains(t, e.Err().Error(), "@h", "no piece of a seed that carried user info")
		})
	}
}

// A cluster client over the configured options, without connecting.
func TestRedisConfigNewClient(t *testing.T) {
	t.Parallel()
	e := fromMap(map[string]string{"REDIS_CLUSTER_ADDRS": "127.0.0.1:1,127.0.0.1:2"})
	c := e.RedisConfig()
	require.NoError(t, e.Err())
	rdb := c.NewClient()
	require.IsType(t, (*redis.ClusterClient)(nil), rdb)
	require.NoError(t, rdb.Close())
	require.Equal(t, []string{"127.0.0.1:1", "127.0.0.1:2"}, c.Cluster.Addrs, "NewClient works on a copy")

	e = fromMap(map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"})
	c = e.RedisConfig()
	require.NoError(t, e.Err())
	rdb = c.NewClient()
	require.IsType(t, (*redis.Client)(nil), rdb)
	require.NoError(t, rdb.Close())
}

// Whatever an operator writes in REDIS_CLUSTER_ADDRS — a URL with its
// password pasted by mistake, user info before a seed — the problem
// reported never carries any of it.
func FuzzRedisClusterAddrsProblemsHideWhatWasWritten(f *testing.F) {
	for _, s := range [][2]string{{"redis://fleet:", "@h:7000"}, {"fleet:", "@h:7000"}, {"127.0.0.1:7000,", ""}, {"", ""},
		{"h:", ""}, {"[::1]:", ""}, {"h:7000/", ""}, {"rediss://", ":7000?x=1"}} {
		f.Add(s[0], "pw", s[1])
	}
	f.Fuzz(func(t *testing.T, before, pw, after string) {
		if strings.Contains(before+after, "XQ") {
			return
		}
		e := fromMap(map[string]string{"REDIS_CLUSTER_ADDRS": before + "XQ7" + pw + "XQ8" + after, "REDIS_CLUSTER_PASSWORD": "XQ7" + pw})
		e.RedisConfig()
		if err := e.Err(); err != nil {
			require.NotContains(t, err.Error(), "XQ7")
			require.NotContains(t, err.Error(), "XQ8")
			require.NotContains(t, err.Error(), "\n")
		}
	})
}
