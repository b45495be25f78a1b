package console

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// live streams a page's live part as Server-Sent Events: an event
// "fragment" whose data is the part's HTML, sent when it changed, at most
// once per interval. Every stream renders from the same shared snapshot,
// so N browsers cost Redis what one costs.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	u, err := url.Parse(r.URL.Query().Get("u"))
	if err != nil || !strings.HasPrefix(u.Path, "/") || u.Host != "" || u.Scheme != "" || strings.HasPrefix(u.Path, "/live") {
		s.fail(w, r, http.StatusBadRequest, "live: want u=<a console page's path>")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		s.fail(w, r, http.StatusInternalServerError, "live: streaming unsupported")
		return
	}
	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		w.Header().Set("Retry-After", "30")
		s.fail(w, r, http.StatusServiceUnavailable, "live: too many live streams; try again later")
		return
	}
	inner := r.Clone(context.WithValue(r.Context(), fragmentKey{}, true))
	inner.URL, inner.RequestURI = u, u.RequestURI()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", (2 * s.cfg.Interval).Milliseconds())
	fl.Flush()

	tick := time.NewTicker(s.cfg.Interval)
	defer tick.Stop()
	var last []byte
	idle := 0
	for {
		rec := &recorder{header: http.Header{}}
		s.handler.ServeHTTP(rec, inner)
		switch {
		case rec.code != 0 && rec.code != http.StatusOK && rec.code != http.StatusNotFound && rec.code != http.StatusBadRequest:
			// Redis unreachable and the like: say so in the stream, keep going.
			if err := event(w, "problem", fmt.Sprintf("live update failed (%d): retrying", rec.code)); err != nil {
				return
			}
		case !bytes.Equal(rec.body.Bytes(), last):
			last = bytes.Clone(rec.body.Bytes())
			if err := event(w, "fragment", rec.body.String()); err != nil {
				return
			}
			idle = 0
		default:
			idle++
			if idle*int(s.cfg.Interval/time.Millisecond) >= 15000 { // keep proxies from closing an idle stream
				if _, err := fmt.Fprint(w, ": idle\n\n"); err != nil {
					return
				}
				idle = 0
			}
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// event writes one SSE event; data may span lines.
func event(w http.ResponseWriter, name, data string) error {
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: " + strings.TrimSuffix(line, "\r") + "\n")
	}
	b.WriteString("\n")
	_, err := w.Write([]byte(b.String()))
	return err
}

// recorder captures a fragment rendered by the page handlers.
type recorder struct {
	header http.Header
	body   bytes.Buffer
	code   int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
