package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/analysisfleet/analysisfleet/job"
	"github.com/analysisfleet/analysisfleet/sampledb"
)

// HTTPSampleDB registers and aborts jobs in a SampleDB simulator running in
// another process: jobs through its admin API (POST /_sim/jobs), aborts
// through the real API (DELETE with a SAMPLEDB-USER key), as an analyst would.
type HTTPSampleDB struct {
	URL     string // the simulator's base URL
	UserKey string // an API key with role SAMPLEDB-USER
	Client  *http.Client
}

func (h *HTTPSampleDB) client() *http.Client {
	if h.Client != nil {
		return h.Client
	}
	return &http.Client{Timeout: 10 * time.Second}
}

// CreateJob registers msg as an enqueued job. It panics if the simulator
// cannot be reached: a load generator that silently lost jobs would make
// every later check meaningless.
func (h *HTTPSampleDB) CreateJob(msg job.Message) sampledb.Job {
	job, err := h.Register(msg)
	if err != nil {
		panic(err.Error())
	}
	return job
}

// Register registers msg as an enqueued job, or says why it could not.
func (h *HTTPSampleDB) Register(msg job.Message) (sampledb.Job, error) {
	b, _ := json.Marshal(msg)
	var job sampledb.Job
	if err := h.do(http.MethodPost, "/_sim/jobs", b, nil, &job); err != nil {
		return job, fmt.Errorf("loadgen: register job %s: %w", msg.JobID, err)
	}
	return job, nil
}

// Abort sends an analyst's DELETE.
func (h *HTTPSampleDB) Abort(id string) (sampledb.Job, bool) {
	var env struct {
		Data sampledb.Job `json:"data"`
	}
	err := h.do(http.MethodDelete, "/sampledb/v2/job/"+id, nil, map[string]string{"Argus-API-Key": h.UserKey}, &env)
	return env.Data, err == nil
}

func (h *HTTPSampleDB) do(method, path string, body []byte, headers map[string]string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.URL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := h.client().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return json.Unmarshal(b, out)
}
