package envconf

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisURL declares REDIS_URL, which Redis reads.
var RedisURL = Row{
	Vars: []Var{{Name: "REDIS_URL", Secret: true, Required: true}},
	Doc: "`redis://`, `rediss://` (TLS) or `unix://`, with ACL user and password (percent-encode `/ ? # @ :` in " +
		"them); `skip_verify` is refused",
}

// RedisTLS declares the TLS variables Redis reads with a rediss:// URL.
var RedisTLS = Row{
	Vars: []Var{
		{Name: "REDIS_TLS_CA_FILE"},
		{Name: "REDIS_TLS_CERT_FILE"},
		{Name: "REDIS_TLS_KEY_FILE"},
		{Name: "REDIS_TLS_SERVER_NAME"},
	},
	Default: "system roots; none",
	Doc: "`rediss://` only: private CA bundle (replaces the system roots), client certificate for " +
		"`tls-auth-clients`, name checked in the server certificate",
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
	raw := e.Secret("REDIS_URL")
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// The parser's message quotes the URL, or pieces of it: say only
		// what to do.
		e.Fail("REDIS_URL", "is not a valid URL (percent-encode reserved characters such as @ : / ? # %% in the user name and password)")
		return nil
	}
	if _, rest, ok := strings.Cut(raw, "//"); ok {
		// A '/', '?' or '#' in the password ends the authority early, and
		// the rest of the password then sits in the path, query or fragment,
		// followed by the '@' that ended the user info: reject that shape
		// before any message quotes those parts.
		if i := strings.IndexAny(rest, "/?#"); i >= 0 && strings.Contains(rest[i:], "@") {
			e.Fail("REDIS_URL", "has an '@' after the host (percent-encode / ? # @ in the user name and password, e.g. / as %%2F)")
			return nil
		}
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "redis", "rediss":
		if u.Opaque != "" {
			e.Fail("REDIS_URL", "must look like %s://user:password@host:port/db", scheme)
			return nil
		}
		if !redisDBPath.MatchString(u.Path) {
			// Not printed: whatever is there was not meant as a path.
			e.Fail("REDIS_URL", "the path must be /<database number>")
			return nil
		}
	case "unix":
	default:
		e.Fail("REDIS_URL", "must start with redis://, rediss:// (TLS) or unix://")
		return nil
	}
	if u.Query().Has("skip_verify") {
		e.Fail("REDIS_URL", "skip_verify is not allowed: it turns off the server certificate check (trust a private CA with REDIS_TLS_CA_FILE)")
		return nil
	}
	if p, ok := u.User.Password(); ok && p != "" {
		e.secrets = append(e.secrets, p)
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		e.Fail("REDIS_URL", "%s", redact(err.Error(), raw, u))
		return nil
	}
	if scheme != "rediss" {
		if v := e.tlsVarsSet("REDIS"); v != "" {
			e.Fail(v, "only applies to rediss:// URLs (REDIS_URL is %s://)", scheme)
			return nil
		}
		return opts
	}
	before := len(e.problems)
	e.tlsFiles("REDIS", opts.TLSConfig)
	if len(e.problems) != before {
		return nil
	}
	return opts
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
