package testutil

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// HeldPort is a loopback port that refuses connections and stays the
// test's: a socket bound to it, not listening, and without SO_REUSEADDR, so
// no other process (another test's broker, a child's listener) can take the
// port while the test holds it, as one could a port closed and given back.
type HeldPort struct {
	fd   int
	Addr string // 127.0.0.1:port
	Port int
}

// HoldPort holds a loopback port nothing listens on until the test ends,
// Release or Listen.
func HoldPort(t testing.TB) *HeldPort {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := syscall.Getsockname(fd)
	require.NoError(t, err)
	port := sa.(*syscall.SockaddrInet4).Port
	h := &HeldPort{fd: fd, Addr: net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), Port: port}
	t.Cleanup(h.Release)
	return h
}

// Release gives the port back, for a server that binds it itself (kfake's
// Ports): the window in which another process could take it is the time
// between Release and that bind.
func (h *HeldPort) Release() {
	if h.fd >= 0 {
		syscall.Close(h.fd)
		h.fd = -1
	}
}

// Listen turns the held port into a listener on the same socket: the port
// is never free in between.
func (h *HeldPort) Listen(t testing.TB) net.Listener {
	t.Helper()
	require.GreaterOrEqual(t, h.fd, 0, "port already released")
	require.NoError(t, syscall.Listen(h.fd, 128))
	f := os.NewFile(uintptr(h.fd), h.Addr)
	h.fd = -1
	defer f.Close()
	ln, err := net.FileListener(f) // a duplicate of the socket
	require.NoError(t, err)
	return ln
}
