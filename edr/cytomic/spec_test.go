package cytomic_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr/cytomic"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

// specServer serves only what the source document shows, and nothing our
// simulator adds: the start answer names no machine (MUIDs lists those that
// "returned data", none yet), /info's per-client list is empty, and only the
// /state counters tell when every machine answered. It refuses, with 404, a
// list that names an operation it does not know.
type specServer struct {
	mu        sync.Mutex
	stateSeen int // /state answers given: one more machine answers each time
	srv       *httptest.Server
}

const specMachines = 3

func (s *specServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	write := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	ids := func() ([]string, bool) {
		var body []struct {
			OperationID string `json:"operationId"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil {
			return nil, false
		}
		out := make([]string, len(body))
		for i, b := range body {
			if b.OperationID != "op-1" {
				return nil, false
			}
			out[i] = b.OperationID
		}
		return out, true
	}
	switch r.URL.Path {
	case "/oauth/token":
		write(map[string]any{"access_token": "tok", "token_type": "bearer", "expires_in": 3600})
	case cytomic.ClientPath:
		write([]map[string]any{{"pandaID": "1001", "operationId": "op-1", "MUIDs": []string{}}})
	case cytomic.InfoPath:
		if _, ok := ids(); !ok {
			http.Error(w, "unknown operation", http.StatusNotFound)
			return
		}
		write([]map[string]any{{"panda": "1001", "operationId": "op-1", "info": []any{}}})
	case cytomic.StatePath:
		if _, ok := ids(); !ok {
			http.Error(w, "unknown operation", http.StatusNotFound)
			return
		}
		answered := min(s.stateSeen, specMachines)
		s.stateSeen++
		st := map[string]any{"panda": "1001", "operationId": "op-1", "counters": map[string]int{
			"totalOperationElements": specMachines, "totalSuccess": answered,
			"totalPartiallySucceeded": 0, "totalError": 0,
		}}
		if answered == specMachines {
			st["url"] = s.srv.URL + "/files/osquery_op-1"
		}
		write([]any{st})
	case "/files/osquery_op-1":
		fmt.Fprint(w, "hostname;path;sha256\nWIN-A;C:\\x.exe;"+targetSHA+"\nWIN-B;C:\\y.exe;"+targetSHA+"\n")
	default:
		http.NotFound(w, r)
	}
}

// TestSpecOnlyServer: the driver finishes by the document's rule (the
// counters add up), not by anything only our simulator says, and an unknown
// operation ID in the batch does not blind the others.
func TestSpecOnlyServer(t *testing.T) {
	t.Parallel()
	s := &specServer{}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	d, err := cytomic.New(cytomic.Config{
		URL: s.srv.URL, TokenURL: s.srv.URL + "/oauth/token", User: user, Password: password,
		ClientIDs: []string{"1001"}, Round: 10 * time.Millisecond, UserAgent: "analysisfleet/test (cytomic)",
		Downloader: httpc.NewDownloader(httpc.DownloadConfig{
			Hosts: []string{"127.0.0.1"}, Insecure: true, Timeout: 5 * time.Second,
		}),
	})
	require.NoError(t, err)
	t.Cleanup(d.Close)
	ctx := edrtest.Ctx(t)

	ref, err := d.Start(ctx, target, edrtest.NewIntent("t"))
	require.NoError(t, err)
	// An operation the server does not know (expired, or another tenant's)
	// polled in the same rounds.
	stranger := []byte(strings.ReplaceAll(string(ref), `"op-1"`, `"op-unknown"`))
	strangerDone := make(chan error, 1)
	go func() {
		_, err := d.Poll(ctx, stranger)
		strangerDone <- err
	}()

	polls := 0
	for {
		st, err := d.Poll(ctx, ref)
		require.NoError(t, err)
		polls++
		if st.Done {
			break
		}
		require.Contains(t, st.Progress, fmt.Sprintf("/%d machines answered", specMachines))
	}
	require.GreaterOrEqual(t, polls, specMachines, "not done before the counters added up")
	require.NoError(t, <-strangerDone, "the unknown ID is only missing, not a failed round")

	res, err := d.Collect(ctx, ref)
	require.NoError(t, err)
	require.Equal(t, int64(2), res.Rows)
	require.Equal(t, []string{"WIN-A", "WIN-B"}, res.Hosts)
	require.Empty(t, res.Notes)
}
