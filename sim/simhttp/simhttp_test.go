package simhttp

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The request log counts the bytes each request carried both ways, and can
// be read in increments.
func TestLogCountsBytesAndReadsIncrementally(t *testing.T) {
	t.Parallel()
	k := New()
	h := k.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write([]byte(strings.Repeat("x", 2*len(b))))
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer k.Close()
	for _, body := range []string{"hello", "0123456789"} {
		resp, err := http.Post(srv.URL+"/api", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := k.Len(); n != 2 {
		t.Fatalf("Len = %d, want 2", n)
	}
	got := k.RequestsFrom(1)
	if len(got) != 1 || got[0].BytesIn != 10 || got[0].BytesOut != 20 {
		t.Fatalf("RequestsFrom(1) = %+v, want one request of 10 bytes in, 20 out", got)
	}
	if all := k.Requests(); all[0].BytesIn != 5 || all[0].BytesOut != 10 {
		t.Fatalf("first request = %+v, want 5 bytes in, 10 out", all[0])
	}
	if n := len(k.RequestsFrom(5)); n != 0 {
		t.Fatalf("RequestsFrom past the end = %d entries", n)
	}
}

// A token is valid until its expiry and until Revoke; Issued counts every
// token issued, revoked ones too. The zero Tokens is ready to use.
func TestTokens(t *testing.T) {
	t.Parallel()
	var ts Tokens
	now := time.Unix(1_700_000_000, 0)
	if ts.Valid("a", now) || ts.Issued() != 0 || len(ts.List()) != 0 {
		t.Fatal("the zero Tokens holds a token")
	}
	ts.Issue("a", now.Add(time.Minute))
	ts.Issue("b", now.Add(2*time.Minute))
	if !ts.Valid("a", now) || !ts.Valid("b", now.Add(time.Minute)) {
		t.Fatal("an issued token is not valid before its expiry")
	}
	if ts.Valid("a", now.Add(time.Minute)) || ts.Valid("c", now) || ts.Valid("", now) {
		t.Fatal("an expired or unknown token is valid")
	}
	if got := ts.List(); len(got) != 2 {
		t.Fatalf("List = %v, want both tokens (expired ones stay)", got)
	}
	ts.Revoke()
	if ts.Valid("b", now) || len(ts.List()) != 0 {
		t.Fatal("a revoked token is still held")
	}
	if n := ts.Issued(); n != 2 {
		t.Fatalf("Issued = %d, want 2", n)
	}
}
