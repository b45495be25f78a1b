// Package envconf reads the configuration contract of DESIGN.md from the
// environment for the commands (worker, fleetctl): typed getters that
// record the first problem, naming the variable, so a command can print one
// clear line and exit 2. Secrets may come from <NAME>_FILE. Only cmd/
// packages use it; the rest of the code takes config structs.
package envconf

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env reads variables through a lookup function (os.LookupEnv by default).
// Each getter records the first problem; Err returns it.
type Env struct {
	lookup  func(string) (string, bool)
	err     error
	secrets []string
}

// Secrets returns every secret read so far (Secret, RequiredSecret, the
// Redis URL's password), for the process's redact.Set.
func (e *Env) Secrets() []string { return append([]string(nil), e.secrets...) }

// New returns an Env over lookup (nil = os.LookupEnv).
func New(lookup func(string) (string, bool)) *Env {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &Env{lookup: lookup}
}

// FromMap returns an Env over a fixed set of variables.
func FromMap(m map[string]string) *Env {
	return New(func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

// Err returns the first problem found, naming the variable.
func (e *Env) Err() error { return e.err }

// Fail records a problem with name (the first one wins).
func (e *Env) Fail(name, format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
}

// Raw returns the trimmed value and whether the variable is set at all.
func (e *Env) Raw(name string) (string, bool) {
	v, ok := e.lookup(name)
	return strings.TrimSpace(v), ok
}

// Str returns the value, or def when unset or empty.
func (e *Env) Str(name, def string) string {
	if v, ok := e.Raw(name); ok && v != "" {
		return v
	}
	return def
}

// Optional distinguishes unset (def) from set-but-empty (disabled).
func (e *Env) Optional(name, def string) (value string, disabled bool) {
	v, ok := e.Raw(name)
	if !ok {
		return def, false
	}
	if v == "" {
		return "", true
	}
	return v, false
}

// Required returns the value, recording a problem when it is missing.
func (e *Env) Required(name string) string {
	v := e.Str(name, "")
	if v == "" {
		e.Fail(name, "is required")
	}
	return v
}

// Secret reads NAME, or the file named by NAME_FILE (not both).
func (e *Env) Secret(name string) string {
	v, hasV := e.Raw(name)
	f, hasF := e.Raw(name + "_FILE")
	switch {
	case hasV && v != "" && hasF && f != "":
		e.Fail(name, "set either %s or %s_FILE, not both", name, name)
		return ""
	case hasF && f != "":
		b, err := os.ReadFile(f)
		if err != nil {
			e.Fail(name+"_FILE", "cannot read the secret file: %v", ErrNoPath(err))
			return ""
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			e.Fail(name+"_FILE", "the secret file is empty")
		}
		e.secrets = append(e.secrets, s)
		return s
	}
	if v != "" {
		e.secrets = append(e.secrets, v)
	}
	return v
}

// RequiredSecret is Secret, recording a problem when it is missing.
func (e *Env) RequiredSecret(name string) string {
	v := e.Secret(name)
	if v == "" {
		e.Fail(name, "is required (or %s_FILE)", name)
	}
	return v
}

// List reads a comma-separated list.
func (e *Env) List(name string, def []string) []string {
	v := e.Str(name, "")
	if v == "" {
		return def
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		e.Fail(name, "is an empty list")
	}
	return out
}

// Int reads an integer in [lo, hi].
func (e *Env) Int(name string, def, lo, hi int) int {
	v := e.Str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.Fail(name, "%q is not an integer", v)
		return def
	}
	if n < lo || n > hi {
		e.Fail(name, "%d is out of range [%d, %d]", n, lo, hi)
		return def
	}
	return n
}

// Float reads a number in [lo, hi].
func (e *Env) Float(name string, def, lo, hi float64) float64 {
	v := e.Str(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		e.Fail(name, "%q is not a number in [%g, %g]", v, lo, hi)
		return def
	}
	return f
}

// Duration reads a Go duration in [lo, hi].
func (e *Env) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v := e.Str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.Fail(name, "%q is not a duration (examples: 30s, 5m, 4h)", v)
		return def
	}
	if d < lo || d > hi {
		e.Fail(name, "%s is out of range [%s, %s]", d, lo, hi)
		return def
	}
	return d
}

// Bool reads a boolean.
func (e *Env) Bool(name string, def bool) bool {
	v := e.Str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.Fail(name, "%q is not a boolean (true/false)", v)
		return def
	}
	return b
}

// URL validates a service base URL: https, unless insecure allows http and
// loopback/private literal hosts.
func (e *Env) URL(name, v string, insecure bool) string {
	if v == "" {
		return ""
	}
	if err := CheckURL(v, insecure); err != nil {
		e.Fail(name, "%v", err)
		return ""
	}
	return strings.TrimRight(v, "/")
}

// CheckURL is URL's check, for URLs that come from elsewhere than the
// environment (the tenants file).
func CheckURL(v string, insecure bool) error {
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%q is not an http(s) URL", RedactURL(v))
	}
	if u.User != nil {
		return errors.New("must not carry credentials in the URL")
	}
	if insecure {
		return nil
	}
	if u.Scheme != "https" {
		return errors.New("must be https:// (set INSECURE_HTTP=true only for development and tests)")
	}
	if isLocalHost(u.Hostname()) {
		return errors.New("points at a loopback or private address (set INSECURE_HTTP=true only for development and tests)")
	}
	return nil
}

// isLocalHost reports whether h names a loopback, private, link-local or
// unspecified address as a resolver would read it: with or without a
// trailing dot, any name under .localhost (RFC 6761), and IPv4 in the
// shorthand forms inet_aton accepts (127.1, 0x7f.0.0.1, 2130706433). It is
// a first line: the API transports also refuse loopback and link-local
// addresses at dial time, after resolution (httpc.RefuseLocal).
func isLocalHost(h string) bool {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		var ok bool
		if ip, ok = parseIPv4Loose(h); !ok {
			return false
		}
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()
}

// parseIPv4Loose parses the forms inet_aton accepts: 1 to 4 parts, each
// decimal, octal (leading 0) or hex (0x), the last part filling the
// remaining bytes.
func parseIPv4Loose(h string) (netip.Addr, bool) {
	parts := strings.Split(h, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 0, 32)
		if err != nil || p == "" {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*uint(i))
	}
	last := vals[len(vals)-1]
	if bits := 8 * uint(4-len(vals)+1); bits < 32 && last >= 1<<bits {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// Hostname returns the host name, or "worker".
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "worker"
	}
	return h
}

// RedactURL drops user info, query and fragment: safe to print.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}

// ErrNoPath drops the file path from an os error (the message names the
// variable already).
func ErrNoPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
