package httpc

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDoBorrowedLendsTheBodyForTheCallOnly: each call reads its own answer
// (a buffer is reused, never shared with a call in progress), the body cap
// holds, a status error is the callback's to judge, and the callback's
// error is returned.
func TestDoBorrowedLendsTheBodyForTheCallOnly(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 2048)))
		case "/gone":
			http.Error(w, "no such page", http.StatusNotFound)
		default:
			_, _ = w.Write([]byte("page " + r.URL.Path))
		}
	}))
	t.Cleanup(srv.Close)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	c := New(Config{Service: "test", MaxBody: 1024, Transport: tr})
	get := func(path string, fn func(*Response) error) error {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		return c.DoBorrowed(req, fn)
	}

	var bodies []string
	for _, p := range []string{"/first-and-longer", "/2", "/third"} {
		require.NoError(t, get(p, func(r *Response) error {
			require.Equal(t, http.StatusOK, r.Status)
			bodies = append(bodies, string(r.Body)) // a copy: the buffer goes back
			return nil
		}))
	}
	require.Equal(t, []string{"page /first-and-longer", "page /2", "page /third"}, bodies)

	err := get("/big", func(*Response) error { t.Fatal("called with a body over the cap"); return nil })
	require.ErrorIs(t, err, ErrTooLarge)

	var se *StatusError
	err = get("/gone", func(r *Response) error { return r.Err() })
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusNotFound, se.Status)

	mine := errors.New("not a page I can read")
	require.ErrorIs(t, get("/x", func(*Response) error { return mine }), mine)
}
