package envconf

import (
	"crypto/tls"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisURL declares REDIS_URL: one Redis server (RedisConfig and Redis read
// it).
var RedisURL = Row{
	Vars:    []Var{{Name: "REDIS_URL", Secret: true}},
	Default: "— (required unless `REDIS_CLUSTER_ADDRS`)",
	Doc: "`redis://`, `rediss://` (TLS) or `unix://`, with ACL user and password (percent-encode `/ ? # @ :` in " +
		"them); `skip_verify` is refused",
}

// RedisCluster declares the variables of a Redis Cluster, used instead of
// REDIS_URL (RedisConfig reads them).
var RedisCluster = Row{
	Vars: []Var{
		{Name: "REDIS_CLUSTER_ADDRS", Kind: List},
		{Name: "REDIS_CLUSTER_USERNAME"},
		{Name: "REDIS_CLUSTER_PASSWORD", Secret: true},
		{Name: "REDIS_CLUSTER_TLS", Kind: Bool},
	},
	Default: "unset = one server at `REDIS_URL`",
	Doc: "a Redis Cluster instead of `REDIS_URL` (set one of the two): comma-separated seed nodes `host:port`, " +
		"the ACL user and password, TLS 1.2+ to every node with `REDIS_CLUSTER_TLS=true` (then the `REDIS_TLS_*` " +
		"files apply, and each node's certificate must name the address the cluster announces for it, unless " +
		"`REDIS_TLS_SERVER_NAME` is set). A fleet's keys all live in one slot, on one master: see SIZING.md",
}

// RedisTLS declares the TLS variables Redis reads with a rediss:// URL,
// and RedisConfig with REDIS_CLUSTER_TLS=true.
var RedisTLS = Row{
	Vars: []Var{
		{Name: "REDIS_TLS_CA_FILE"},
		{Name: "REDIS_TLS_CERT_FILE"},
		{Name: "REDIS_TLS_KEY_FILE"},
		{Name: "REDIS_TLS_SERVER_NAME"},
	},
	Default: "system roots; none",
	Doc: "`rediss://` or `REDIS_CLUSTER_TLS=true` only: private CA bundle (replaces the system roots), client " +
		"certificate for `tls-auth-clients`, name checked in the server certificate",
}

// RedisConfig is the ledger's Redis as configured: one server (REDIS_URL)
// or a Redis Cluster (REDIS_CLUSTER_ADDRS). After a RedisConfig read
// without problems, exactly one of Server and Cluster is set.
type RedisConfig struct {
	Server  *redis.Options
	Cluster *redis.ClusterOptions
	// Show says where, without user, password or options: for display.
	Show string
}

// NewClient returns a client over a copy of the options: a
// *redis.ClusterClient for a cluster, a *redis.Client for one server. The
// caller closes it.
func (c RedisConfig) NewClient() redis.UniversalClient {
	if c.Cluster != nil {
		o := *c.Cluster
		return redis.NewClusterClient(&o)
	}
	o := *c.Server
	return redis.NewClient(&o)
}

// RedisConfig reads where the ledger lives (the Env's table must declare
// RedisURL, RedisCluster and RedisTLS): REDIS_URL as Redis reads it, or,
// when REDIS_CLUSTER_ADDRS is set, a Redis Cluster — setting both is an
// error. REDIS_CLUSTER_ADDRS lists seed nodes (host:port; the client learns
// the others from them), REDIS_CLUSTER_USERNAME and REDIS_CLUSTER_PASSWORD
// (or REDIS_CLUSTER_PASSWORD_FILE) are the ACL user, and
// REDIS_CLUSTER_TLS=true turns on TLS 1.2 or later to every node, with the
// RedisTLS variables as for rediss://. Without REDIS_CLUSTER_TLS=true those
// variables are an error, as are the other cluster variables without
// REDIS_CLUSTER_ADDRS.
//
// Problems are recorded in e and name the variable; they never quote a
// password, nor a cluster address (one may be a pasted URL with user
// info). Server and Cluster are nil on a problem.
func (e *Env) RedisConfig() RedisConfig {
	before := len(e.problems)
	cluster, ok := e.redisCluster()
	if !ok {
		o, raw := e.redisURL()
		if o == nil || len(e.problems) != before {
			return RedisConfig{}
		}
		return RedisConfig{Server: o, Show: RedactURL(raw)}
	}
	if url, file := e.Set("REDIS_URL"), e.Set("REDIS_URL_FILE"); url || file {
		e.Fail("REDIS_CLUSTER_ADDRS", "is set together with REDIS_URL: set one of the two (REDIS_URL for one server, "+
			"REDIS_CLUSTER_ADDRS for a Redis Cluster)")
		return RedisConfig{}
	}
	if cluster == nil {
		return RedisConfig{}
	}
	scheme := "redis"
	if cluster.TLSConfig != nil {
		scheme = "rediss"
	}
	return RedisConfig{Cluster: cluster, Show: scheme + "://" + strings.Join(cluster.Addrs, ",") + " (cluster)"}
}

// redisCluster reads the RedisCluster variables; ok is false when
// REDIS_CLUSTER_ADDRS is not set. Every variable is read before any is
// judged, so that all their problems are reported at once.
func (e *Env) redisCluster() (_ *redis.ClusterOptions, ok bool) {
	addrs := e.List("REDIS_CLUSTER_ADDRS")
	user := e.Str("REDIS_CLUSTER_USERNAME")
	pass := e.Secret("REDIS_CLUSTER_PASSWORD")
	useTLS := e.Bool("REDIS_CLUSTER_TLS")
	if !e.Set("REDIS_CLUSTER_ADDRS") {
		for _, v := range []string{"REDIS_CLUSTER_USERNAME", "REDIS_CLUSTER_PASSWORD", "REDIS_CLUSTER_PASSWORD_FILE"} {
			if e.Set(v) {
				e.Fail(v, "only applies with REDIS_CLUSTER_ADDRS (with REDIS_URL, the user and password are in the URL)")
			}
		}
		if useTLS {
			e.Fail("REDIS_CLUSTER_TLS", "only applies with REDIS_CLUSTER_ADDRS (with REDIS_URL, rediss:// means TLS)")
		}
		return nil, false
	}
	o := &redis.ClusterOptions{Addrs: addrs, Username: user, Password: pass}
	before := len(e.problems)
	if useTLS {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		e.tlsFiles("REDIS", o.TLSConfig)
	} else if v := e.tlsVarsSet("REDIS"); v != "" && !e.Failed("REDIS_CLUSTER_TLS") {
		e.Fail(v, "is set but REDIS_CLUSTER_TLS is not true (set REDIS_CLUSTER_TLS=true to reach the cluster with TLS)")
	}
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		n, perr := strconv.Atoi(port)
		if err != nil || host == "" || strings.ContainsAny(a, "@/?#") || perr != nil || n < 1 || n > 65535 {
			e.Fail("REDIS_CLUSTER_ADDRS", "entry %d of %d is not host:port (a seed node's address; the user and "+
				"password go in REDIS_CLUSTER_USERNAME and REDIS_CLUSTER_PASSWORD)", i+1, len(addrs))
			break
		}
	}
	if len(e.problems) != before || e.Failed("REDIS_CLUSTER_ADDRS") || e.Failed("REDIS_CLUSTER_PASSWORD") ||
		e.Failed("REDIS_CLUSTER_PASSWORD_FILE") || e.Failed("REDIS_CLUSTER_TLS") {
		return nil, true
	}
	return o, true
}

// redisDBPath is the only path a redis:// or rediss:// URL may have.
var redisDBPath = regexp.MustCompile(`^/?([0-9]+/?)?$`)

// Redis reads REDIS_URL (or REDIS_URL_FILE: the URL carries the password)
// and the RedisTLS variables (the Env's table must declare RedisURL and
// RedisTLS):
// redis://, rediss:// (TLS) or unix://, with ACL user and password, and
// go-redis's query options.
//
// With rediss://, TLS 1.2 or later is used and REDIS_TLS_CA_FILE replaces
// the system roots with a private CA bundle, REDIS_TLS_CERT_FILE and
// REDIS_TLS_KEY_FILE add a client certificate (for tls-auth-clients), and
// REDIS_TLS_SERVER_NAME overrides the name checked in the server's
// certificate (default: the URL's host). Those variables with redis:// or
// unix:// are an error, as is the skip_verify query option (trust a private
// CA with REDIS_TLS_CA_FILE instead).
//
// Problems are recorded in e and name the variable; they never contain the
// URL's user info, so never its password. It returns nil on a problem.
func (e *Env) Redis() *redis.Options {
	o, _ := e.redisURL()
	return o
}

// redisURL is Redis, also returning the URL as read.
func (e *Env) redisURL() (*redis.Options, string) {
	raw, ok := e.secret("REDIS_URL")
	if !ok {
		return nil, ""
	}
	if raw == "" {
		e.Fail("REDIS_URL", "is required (or REDIS_URL_FILE; or REDIS_CLUSTER_ADDRS for a Redis Cluster)")
		return nil, ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The parser's message quotes the URL, or pieces of it: say only
		// what to do.
		e.Fail("REDIS_URL", "is not a valid URL (percent-encode reserved characters such as @ : / ? # %% in the user name and password)")
		return nil, ""
	}
	if _, rest, ok := strings.Cut(raw, "//"); ok {
		// A '/', '?' or '#' in the password ends the authority early, and
		// the rest of the password then sits in the path, query or fragment,
		// followed by the '@' that ended the user info: reject that shape
		// before any message quotes those parts.
		if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.Contains(rest[i:], "@") {
			e.Fail("REDIS_URL", "has an '@' after the host (percent-encode / ? # @ in the user name and password, e.g. / as %%2F)")
			return nil, ""
		}
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "redis", "rediss":
		if u.Opaque != "" {
			e.Fail("REDIS_URL", "must look like %s://user:password@host:port/db", scheme)
			return nil, ""
		}
		if !redisDBPath.MatchString(u.Path) {
			// Not printed: whatever is there was not meant as a path.
			e.Fail("REDIS_URL", "the path must be /<database number>")
			return nil, ""
		}
	case "unix":
	default:
		e.Fail("REDIS_URL", "must start with redis://, rediss:// (TLS) or unix://")
		return nil, ""
	}
	if u.Query().Has("skip_verify") {
		e.Fail("REDIS_URL", "skip_verify is not allowed: it turns off the server certificate check (trust a private CA with REDIS_TLS_CA_FILE)")
		return nil, ""
	}
	if p, ok := u.User.Password(); ok && p != "" {
		e.secrets = append(e.secrets, p)
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		e.Fail("REDIS_URL", "%s", redact(err.Error(), raw, u))
		return nil, ""
	}
	if scheme != "rediss" {
		if v := e.tlsVarsSet("REDIS"); v != "" {
			e.Fail(v, "only applies to rediss:// URLs (REDIS_URL is %s://)", scheme)
			return nil, ""
		}
		return opts, raw
	}
	before := len(e.problems)
	e.tlsFiles("REDIS", opts.TLSConfig)
	if len(e.problems) != before {
		return nil, ""
	}
	return opts, raw
}

// redact removes the URL and its password, as written and decoded, from
// msg.
func redact(msg, raw string, u *url.URL) string {
	msg = strings.ReplaceAll(msg, raw, "<REDIS_URL>")
	var secrets []string
	if p, ok := u.User.Password(); ok && p != "" {
		secrets = append(secrets, p)
	}
	// The password as written: the authority runs from "//" to the first
	// '/', '?' or '#'; its user info ends at the last '@'.
	if _, rest, ok := strings.Cut(raw, "//"); ok {
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			rest = rest[:i]
		}
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			if _, p, ok := strings.Cut(rest[:i], ":"); ok && p != "" {
				secrets = append(secrets, p)
			}
		}
	}
	for _, s := range secrets {
		msg = strings.ReplaceAll(msg, s, "<password>")
	}
	return msg
}
