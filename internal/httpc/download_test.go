package httpc

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func newTestDownloader(t *testing.T, cfg DownloadConfig) *Downloader {
	t.Helper()
	d := NewDownloader(cfg)
	t.Cleanup(d.c.closeIdle)
	return d
}

// requireRefused asserts a permanent download refusal that names no secret.
func requireRefused(t *testing.T, err error) {
	t.Helper()
	require.ErrorIs(t, err, ErrDownloadRefused)
	require.False(t, IsRetryable(err), "a refusal is permanent: %v", err)
	requireNoSecret(t, err)
}

// countingListener accepts loopback TCP connections and counts them; it
// proves a refused download never even connected.
func countingListener(t *testing.T) (port string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	_, port, err = net.SplitHostPort(ln.Addr().String())
	require.NoError(t, err)
	return port, accepted
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name     string
		hosts    []string
		insecure bool
		url      string
		ok       bool
	}{
		{"https on a suffix", []string{".amazonaws.com"}, false, "https://bucket.s3.amazonaws.com/x.zip?X-Amz-Signature=s", true},
		{"suffix with port", []string{".amazonaws.com"}, false, "https://bucket.s3.amazonaws.com:8443/x", true},
		{"host case-insensitive", []string{".AmazonAWS.com"}, false, "HTTPS://Bucket.S3.AMAZONAWS.COM/x", true},
		{"dot suffix excludes the bare domain", []string{".amazonaws.com"}, false, "https://amazonaws.com/x", false},
		{"dot suffix is not a string suffix", []string{".amazonaws.com"}, false, "https://evilamazonaws.com/x", false},
		{"bare domain allows itself", []string{"amazonaws.com"}, false, "https://amazonaws.com/x", true},
		{"bare domain allows subdomains", []string{"amazonaws.com"}, false, "https://bucket.s3.amazonaws.com/x", true},
		{"bare domain is not a string suffix", []string{"amazonaws.com"}, false, "https://evilamazonaws.com/x", false},
		{"allowed name as a prefix", []string{"amazonaws.com"}, false, "https://amazonaws.com.evil.example/x", false},
		{"allowed name in the query", []string{".amazonaws.com"}, false, "https://evil.example/?h=.amazonaws.com", false},
		{"allowed name in the fragment", []string{".amazonaws.com"}, false, "https://evil.example#.amazonaws.com", false},
		{"allowed name in the path", []string{".amazonaws.com"}, false, "https://evil.example/.amazonaws.com", false},
		{"allowed name as user info", []string{".amazonaws.com"}, false, "https://x.amazonaws.com@evil.example/", false},
		{"trailing-dot FQDN not matched", []string{".amazonaws.com"}, false, "https://bucket.s3.amazonaws.com./x", false},
		{"second entry", []string{"example.net", " .blob.core.windows.net "}, false, "https://acct.blob.core.windows.net/c/b", true},
		{"empty allow-list", nil, false, "https://bucket.s3.amazonaws.com/x", false},
		{"blank entries allow nothing", []string{"", "  ", "."}, false, "https://bucket.s3.amazonaws.com/x", false},
		{"http without Insecure", []string{".amazonaws.com"}, false, "http://bucket.s3.amazonaws.com/x", false},
		{"http with Insecure", []string{".amazonaws.com"}, true, "http://bucket.s3.amazonaws.com/x", true},
		{"ftp", []string{".amazonaws.com"}, true, "ftp://bucket.s3.amazonaws.com/x", false},
		{"file", []string{".amazonaws.com"}, true, "file:///etc/passwd", false},
		{"no scheme", []string{".amazonaws.com"}, true, "bucket.s3.amazonaws.com/x", false},
		{"protocol-relative", []string{".amazonaws.com"}, true, "//bucket.s3.amazonaws.com/x", false},
		{"user info", []string{".amazonaws.com"}, false, "https://AKIA:secret@bucket.s3.amazonaws.com/x", false},
		{"user name only", []string{".amazonaws.com"}, false, "https://AKIA@bucket.s3.amazonaws.com/x", false},
		{"no host", []string{".amazonaws.com"}, false, "https:///x", false},
		{"port only", []string{".amazonaws.com"}, false, "https://:443/x", false},
		{"unparseable", []string{".amazonaws.com"}, false, "https://bucket.s3.amazonaws.com/%zz", false},
		{"control character", []string{".amazonaws.com"}, false, "https://bucket.s3.amazonaws.com/\x00", false},
		{"loopback name needs Insecure", nil, false, "https://localhost/x", false},
		{"loopback name with Insecure", nil, true, "http://localhost:8080/x", true},
		{"loopback IP with Insecure", nil, true, "http://127.0.0.1:8080/x", true},
		{"loopback IPv6 with Insecure", nil, true, "http://[::1]:8080/x", true},
		{"private IP even with Insecure", nil, true, "http://10.0.0.1/x", false},
		{"metadata IP even with Insecure", nil, true, "http://169.254.169.254/latest/meta-data/", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := newTestDownloader(t, DownloadConfig{Hosts: c.hosts, Insecure: c.insecure})
			u, err := d.CheckURL(c.url)
			if c.ok {
				require.NoError(t, err)
				require.NotNil(t, u)
				return
			}
			require.Nil(t, u)
			requireRefused(t, err)
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func TestCheckAddr(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		addr             string
		secure, insecure bool // allowed without / with Insecure
	}{
		{"93.184.216.34:443", true, true},
		{"52.216.0.1:443", true, true},
		{"[2606:4700::1111]:443", true, true},
		{"127.0.0.1:443", false, true},
		{"127.255.255.254:80", false, true},
		{"[::1]:443", false, true},
		{"[::ffff:127.0.0.1]:443", false, true},
		{"10.0.0.1:443", false, false},
		{"172.16.0.1:443", false, false},
		{"172.31.255.255:443", false, false},
		{"192.168.1.10:443", false, false},
		{"192.168.0.1:80", false, false},
		{"169.254.169.254:80", false, false},
		{"169.254.170.2:80", false, false}, // ECS task metadata
		{"[::ffff:169.254.169.254]:80", false, false},
		{"[::ffff:10.0.0.1]:80", false, false},
		{"[fd00:ec2::254]:80", false, false},
		{"[fc00::1]:443", false, false},
		{"[fe80::1%25eth0]:443", false, false},
		{"[fe80::1]:443", false, false},
		{"0.0.0.0:443", false, false},
		{"0.1.2.3:443", false, false},
		{"[::]:443", false, false},
		{"100.64.0.1:443", false, false},
		{"100.100.100.200:80", false, false}, // Alibaba metadata (CGNAT range)
		{"192.0.0.170:80", false, false},
		{"198.18.0.1:80", false, false},
		{"224.0.0.1:80", false, false},
		{"[ff02::1]:80", false, false},
		{"240.0.0.1:80", false, false},
		{"255.255.255.255:80", false, false},
		{"[64:ff9b::a9fe:a9fe]:80", false, false},
		{"[2001:db8::1]:80", false, false},
		{"localhost:80", false, false}, // not an address: refused
		{"127.0.0.1", false, false},    // no port
		{"", false, false},
	} {
		for _, insecure := range []bool{false, true} {
			want := c.secure
			if insecure {
				want = c.insecure
			}
			d := &Downloader{cfg: DownloadConfig{Insecure: insecure}}
			err := d.checkAddr(strings.ReplaceAll(c.addr, "%25", "%"))
			if want {
				require.NoError(t, err, "%s insecure=%v", c.addr, insecure)
			} else {
				require.ErrorIs(t, err, ErrDownloadRefused, "%s insecure=%v", c.addr, insecure)
			}
		}
	}
}

func TestDownloadRefusesHTTPWithoutInsecure(t *testing.T) {
	t.Parallel()
	port, accepted := countingListener(t)
	d := newTestDownloader(t, DownloadConfig{Hosts: []string{"127.0.0.1", "localhost"}})
	_, err := d.Get(t.Context(), "http://127.0.0.1:"+port+signedPath("/x"))
	requireRefused(t, err)
	require.Contains(t, err.Error(), `scheme "http"`)
	require.Zero(t, accepted.Load())
}

func TestDownloadRefusesUnlistedHost(t *testing.T) {
	t.Parallel()
	port, accepted := countingListener(t)
	d := newTestDownloader(t, DownloadConfig{Hosts: []string{".amazonaws.com"}})
	_, err := d.Get(t.Context(), "https://127.0.0.1:"+port+signedPath("/x"))
	requireRefused(t, err)
	require.Contains(t, err.Error(), "DOWNLOAD_HOSTS")
	_, err = d.Get(t.Context(), "https://evilamazonaws.com"+signedPath("/x"))
	requireRefused(t, err)
	require.Zero(t, accepted.Load())
}

func TestDownloadRefusesUserInfo(t *testing.T) {
	t.Parallel()
	port, accepted := countingListener(t)
	d := newTestDownloader(t, DownloadConfig{Insecure: true})
	_, err := d.Get(t.Context(), "http://AKIAEXAMPLE:"+fakeSig+"@127.0.0.1:"+port+"/x")
	requireRefused(t, err)
	require.Contains(t, err.Error(), "user info")
	require.Zero(t, accepted.Load())
}

// A name on the allow-list that resolves to loopback passes the URL check;
// the dialer refuses it before connecting.
func TestDownloadDialRefusesLoopback(t *testing.T) {
	t.Parallel()
	port, accepted := countingListener(t)
	d := newTestDownloader(t, DownloadConfig{Hosts: []string{"localhost", "127.0.0.1"}})
	for _, host := range []string{"localhost", "127.0.0.1"} {
		raw := "https://" + host + ":" + port + signedPath("/export.zip")
		_, err := d.CheckURL(raw)
		require.NoError(t, err, "the URL itself is acceptable")
		_, err = d.Get(t.Context(), raw)
		requireRefused(t, err)
	}
	require.Zero(t, accepted.Load(), "no connection may be made")
}

// Control runs before connect(2): no packet leaves for these addresses.
func TestDownloadDialRefusesPrivateEvenInsecure(t *testing.T) {
	t.Parallel()
	d := newTestDownloader(t, DownloadConfig{
		Insecure: true,
		Hosts:    []string{"10.0.0.1", "169.254.169.254", "192.168.1.1"},
		Timeout:  5 * time.Second,
	})
	for _, raw := range []string{
		"http://10.0.0.1:9" + signedPath("/x"),
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/?" + fakeSig,
		"http://192.168.1.1:9/x?X-Amz-Signature=" + fakeSig,
	} {
		_, err := d.Get(t.Context(), raw)
		requireRefused(t, err)
	}
}

type recordedRequest struct {
	path   string
	query  string
	header http.Header
}

// downloadServer serves redirects and files; it records every request.
type downloadServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recordedRequest
}

func (s *downloadServer) requests() []recordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recordedRequest(nil), s.reqs...)
}

func startDownloadServer(t *testing.T, route func(w http.ResponseWriter, r *http.Request)) *downloadServer {
	t.Helper()
	s := &downloadServer{}
	s.Server = startServer(t, func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.reqs = append(s.reqs, recordedRequest{r.URL.Path, r.URL.RawQuery, r.Header.Clone()})
		s.mu.Unlock()
		route(w, r)
	})
	return s
}

func redirectTo(w http.ResponseWriter, loc string) {
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusFound)
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func TestDownloadRedirects(t *testing.T) {
	t.Parallel()
	b := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "export from B")
	})
	bPort := b.Listener.Addr().(*net.TCPAddr).Port
	a := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-b":
			redirectTo(w, "http://localhost:"+strconv.Itoa(bPort)+signedPath("/file"))
		case "/relative":
			redirectTo(w, "/file")
		case "/to-evil":
			redirectTo(w, "http://evil.example/steal?X-Amz-Signature="+fakeSig)
		case "/to-evil-suffix":
			redirectTo(w, "https://evilamazonaws.com/x")
		case "/to-metadata":
			redirectTo(w, "http://169.254.169.254/latest/meta-data/")
		case "/to-private":
			redirectTo(w, "http://10.0.0.1:9/x")
		case "/to-file":
			redirectTo(w, "file:///etc/passwd")
		case "/to-userinfo":
			redirectTo(w, "http://u:"+fakeSig+"@localhost:"+strconv.Itoa(bPort)+"/file")
		case "/bad-location":
			redirectTo(w, "http://[::1/%zz")
		case "/file":
			_, _ = io.WriteString(w, "export from A")
		default:
			http.NotFound(w, r)
		}
	})
	d := newTestDownloader(t, DownloadConfig{
		Insecure:  true,
		Hosts:     []string{".amazonaws.com", "169.254.169.254", "10.0.0.1"},
		UserAgent: "analysisfleet-test",
	})

	resp, err := d.Get(t.Context(), a.URL+"/to-b")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "export from B", readBody(t, resp))
	bReqs := b.requests()
	require.Len(t, bReqs, 1)
	require.Equal(t, "/file", bReqs[0].path)
	require.Contains(t, bReqs[0].query, fakeSig, "the pre-signed query reaches the allowed hop intact")

	resp, err = d.Get(t.Context(), a.URL+"/relative")
	require.NoError(t, err)
	require.Equal(t, "export from A", readBody(t, resp))

	t.Run("refused", func(t *testing.T) {
		for _, p := range []string{"/to-evil", "/to-evil-suffix", "/to-metadata", "/to-private", "/to-file", "/to-userinfo"} {
			t.Run(p, func(t *testing.T) {
				t.Parallel()
				_, err := d.Get(t.Context(), a.URL+p+"?X-Amz-Signature="+fakeSig)
				requireRefused(t, err)
			})
		}
	})
	// net/http parses Location before CheckRedirect: an unparseable one
	// fails the request (not as a refusal) and never reaches a second hop.
	_, err = d.Get(t.Context(), a.URL+"/bad-location?X-Amz-Signature="+fakeSig)
	requireNoSecret(t, err)
	require.Len(t, b.requests(), 1, "the user-info redirect never reached B")
}

func TestDownloadMaxRedirects(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		max, hops int
		ok        bool
	}{
		{0, DefaultMaxRedirects, true}, // default
		{0, DefaultMaxRedirects + 1, false},
		{1, 1, true},
		{1, 2, false},
		{5, 5, true},
		{5, 6, false},
		{0, 50, false},
	} {
		t.Run(strconv.Itoa(c.max)+"/"+strconv.Itoa(c.hops), func(t *testing.T) {
			t.Parallel()
			// /r/N redirects to /r/N-1; /r/0 is the file.
			s := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
				n, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/r/"))
				if err != nil {
					http.NotFound(w, r)
					return
				}
				if n == 0 {
					_, _ = io.WriteString(w, "file")
					return
				}
				redirectTo(w, "/r/"+strconv.Itoa(n-1)+"?X-Amz-Signature="+fakeSig)
			})
			d := newTestDownloader(t, DownloadConfig{Insecure: true, MaxRedirects: c.max})
			resp, err := d.Get(t.Context(), s.URL+"/r/"+strconv.Itoa(c.hops))
			if c.ok {
				require.NoError(t, err)
				require.Equal(t, "file", readBody(t, resp))
				require.Len(t, s.requests(), c.hops+1)
				return
			}
			requireRefused(t, err)
			require.ErrorContains(t, err, "too many redirects")
			limit := c.max
			if limit == 0 {
				limit = DefaultMaxRedirects
			}
			require.Len(t, s.requests(), limit+1, "stops at the hop over the limit")
		})
	}
}

func TestDownloadSendsNoCredentials(t *testing.T) {
	t.Parallel()
	var hops atomic.Int32
	s := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
		if hops.Add(1) < 3 {
			redirectTo(w, "/next?X-Amz-Signature="+fakeSig)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	d := newTestDownloader(t, DownloadConfig{Insecure: true, UserAgent: "analysisfleet/test"})
	resp, err := d.Get(t.Context(), s.URL+signedPath("/start"))
	require.NoError(t, err)
	require.Equal(t, "ok", readBody(t, resp))
	reqs := s.requests()
	require.Len(t, reqs, 3)
	for _, r := range reqs {
		for _, h := range []string{"Authorization", "X-Auth-Token", "Cookie", "Proxy-Authorization", "Argus-Api-Key", "X-Api-Key"} {
			require.Empty(t, r.header.Values(h), "%s sent to %s", h, r.path)
		}
		require.Equal(t, "analysisfleet/test", r.header.Get("User-Agent"))
	}
}

func TestDownloadMaxBody(t *testing.T) {
	t.Parallel()
	s := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = io.WriteString(w, strings.Repeat("z", n))
	})
	d := newTestDownloader(t, DownloadConfig{Insecure: true, MaxBody: 100})

	resp, err := d.Get(t.Context(), s.URL+"/f?n=100")
	require.NoError(t, err)
	require.Len(t, readBody(t, resp), 100)

	for _, n := range []int{101, 1 << 20} {
		resp, err = d.Get(t.Context(), s.URL+"/f?n="+strconv.Itoa(n)+"&X-Amz-Signature="+fakeSig)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
		require.ErrorIs(t, err, ErrTooLarge)
		require.LessOrEqual(t, len(b), 101)
	}
}

// Object stores echo the signed request in their error bodies (S3's
// SignatureDoesNotMatch carries the canonical query string).
func TestDownloadStatusErrorsCarryNoQuery(t *testing.T) {
	t.Parallel()
	s := startDownloadServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "4")
		status, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "<Error><Code>SignatureDoesNotMatch</Code><CanonicalRequest>GET "+
			r.URL.Path+" "+r.URL.RawQuery+"</CanonicalRequest></Error>")
	})
	d := newTestDownloader(t, DownloadConfig{Insecure: true})
	for _, c := range []struct {
		status    int
		retryable bool
	}{{400, false}, {403, false}, {404, false}, {410, false}, {429, true}, {500, true}, {503, true}} {
		_, err := d.Get(t.Context(), s.URL+signedPath("/"+strconv.Itoa(c.status)))
		var se *StatusError
		require.ErrorAs(t, err, &se)
		require.Equal(t, c.status, se.Status)
		require.Equal(t, 4*time.Second, se.RetryAfter)
		require.Equal(t, c.retryable, IsRetryable(err))
		require.Equal(t, s.URL+"/"+strconv.Itoa(c.status), se.Path)
		requireNoSecret(t, err)
	}
}

func TestDownloadTimeout(t *testing.T) {
	t.Parallel()
	srv := startReleasable(t, func(release <-chan struct{}) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow-body" {
				_, _ = io.WriteString(w, "part")
				w.(http.Flusher).Flush()
			}
			hang(w, r, release)
		}
	})
	d := newTestDownloader(t, DownloadConfig{Insecure: true, Timeout: 100 * time.Millisecond})

	_, err := d.Get(t.Context(), srv.URL+signedPath("/hang"))
	var te *TransportError
	require.ErrorAs(t, err, &te)
	require.True(t, IsRetryable(err))
	requireNoSecret(t, err)

	resp, err := d.Get(t.Context(), srv.URL+signedPath("/slow-body"))
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.ErrorAs(t, err, &te)
	requireNoSecret(t, err)
}

func TestDownloadContextCanceled(t *testing.T) {
	t.Parallel()
	port, _ := countingListener(t)
	d := newTestDownloader(t, DownloadConfig{Insecure: true})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := d.Get(ctx, "http://127.0.0.1:"+port+signedPath("/x"))
	require.True(t, errors.Is(err, ctx.Err()), "%v", err)
	requireNoSecret(t, err)
}

func TestDownloadErrorsNeverContainTheURL(t *testing.T) {
	t.Parallel()
	d := newTestDownloader(t, DownloadConfig{Hosts: []string{".amazonaws.com"}})
	for _, raw := range []string{
		"http://bucket.s3.amazonaws.com" + signedPath("/x"),
		"https://evil.example" + signedPath("/x"),
		"https://AKIAEXAMPLE:" + fakeSig + "@bucket.s3.amazonaws.com/x",
		"https://bucket.s3.amazonaws.com/%zz" + signedPath(""),
		"gopher://x" + signedPath("/"),
	} {
		_, err := d.Get(t.Context(), raw)
		requireRefused(t, err)
		u, _ := url.Parse(raw)
		if u != nil && u.Path != "" && u.Path != "/" {
			require.NotContains(t, err.Error(), raw)
		}
	}
}
