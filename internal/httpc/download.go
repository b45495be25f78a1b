package httpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrDownloadRefused is wrapped by every refusal of a download target: wrong
// scheme, host not on the allow-list, a forbidden address, too many redirects.
// It is permanent.
var ErrDownloadRefused = errors.New("download target refused")

// DefaultMaxRedirects bounds the redirect hops a download follows.
const DefaultMaxRedirects = 3

// DownloadConfig configures a Downloader.
type DownloadConfig struct {
	// Hosts are the allowed host suffixes (".amazonaws.com" allows
	// "bucket.s3.amazonaws.com"; "example.com" allows exactly that host and
	// its subdomains).
	Hosts []string
	// Insecure allows http:// and loopback targets (development and tests).
	// Link-local, private and metadata addresses stay refused.
	Insecure bool
	// UserAgent, Timeout and MaxBody as in Config.
	UserAgent string
	Timeout   time.Duration
	MaxBody   int64
	// MaxRedirects bounds redirect hops. Default DefaultMaxRedirects.
	MaxRedirects int
	// Wrap, if set, wraps the guarded transport (metrics).
	Wrap func(http.RoundTripper) http.RoundTripper
}

// Downloader fetches pre-signed URLs: with no credentials, https only, to
// allow-listed hosts, refusing at dial time any address that is loopback
// (unless Insecure), private, link-local or unspecified, re-checking every
// redirect hop. It never puts the URL in an error. Safe for concurrent use.
type Downloader struct {
	cfg DownloadConfig
	c   *Client
}

// NewDownloader returns a Downloader for cfg.
func NewDownloader(cfg DownloadConfig) *Downloader {
	d := &Downloader{cfg: cfg}
	dialer := &net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			return d.checkAddr(address)
		},
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a proxy would hide the real target from the dial check
	tr.DialContext = GuardDial(dialer.DialContext)
	HTTP1Only(tr)
	var rt http.RoundTripper = tr
	if cfg.Wrap != nil {
		rt = cfg.Wrap(tr)
	}
	d.c = New(Config{
		Service:   "download",
		UserAgent: cfg.UserAgent,
		Timeout:   cfg.Timeout,
		MaxBody:   cfg.MaxBody,
		Transport: rt,
		// The download host is a third party (S3): it learns nothing of ours.
		NoCorrelation: true,
	})
	return d
}

// Get fetches raw and returns the open, size-capped body. The caller closes
// it. Redirects are followed (at most MaxRedirects), each hop checked.
func (d *Downloader) Get(ctx context.Context, raw string) (*http.Response, error) {
	target := raw
	for hop := 0; ; hop++ {
		u, err := d.CheckURL(target)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("download: %w", ErrDownloadRefused)
		}
		resp, cancel, err := d.c.send(req)
		if err != nil {
			var te *TransportError
			if errors.As(err, &te) && errors.Is(err, ErrDownloadRefused) {
				// Refused at dial time by checkAddr: permanent, so not
				// wrapped in the (retryable) TransportError.
				return nil, fmt.Errorf("%s %s %s: %w", te.Service, te.Method, te.Path, te.Err)
			}
			return nil, err
		}
		if resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != "" {
			loc, lerr := u.Parse(resp.Header.Get("Location"))
			resp.Body.Close()
			cancel()
			if lerr != nil {
				return nil, fmt.Errorf("download: bad redirect location: %w", ErrDownloadRefused)
			}
			if hop+1 > cmp.Or(d.cfg.MaxRedirects, DefaultMaxRedirects) {
				return nil, fmt.Errorf("download: too many redirects: %w", ErrDownloadRefused)
			}
			target = loc.String()
			continue
		}
		if resp.StatusCode >= 300 {
			defer cancel()
			defer resp.Body.Close()
			// The body is dropped: object stores echo the signed query
			// string in their errors (S3 SignatureDoesNotMatch).
			_, _ = readCapped(resp.Body, 64<<10)
			if err := d.c.finish(req, resp, nil).Err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("download: unexpected status %d", resp.StatusCode)
		}
		max := cmp.Or(d.cfg.MaxBody, DefaultMaxBody)
		resp.Body = &streamBody{
			r:      io.LimitReader(resp.Body, max+1),
			max:    max,
			closer: resp.Body,
			cancel: cancel,
			err:    func(e error) error { return d.c.transportErr(req, e) },
		}
		return resp, nil
	}
}

// CheckURL validates a download URL against the scheme and host rules
// without contacting it.
func (d *Downloader) CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("download: unparseable URL: %w", ErrDownloadRefused)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && d.cfg.Insecure:
	default:
		return nil, fmt.Errorf("download: scheme %q not allowed: %w", u.Scheme, ErrDownloadRefused)
	}
	if u.User != nil {
		return nil, fmt.Errorf("download: URL carries user info: %w", ErrDownloadRefused)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return nil, fmt.Errorf("download: URL has no host: %w", ErrDownloadRefused)
	}
	if !d.hostAllowed(host) {
		return nil, fmt.Errorf("download: host %q not in DOWNLOAD_HOSTS: %w", host, ErrDownloadRefused)
	}
	return u, nil
}

func (d *Downloader) hostAllowed(host string) bool {
	if d.cfg.Insecure && isLoopbackName(host) {
		return true
	}
	for _, h := range d.cfg.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		if strings.HasPrefix(h, ".") {
			if strings.HasSuffix(host, h) {
				return true
			}
			continue
		}
		if host == h || strings.HasSuffix(host, "."+h) {
			return true
		}
	}
	return false
}

func isLoopbackName(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkAddr runs at dial time on the resolved address, so DNS tricks can't
// reach a forbidden network.
func (d *Downloader) checkAddr(address string) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("download: %w", ErrDownloadRefused)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("download: %w", ErrDownloadRefused)
	}
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		if d.cfg.Insecure {
			return nil
		}
		return fmt.Errorf("download: loopback address %s: %w", ip, ErrDownloadRefused)
	case ip.IsPrivate(), ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast(),
		ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast(),
		isSharedOrReserved(ip):
		return fmt.Errorf("download: address %s not allowed: %w", ip, ErrDownloadRefused)
	}
	return nil
}

var reserved = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("fd00:ec2::/32"),  // AWS IMDS over IPv6
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 can map to anything
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("169.254.0.0/16"), // link-local incl. metadata (also caught above)
	netip.MustParsePrefix("255.255.255.255/32"),
}

func isSharedOrReserved(ip netip.Addr) bool {
	for _, p := range reserved {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
