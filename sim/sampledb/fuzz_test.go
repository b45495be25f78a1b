package sampledb_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdb "github.com/analysisfleet/analysisfleet/sampledb"
	sim "github.com/analysisfleet/analysisfleet/sim/sampledb"
)

// FuzzRequests sends arbitrary bodies and queries to every write and
// search route. The simulator must never panic, must answer every request
// with an envelope whose responseCode is the HTTP status, and must keep its
// state machine: a job is never seen in a state it could not reach.
func FuzzRequests(f *testing.F) {
	for _, s := range []struct{ route, query, body string }{
		{"PUT job", "", `{"state":"executing"}`},
		{"PUT job", "", `{"state":"success"}`},
		{"PUT job", "", `{"state":`},
		{"POST search", "limit=3&offset=1", `{"state":["aborted","timeout"],"startTimestamp":"now - 1 week","endTimestamp":"now","timeFieldStrategy":["enqueuedTimestamp","startTimestamp","endTimestamp"],"timeMatchStrategy":"any"}`},
		{"POST search", "", `{"state":"executing","sortBy":["-id"],"limit":"2","startTimestamp":1700000000000}`},
		{"GET list", "state=enqueued,executing&sortBy=-enqueuedTimestamp&limit=10001", ``},
		{"GET list", "startTimestamp=now-3d&timeMatchStrategy=all&customer=acme", ``},
		{"POST task", "", `{"worker":"cbc.event_export","state":"executing"}`},
		{"PUT task", "", `{"state":"cancelled"}`},
	} {
		f.Add(s.route, s.query, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, route, query string, body []byte) {
		srv := sim.New(sim.Config{Keys: map[string]sim.Role{"k": sim.RoleAnalyzer}})
		defer srv.Close()
		srv.CreateJob(message("J"))
		srv.CreateJob(message("K"))
		send := func(method, path string, body []byte) {
			req := httptest.NewRequest(method, path, strings.NewReader(string(body)))
			req.URL.RawQuery = query
			req.Header.Set("Argus-API-Key", "k")
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			var env struct {
				ResponseCode int             `json:"responseCode"`
				Messages     []sdb.Message   `json:"messages"`
				Data         json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil {
				t.Fatalf("%s %s: not an envelope: %v: %q", method, path, err, rec.Body.String())
			}
			if env.ResponseCode != rec.Code {
				t.Fatalf("responseCode %d, status %d", env.ResponseCode, rec.Code)
			}
			if rec.Code >= 400 && (len(env.Messages) == 0 || string(env.Data) != "null") {
				t.Fatalf("error %d without message or with data: %q", rec.Code, rec.Body.String())
			}
		}
		send(http.MethodPost, jobRoot+"/K/task", []byte(`{"worker":"w"}`))
		switch route {
		case "PUT job":
			send(http.MethodPut, jobRoot+"/J", body)
		case "POST search":
			send(http.MethodPost, jobRoot+"/search", body)
		case "GET list":
			send(http.MethodGet, jobRoot, nil)
		case "POST task":
			send(http.MethodPost, jobRoot+"/J/task", body)
		default:
			send(http.MethodPut, jobRoot+"/K/task/1", body)
		}
		j, _ := srv.Job("J")
		if j.State != sdb.StateEnqueued && j.State != sdb.StateExecuting {
			t.Fatalf("enqueued job moved to %q in one step", j.State)
		}
		for _, tk := range srv.Tasks("K") {
			if tk.State != sdb.TaskExecuting && !sdb.IsTaskTerminal(tk.State) {
				t.Fatalf("task in unknown state %q", tk.State)
			}
		}
	})
}
