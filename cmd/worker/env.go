package main

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

// env reads the configuration contract: each getter records the first
// problem, naming the variable, so main can print one clear line and exit 2.
// Secrets may come from <NAME>_FILE instead of <NAME>.
type env struct {
	lookup func(string) (string, bool)
	err    error
}

func newEnv(lookup func(string) (string, bool)) *env {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &env{lookup: lookup}
}

func (e *env) fail(name, format string, args ...any) {
	if e.err == nil {
		e.err = fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
}

// raw returns the trimmed value and whether the variable is set at all.
func (e *env) raw(name string) (string, bool) {
	v, ok := e.lookup(name)
	return strings.TrimSpace(v), ok
}

func (e *env) str(name, def string) string {
	if v, ok := e.raw(name); ok && v != "" {
		return v
	}
	return def
}

// optional distinguishes unset (default) from set-but-empty (disabled).
func (e *env) optional(name, def string) (value string, disabled bool) {
	v, ok := e.raw(name)
	if !ok {
		return def, false
	}
	if v == "" {
		return "", true
	}
	return v, false
}

func (e *env) required(name string) string {
	v := e.str(name, "")
	if v == "" {
		e.fail(name, "is required")
	}
	return v
}

// secret reads NAME, or the file named by NAME_FILE (not both).
func (e *env) secret(name string) string {
	v, hasV := e.raw(name)
	f, hasF := e.raw(name + "_FILE")
	switch {
	case hasV && v != "" && hasF && f != "":
		e.fail(name, "set either %s or %s_FILE, not both", name, name)
		return ""
	case hasF && f != "":
		b, err := os.ReadFile(f)
		if err != nil {
			e.fail(name+"_FILE", "cannot read the secret file: %v", errNoPath(err))
			return ""
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			e.fail(name+"_FILE", "the secret file is empty")
		}
		return s
	}
	return v
}

func (e *env) requiredSecret(name string) string {
	v := e.secret(name)
	if v == "" {
		e.fail(name, "is required (or %s_FILE)", name)
	}
	return v
}

func (e *env) list(name string, def []string) []string {
	v := e.str(name, "")
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
		e.fail(name, "is an empty list")
	}
	return out
}

func (e *env) integer(name string, def, lo, hi int) int {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.fail(name, "%q is not an integer", v)
		return def
	}
	if n < lo || n > hi {
		e.fail(name, "%d is out of range [%d, %d]", n, lo, hi)
		return def
	}
	return n
}

func (e *env) float(name string, def, lo, hi float64) float64 {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		e.fail(name, "%q is not a number in [%g, %g]", v, lo, hi)
		return def
	}
	return f
}

func (e *env) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.fail(name, "%q is not a duration (examples: 30s, 5m, 4h)", v)
		return def
	}
	if d < lo || d > hi {
		e.fail(name, "%s is out of range [%s, %s]", d, lo, hi)
		return def
	}
	return d
}

func (e *env) boolean(name string, def bool) bool {
	v := e.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, "%q is not a boolean (true/false)", v)
		return def
	}
	return b
}

// httpURL validates a service base URL: https, unless insecure allows http
// and loopback/private literal hosts.
func (e *env) httpURL(name, v string, insecure bool) string {
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		e.fail(name, "%q is not an http(s) URL", redactURL(v))
		return ""
	}
	if u.User != nil {
		e.fail(name, "must not carry credentials in the URL")
		return ""
	}
	if insecure {
		return strings.TrimRight(v, "/")
	}
	if u.Scheme != "https" {
		e.fail(name, "must be https:// (set INSECURE_HTTP=true only for development and tests)")
		return ""
	}
	if isLocalHost(u.Hostname()) {
		e.fail(name, "points at a loopback or private address (set INSECURE_HTTP=true only for development and tests)")
		return ""
	}
	return strings.TrimRight(v, "/")
}

func isLocalHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	if err != nil {
		return false
	}
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "worker"
	}
	return h
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable>"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}

// errNoPath drops the file path from an os error (the message names the
// variable already).
func errNoPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
