package httpc

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// The lease guard (WithGuard) is checked twice for every request: once in
// Client.send, after rate limiting and token fetches, and once more on the
// connection, in the Write that puts the request's first bytes on the wire.
//
// The second check is what keeps a paused worker quiet. Between the first
// check and the write lie the connection pool, perhaps a dial, and the
// transport's write goroutine; a process frozen in that gap (SIGSTOP, a long
// GC or VM pause) and resumed after its lease passed to another worker would
// otherwise send a request already decided on. The connection-level check
// leaves a gap of a few instructions before the write system call, which no
// client can close: only a server that checks fencing tokens could, and the
// vendors and SampleDB do not.
//
// A connection carries the guard of the request using it (set by an
// httptrace GotConn hook), so it must serve one request at a time: the
// guarded transport speaks HTTP/1.1 only.
//
// The Client guarantees the second check whatever transport it is given
// (Config.Transport: a test's recorder, a metrics wrapper, a transport built
// elsewhere). A connection that is not a guarded one is checked by the
// Client's own trace hooks instead: when the transport hands it over
// (GotConn) and again when the transport has put the request's first header
// in its write buffer, before flushing it (WroteHeaderField). A refusal then
// closes the connection, so the buffered bytes never leave; the request fails
// with the guard's error (on an HTTP/2 connection, the requests sharing it
// fail too, with retryable transport errors). The gap is wider than on a guarded connection (a
// request line longer than the transport's write buffer, 4 KiB by default,
// is flushed before the header hook runs), so NewTransport, RefuseLocal and
// GuardDial remain the way to build a transport for production.

// errGuardOnConn wraps a guard's refusal seen at write time.
type errGuardOnConn struct{ err error }

func (e *errGuardOnConn) Error() string { return "request refused before sending: " + e.err.Error() }
func (e *errGuardOnConn) Unwrap() error { return e.err }

// guardConn is a connection whose writes first ask the guard of the request
// currently using it.
type guardConn struct {
	net.Conn
	mu    sync.Mutex
	guard func() error
}

func (c *guardConn) setGuard(g func() error) {
	c.mu.Lock()
	c.guard = g
	c.mu.Unlock()
}

func (c *guardConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	g := c.guard
	c.mu.Unlock()
	if g != nil {
		if err := g(); err != nil {
			return 0, &errGuardOnConn{err: err}
		}
	}
	return c.Conn.Write(p)
}

// GuardDial wraps dial so every connection it returns checks the guard of
// the request using it before each write (see NewTransport).
func GuardDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &guardConn{Conn: c}, nil
	}
}

// NewTransport returns the transport Clients use when Config.Transport is
// nil: http.DefaultTransport's settings, HTTP/1.1 only, with connections
// that check the request's lease guard right before writing (GuardDial).
func NewTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = defaultMaxIdlePerHost
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	t.DialContext = GuardDial(dialer.DialContext)
	HTTP1Only(t)
	return t
}

// ErrLocalTarget is returned when an API request would connect to a
// loopback, unspecified or link-local address (see RefuseLocal).
var ErrLocalTarget = errors.New("refusing to connect to a loopback, unspecified or link-local address (INSECURE_HTTP allows loopback for development)")

// RefuseLocal makes t refuse, at dial time, connections to loopback,
// unspecified, link-local (cloud metadata included) and reserved addresses:
// the check is on the address actually dialled, after name resolution, so
// `https://127.1/`, `https://localhost./` or a name that resolves to
// 127.0.0.1 are refused like `https://127.0.0.1/`. Private ranges stay
// allowed (internal services behind a name). It returns t.
func RefuseLocal(t *http.Transport) *http.Transport {
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return ErrLocalTarget
			}
			ip, err := netip.ParseAddr(host)
			if err != nil {
				return ErrLocalTarget
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
				ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || isSharedOrReserved(ip) {
				return fmt.Errorf("%w: %s", ErrLocalTarget, ip)
			}
			return nil
		}}
	t.DialContext = GuardDial(dialer.DialContext)
	return t
}

// HTTP1Only turns HTTP/2 off on t: a guarded connection serves one request
// at a time.
func HTTP1Only(t *http.Transport) {
	t.ForceAttemptHTTP2 = false
	t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
}

// withConnGuard makes the connection req gets carry guard (nil clears the
// previous request's). On a connection that is not guarded (a transport not
// built with GuardDial) the hooks check guard themselves: when the
// connection is handed over and when the first header is buffered, closing
// the connection when it refuses, so nothing buffered is sent.
func withConnGuard(ctx context.Context, guard func() error) context.Context {
	var (
		mu      sync.Mutex
		bare    net.Conn // the unguarded connection the request got, if any
		checked bool     // the header hook has run
	)
	refuse := func(c net.Conn) {
		if err := guard(); err != nil {
			_ = c.Close()
		}
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if gc := findGuardConn(info.Conn); gc != nil {
				gc.setGuard(guard)
				return
			}
			if guard == nil || info.Conn == nil {
				return
			}
			mu.Lock()
			bare, checked = info.Conn, false
			mu.Unlock()
			refuse(info.Conn)
		},
		WroteHeaderField: func(string, []string) {
			mu.Lock()
			c := bare
			first := c != nil && !checked
			checked = true
			mu.Unlock()
			if first {
				refuse(c)
			}
		},
	})
}

// findGuardConn returns the guardConn under c (through TLS), or nil.
func findGuardConn(c net.Conn) *guardConn {
	for range 4 {
		switch v := c.(type) {
		case *guardConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// guardOf returns the guard WithGuard attached to ctx, or nil.
func guardOf(ctx context.Context) func() error {
	g, _ := ctx.Value(guardKey{}).(func() error)
	return g
}

// refusedByGuard returns the guard's refusal behind a transport error, or
// the guard's answer now: a request that failed because the job was lost
// reports that, not a network problem.
func refusedByGuard(ctx context.Context, err error) error {
	var ge *errGuardOnConn
	if errors.As(err, &ge) {
		return ge.err
	}
	return CheckGuard(ctx)
}
