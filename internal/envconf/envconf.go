// Package envconf reads the configuration contract of DESIGN.md from the
// environment for the commands (worker, fleetctl).
//
// A command declares every variable it reads in a Table (table.go): name,
// kind, default, bounds, whether it is a secret, and what it means. An Env
// reads only declared variables, through typed getters that take the
// defaults and bounds from the table; reading an undeclared one is a
// programming error and panics. The same table renders the README's
// Configuration rows and the command's --help, so the three cannot drift.
//
// The getters record every problem, each naming its variable, and go on:
// Err returns them all at once, so an operator fixes a configuration in one
// round. Secrets may come from <NAME>_FILE and never appear in a problem.
// Only cmd/ packages use this package; the rest of the code takes config
// structs.
package envconf

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one configuration problem. Msg never contains a secret.
type Problem struct {
	Var string // the variable at fault; "" when none is (Msg names them)
	Msg string
}

func (p Problem) Error() string {
	if p.Var == "" {
		return p.Msg
	}
	return p.Var + ": " + p.Msg
}

// Problems are every problem found, in the order found. As an error it is
// one line (problems separated by "; "); print each on its own line for an
// operator.
type Problems []Problem

func (ps Problems) Error() string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.Error()
	}
	return strings.Join(parts, "; ")
}

// AsProblems returns the problems err carries: all of them for Problems,
// else err itself as one problem without a variable.
func AsProblems(err error) Problems {
	var ps Problems
	if errors.As(err, &ps) {
		return ps
	}
	return Problems{{Msg: err.Error()}}
}

// Env reads the variables of a Table through a lookup function
// (os.LookupEnv by default). It is not safe for concurrent use.
type Env struct {
	table    Table
	lookup   func(string) (string, bool)
	problems Problems
	secrets  []string
}

// New returns an Env reading the variables of t through lookup (nil =
// os.LookupEnv).
func New(t Table, lookup func(string) (string, bool)) *Env {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &Env{table: t, lookup: lookup}
}

// FromMap returns an Env over a fixed set of variables.
func FromMap(t Table, m map[string]string) *Env {
	return New(t, func(k string) (string, bool) { v, ok := m[k]; return v, ok })
}

// Secrets returns every secret read so far (Secret, the Redis URL's
// password), for the process's redact.Set.
func (e *Env) Secrets() []string { return append([]string(nil), e.secrets...) }

// Err returns every problem found (as Problems) in table order (a
// <NAME>_FILE's with NAME's, problems without a variable last), or nil.
func (e *Env) Err() error {
	if len(e.problems) == 0 {
		return nil
	}
	order := map[string]int{}
	for i, name := range e.table.Names() {
		order[name] = i + 1
	}
	rank := func(p Problem) int {
		if i := order[p.Var]; i > 0 {
			return i
		}
		if i := order[strings.TrimSuffix(p.Var, "_FILE")]; i > 0 {
			return i
		}
		return len(order) + 1
	}
	ps := append(Problems(nil), e.problems...)
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmp.Compare(rank(a), rank(b)) })
	return ps
}

// Fail records a problem with name, unless name has one already: the first
// problem of a variable is the one to fix, and what follows from it (a
// range check of a value that did not parse) is noise.
func (e *Env) Fail(name, format string, args ...any) {
	if !e.Failed(name) {
		e.problems = append(e.problems, Problem{Var: name, Msg: fmt.Sprintf(format, args...)})
	}
}

// FailEach records every one of errs as a problem of name (a file's
// problems, all listed at once).
func (e *Env) FailEach(name string, errs []error) {
	for _, err := range errs {
		p := Problem{Var: name, Msg: err.Error()}
		dup := false
		for _, q := range e.problems {
			dup = dup || q == p
		}
		if !dup {
			e.problems = append(e.problems, p)
		}
	}
}

// Failed reports whether a problem with name was recorded.
func (e *Env) Failed(name string) bool {
	for _, p := range e.problems {
		if p.Var == name {
			return true
		}
	}
	return false
}

// spec returns the declaration of name, checking its kind.
func (e *Env) spec(name string, kinds ...Kind) Var {
	v, ok := e.table.Lookup(name)
	if !ok {
		panic(fmt.Sprintf("envconf: %s is read but not declared in the table", name))
	}
	for _, k := range kinds {
		if v.Kind == k {
			return v
		}
	}
	panic(fmt.Sprintf("envconf: %s is declared as kind %s, read as kind %s", name, v.Kind, kinds[0]))
}

// Raw returns the trimmed value and whether the variable is set at all.
// name is a declared variable, or <secret>_FILE.
func (e *Env) Raw(name string) (string, bool) {
	if base, ok := strings.CutSuffix(name, "_FILE"); ok {
		if v, declared := e.table.Lookup(base); declared && v.Secret {
			return e.raw(name)
		}
	}
	e.spec(name, Text, List, Int, Float, Duration, Bool)
	return e.raw(name)
}

func (e *Env) raw(name string) (string, bool) {
	v, ok := e.lookup(name)
	return strings.TrimSpace(v), ok
}

// text returns the value, or the declared default when unset or empty,
// recording a problem when a required variable is missing.
func (e *Env) text(v Var) string {
	s, _ := e.raw(v.Name)
	if s == "" {
		s = v.Default
	}
	if s == "" && v.Required {
		e.Fail(v.Name, "is required")
	}
	return s
}

// Str returns a Text variable's value, or its default when unset or empty.
func (e *Env) Str(name string) string {
	return e.text(e.spec(name, Text))
}

// Optional distinguishes unset (the default) from set-but-empty (disabled).
func (e *Env) Optional(name string) (value string, disabled bool) {
	v := e.spec(name, Text)
	s, ok := e.raw(name)
	if !ok {
		return v.Default, false
	}
	if s == "" {
		return "", true
	}
	return s, false
}

// Set reports whether a variable is set to a non-empty value (its default
// does not count).
func (e *Env) Set(name string) bool {
	s, _ := e.Raw(name)
	return s != ""
}

// Required returns a Text variable's value, recording a problem when it is
// missing (for variables required only in some configurations).
func (e *Env) Required(name string) string {
	v := e.Str(name)
	if v == "" {
		e.Fail(name, "is required")
	}
	return v
}

// Secret reads a secret: NAME, or the file named by NAME_FILE (not both).
func (e *Env) Secret(name string) string {
	s, _ := e.secret(name)
	return s
}

// secret is Secret; ok is false when a problem was recorded.
func (e *Env) secret(name string) (string, bool) {
	spec := e.spec(name, Text)
	if !spec.Secret {
		panic(fmt.Sprintf("envconf: %s is read as a secret but not declared as one", name))
	}
	v, _ := e.raw(name)
	f, _ := e.raw(name + "_FILE")
	switch {
	case v != "" && f != "":
		e.Fail(name, "set either %s or %s_FILE, not both", name, name)
		return "", false
	case f != "":
		b, err := os.ReadFile(f)
		if err != nil {
			e.Fail(name+"_FILE", "cannot read the secret file: %v", ErrNoPath(err))
			return "", false
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			e.Fail(name+"_FILE", "the secret file is empty")
			return "", false
		}
		e.secrets = append(e.secrets, s)
		return s, true
	}
	if v != "" {
		e.secrets = append(e.secrets, v)
		return v, true
	}
	if spec.Required {
		e.Fail(name, "is required (or %s_FILE)", name)
		return "", false
	}
	return "", true
}

// RequiredSecret is Secret, recording a problem when it is missing (for
// secrets required only in some configurations).
func (e *Env) RequiredSecret(name string) string {
	v, ok := e.secret(name)
	if v == "" && ok {
		e.Fail(name, "is required (or %s_FILE)", name)
	}
	return v
}

// List reads a comma-separated list; blanks are dropped.
func (e *Env) List(name string) []string {
	spec := e.spec(name, List)
	s, _ := e.raw(name)
	if s == "" {
		if spec.Required {
			e.Fail(name, "is required (a comma-separated list)")
		}
		return splitList(spec.Default)
	}
	out := splitList(s)
	if len(out) == 0 {
		e.Fail(name, "is an empty list")
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parsed reads name with parse: def when the variable is unset or empty,
// else parse's value; when parse fails, its error is name's problem and
// the value is def.
func parsed[T any](e *Env, name string, def T, parse func(v string) (T, error)) T {
	v, _ := e.raw(name)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		e.Fail(name, "%v", err)
		return def
	}
	return x
}

// Int reads an integer within the declared bounds.
func (e *Env) Int(name string) int {
	def, lo, hi := e.spec(name, Int).ints()
	return parsed(e, name, def, func(v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", v)
		}
		if n < lo || n > hi {
			return 0, fmt.Errorf("%d is out of range [%d, %d]", n, lo, hi)
		}
		return n, nil
	})
}

// Float reads a number within the declared bounds.
func (e *Env) Float(name string) float64 {
	def, lo, hi := e.spec(name, Float).floats()
	return parsed(e, name, def, func(v string) (float64, error) {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < lo || f > hi {
			return 0, fmt.Errorf("%q is not a number in [%g, %g]", v, lo, hi)
		}
		return f, nil
	})
}

// Duration reads a Go duration within the declared bounds.
func (e *Env) Duration(name string) time.Duration {
	def, lo, hi := e.spec(name, Duration).durations()
	return parsed(e, name, def, func(v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (examples: 30s, 5m, 4h)", v)
		}
		if d < lo || d > hi {
			return 0, fmt.Errorf("%s is out of range [%s, %s]", d, lo, hi)
		}
		return d, nil
	})
}

// Bool reads a boolean.
func (e *Env) Bool(name string) bool {
	return parsed(e, name, e.spec(name, Bool).bool(), func(v string) (bool, error) {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%q is not a boolean (true/false)", v)
		}
		return b, nil
	})
}

// NotAbove records a problem with lo when the value of lo exceeds that of
// hi (a pair of bounds, such as POLL_INTERVAL_MIN and POLL_INTERVAL_MAX),
// unless either already has a problem.
func (e *Env) NotAbove(lo string, loV time.Duration, hi string, hiV time.Duration) {
	if loV > hiV && !e.Failed(lo) && !e.Failed(hi) {
		e.Fail(lo, "%s is more than %s (%s)", loV, hi, hiV)
	}
}

// URL validates a service base URL read from name: https, unless insecure
// allows http and loopback/private literal hosts.
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
