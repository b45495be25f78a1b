// Package redact keeps credentials out of everything the fleet writes down:
// logs, error texts stored in the ledger, SampleDB and the result topic.
//
// Vendors echo what they were sent ("403 invalid token \"SECRET/ID\"", a
// token endpoint quoting the form body it refused), in whatever encoding the
// request used. A Set knows each secret in every form it can take on the
// wire — raw, percent-encoded (query and path style, either hex case),
// JSON-escaped, base64 (standard and URL alphabets, padded or not), and the
// base64 of "user:password" that HTTP Basic auth sends — and replaces any of
// them with Mask. One Set is built per process from the configuration (and
// grows as drivers fetch access tokens); the worker's logger is wrapped with
// Core, and the runner passes every error text it stores through String.
//
// A nil *Set redacts nothing. A Set is safe for concurrent use.
package redact

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Mask replaces a secret.
const Mask = "[REDACTED]"

// MinLen is the shortest secret form replaced: shorter strings would mask
// ordinary text, and no real credential is that short.
const MinLen = 6

// MaxForms bounds the set (access tokens are added as they are fetched; the
// oldest go first).
const MaxForms = 4096

// Set is a set of secrets in all their wire forms.
type Set struct {
	mu    sync.RWMutex
	order []string // insertion order, for eviction
	forms map[string]struct{}
	r     *strings.Replacer
}

// New returns a Set holding secrets.
func New(secrets ...string) *Set {
	s := &Set{forms: map[string]struct{}{}}
	s.Add(secrets...)
	return s
}

// Add adds secrets, in every form each may take.
func (s *Set) Add(secrets ...string) {
	if s == nil {
		return
	}
	var forms []string
	for _, x := range secrets {
		forms = append(forms, Forms(x)...)
	}
	s.add(forms)
}

// AddBasic adds the HTTP Basic credentials of user and password: the base64
// of "user:password" (and the password alone, in every form).
func (s *Set) AddBasic(user, password string) {
	if s == nil || password == "" {
		return
	}
	forms := Forms(password)
	forms = append(forms, b64(user+":"+password)...)
	s.add(forms)
}

func (s *Set) add(forms []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, f := range forms {
		if len(f) < MinLen {
			continue
		}
		if _, ok := s.forms[f]; ok {
			continue
		}
		s.forms[f] = struct{}{}
		s.order = append(s.order, f)
		changed = true
	}
	for len(s.order) > MaxForms {
		delete(s.forms, s.order[0])
		s.order = s.order[1:]
	}
	if changed {
		s.r = nil // rebuilt by the next String
	}
}

// replacer returns the replacer for the current forms, building it when
// forms were added since the last call.
func (s *Set) replacer() *strings.Replacer {
	s.mu.RLock()
	r, n := s.r, len(s.forms)
	s.mu.RUnlock()
	if r != nil || n == 0 {
		return r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r != nil {
		return s.r
	}
	all := make([]string, 0, len(s.forms))
	for f := range s.forms {
		all = append(all, f)
	}
	// Longest first: a form that contains another is replaced whole.
	sort.Slice(all, func(i, j int) bool {
		if len(all[i]) != len(all[j]) {
			return len(all[i]) > len(all[j])
		}
		return all[i] < all[j]
	})
	pairs := make([]string, 0, 2*len(all))
	for _, f := range all {
		pairs = append(pairs, f, Mask)
	}
	s.r = strings.NewReplacer(pairs...)
	return s.r
}

// Len returns how many forms the set holds.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.forms)
}

// String returns v with every secret form replaced by Mask.
func (s *Set) String(v string) string {
	if s == nil || v == "" {
		return v
	}
	r := s.replacer()
	if r == nil {
		return v
	}
	return r.Replace(v)
}

// MinCut is the shortest start of a secret form Snippet masks at the end of
// a text.
const MinCut = 8

// Snippet is String for a text that may have been cut short, such as the
// first bytes of a response body kept in an error: a secret form cut off by
// the end of v (at least MinCut of its first bytes) is masked too.
func (s *Set) Snippet(v string) string {
	v = s.String(v)
	if s == nil || len(v) < MinCut {
		return v
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	cut := 0 // the longest secret start v ends with
	for f := range s.forms {
		// Only where v's tail begins with f's first byte can f start.
		for i := max(len(v)-len(f)+1, 0); i <= len(v)-MinCut; i++ {
			if len(v)-i <= cut {
				break
			}
			if v[i] == f[0] && strings.HasPrefix(f, v[i:]) {
				cut = len(v) - i
				break
			}
		}
	}
	if cut == 0 {
		return v
	}
	return v[:len(v)-cut] + Mask
}

// Error returns err with its text redacted. errors.Is and errors.As still
// see the original chain (sentinels and typed errors keep working); only the
// text changes. It returns err itself when there is nothing to redact.
func (s *Set) Error(err error) error {
	if err == nil || s == nil {
		return err
	}
	msg := err.Error()
	red := s.String(msg)
	if red == msg {
		return err
	}
	return &redacted{msg: red, err: err}
}

type redacted struct {
	msg string
	err error
}

func (e *redacted) Error() string { return e.msg }
func (e *redacted) Unwrap() error { return e.err }

// IsRedacted reports whether err's text was changed by a Set.
func IsRedacted(err error) bool {
	var r *redacted
	return errors.As(err, &r)
}

var pctRe = regexp.MustCompile(`%[0-9A-F]{2}`)

// Forms returns the wire forms of secret x (x itself first).
func Forms(x string) []string {
	if x == "" {
		return nil
	}
	out := []string{x}
	for _, esc := range []string{url.QueryEscape(x), url.PathEscape(x), strings.ReplaceAll(url.QueryEscape(x), "+", "%20")} {
		out = append(out, esc, pctRe.ReplaceAllStringFunc(esc, strings.ToLower))
	}
	for _, html := range []bool{true, false} {
		var sb strings.Builder
		enc := json.NewEncoder(&sb)
		enc.SetEscapeHTML(html)
		if enc.Encode(x) == nil {
			j := strings.TrimSuffix(sb.String(), "\n")
			j = j[1 : len(j)-1]
			out = append(out, j, strings.ReplaceAll(j, "/", `\/`))
		}
	}
	out = append(out, b64(x)...)
	return out
}

func b64(x string) []string {
	b := []byte(x)
	return []string{
		base64.StdEncoding.EncodeToString(b), base64.URLEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b), base64.RawURLEncoding.EncodeToString(b),
	}
}
