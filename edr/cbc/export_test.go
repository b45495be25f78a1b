package cbc

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/internal/httpc"
)

func testLimits() exportLimits {
	return exportLimits{maxRaw: 16 << 20, maxInflated: 64 << 20, maxHosts: MaxDistinctHosts}
}

const sampleCSV = "event_id,device_id,device_name,process_hash,process_name,event_type,backend_timestamp\n" +
	"e1,101,WIN-A,h,p.exe,childproc,2026-01-01T00:00:00.000Z\n" +
	"e2,101,WIN-A,h,p.exe,filemod,2026-01-01T00:00:00.000Z\n" +
	"e3,102,,h,p.exe,netconn,2026-01-01T00:00:00.000Z\n" + // no name: falls back to device_id
	"e4,103,\"WIN,B\",h,\"p \"\"q\"\".exe\",childproc,2026-01-01T00:00:00.000Z\n"

var sampleWant = edr.Result{Rows: 4, Hosts: []string{"102", "WIN,B", "WIN-A"}, HostsTotal: 3}

const sampleNDJSON = `{"event_id":"e1","device_id":101,"device_name":"WIN-A"}
{"event_id":"e2","device_id":101,"device_name":"WIN-A"}
{"event_id":"e3","device_id":102,"device_name":null}
{"event_id":"e4","device_id":103,"device_name":"WIN,B","process_hash":["h"]}
`

func zipOf(entries map[string][]byte, method uint16) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, name := range []string{"dir/", "a.csv", "b.csv", "c.json", "d.ndjson", "e.csv.gz"} {
		if name == "dir/" {
			_, _ = w.Create(name)
			continue
		}
		b, ok := entries[name]
		if !ok {
			continue
		}
		f, _ := w.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		_, _ = f.Write(b)
	}
	_ = w.Close()
	return buf.Bytes()
}

func jsonArray() []byte {
	lines := strings.Split(strings.TrimSpace(sampleNDJSON), "\n")
	return []byte(" \n[" + strings.Join(lines, ",\n") + "]\n")
}

func TestSummarizeShapes(t *testing.T) {
	t.Parallel()
	half := strings.SplitAfterN(sampleCSV, "\n", 4)
	header := half[0]
	cases := map[string][]byte{
		"csv":           []byte(sampleCSV),
		"csv crlf bom":  []byte("\ufeff" + strings.ReplaceAll(sampleCSV, "\n", "\r\n")),
		"json array":    jsonArray(),
		"json results":  []byte(`{"num_found":4,"results":` + string(jsonArray()) + `,"contacted":1}`),
		"ndjson":        []byte(sampleNDJSON),
		"ndjson no eol": []byte(strings.TrimSpace(sampleNDJSON)),
		"csv.gz":        edrtest.Gzip([]byte(sampleCSV)),
		"json.gz":       edrtest.Gzip(jsonArray()),
		"zip deflate":   zipOf(map[string][]byte{"a.csv": []byte(half[0] + half[1] + half[2]), "b.csv": []byte(header + half[3])}, zip.Deflate),
		"zip store":     zipOf(map[string][]byte{"a.csv": []byte(sampleCSV)}, zip.Store),
		"zip mixed":     zipOf(map[string][]byte{"c.json": jsonArray()[:0], "d.ndjson": []byte(sampleNDJSON)}, zip.Deflate),
		"zip of gz":     zipOf(map[string][]byte{"e.csv.gz": edrtest.Gzip([]byte(sampleCSV))}, zip.Store),
		"gz of zip":     edrtest.Gzip(zipOf(map[string][]byte{"a.csv": []byte(sampleCSV)}, zip.Deflate)),
		// Containers under another key than "results": the object names no
		// event field, the array holds event objects.
		"json events": []byte(`{"events":` + string(jsonArray()) + `}`),
		"json data":   []byte(`{"errors":[],"tags":["a"],"meta":{"x":[1]},"job_id":4522,"data":` + string(jsonArray()) + `,"more":[{"device_name":"ignored"}]}`),
		// An NDJSON event may hold arrays of objects: it names event fields,
		// so it is an event, not a container.
		"ndjson nested": []byte(`{"event_id":"e1","device_id":101,"device_name":"WIN-A","children":[{"device_name":"no"},{"device_name":"no"}]}` + "\n" +
			strings.SplitN(sampleNDJSON, "\n", 2)[1]),
		"ndjson hostname": []byte(`{"hostname":"WIN-A"}` + "\n" + `{"device_name":"","device_id":"101","hostname":"x"}` + "\n" +
			`{"device_name":" WIN-A "}` + "\n" + `{"device_id":102}` + "\n" + `{"device_name":"WIN,B"}` + "\n" + `{"device_id":101}` + "\n"),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want := sampleWant
			if name == "ndjson hostname" {
				want = edr.Result{Rows: 6, Hosts: []string{"101", "102", "WIN,B", "WIN-A"}, HostsTotal: 4}
			}
			res, err := summarize(bytes.NewReader(in), testLimits())
			require.NoError(t, err)
			require.Equal(t, want, res)
		})
	}
}

func TestSummarizeNothingFound(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "\n", "event_id,device_name\n", "[]", `{"results":[]}`, `{"results":null,"num_found":0}`,
		`{"events":[]}`, `{"num_found":0,"data":[null]}`,
		string(edrtest.Gzip(nil)), string(zipOf(nil, zip.Deflate))} {
		res, err := summarize(strings.NewReader(in), testLimits())
		require.NoError(t, err, "%q", in)
		require.Equal(t, edr.Result{}, res, "%q", in)
	}
}

func TestSummarizeMalformed(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"data": [ {"id": "trunc`,
		"<html><body>Service Unavailable</body></html>",
		"foo,bar\n1,2\n",
		`[{"device_name":"a"},`,
		`[1,2]`,
		`["a"]`,
		`{"device_name":"a"} garbage`,
		`[{"device_name":"a"}] [1]`,
		`{"results":[{"device_name":"a"}]} {"x":1}`,
		`{"results":[{"device_name":"a"}`,
		// JSON documents that are not exports: no event field, no array of
		// events.
		`{"url":"https://bucket.s3.amazonaws.com/export.csv?X-Amz-Signature=x"}`,
		`{"id":4522,"type":"event_export","status":"CREATED"}`,
		`{"success":false,"message":"job output expired"}`,
		`{"errors":[{"message":"bad request"}]}`,
		`{"tags":["a","b"]}`,
		`{"events":[{"device_name":"a"},1]}`,
		`{"events":[{"device_name":"a"}]}` + "\n" + `{"device_name":"b"}`,
		`{}`,
		`{"url":"x"}` + "\n" + `{"device_name":"a"}`,
		"\x1f\x8bnot gzip at all",
		"PK\x03\x04 not a zip",
		string(edrtest.Gzip(edrtest.Gzip(edrtest.Gzip([]byte(sampleCSV))))),
		string(edrtest.Gzip([]byte(sampleCSV))[:20]),
	} {
		_, err := summarize(strings.NewReader(in), testLimits())
		require.ErrorIs(t, err, errMalformedExport, "%q", in)
	}
}

func TestSummarizeSizeLimits(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	lim.maxRaw = int64(len(sampleCSV))
	_, err := summarize(strings.NewReader(sampleCSV), lim)
	require.NoError(t, err, "exactly the limit is fine")
	_, err = summarize(strings.NewReader(sampleCSV+"e5,1,x,h,p,t,ts\n"), lim)
	require.ErrorIs(t, err, errExportTooLarge)

	bomb := edrtest.Gzip(append([]byte("event_id,device_name\n"), bytes.Repeat([]byte("e,h\n"), 1<<18)...))
	lim = testLimits()
	lim.maxInflated = 64 << 10
	_, err = summarize(bytes.NewReader(bomb), lim)
	require.ErrorIs(t, err, errExportTooLarge)

	// A zip larger than the in-memory spool goes through a temporary file.
	lim = testLimits()
	lim.spoolMem = 256
	lim.tempDir = t.TempDir()
	res, err := summarize(bytes.NewReader(zipOf(map[string][]byte{"a.csv": []byte(sampleCSV)}, zip.Store)), lim)
	require.NoError(t, err)
	require.Equal(t, sampleWant, res)
}

func TestSummarizeDistinctHostCap(t *testing.T) {
	t.Parallel()
	const extra = 10
	pr, pw := io.Pipe()
	defer pr.Close() // unblocks the writer if summarize stops early
	go func() {
		_, _ = io.WriteString(pw, "event_id,device_name\n")
		for i := range MaxDistinctHosts + extra {
			_, _ = fmt.Fprintf(pw, "e%d,host-%06d\n", i, i)
		}
		// Known hosts after the cap still count as rows.
		_, _ = io.WriteString(pw, "x,host-000001\n")
		pw.Close()
	}()
	res, err := summarize(pr, testLimits())
	require.NoError(t, err)
	require.EqualValues(t, MaxDistinctHosts+extra+1, res.Rows)
	require.Equal(t, MaxDistinctHosts, res.HostsTotal)
	require.Len(t, res.Hosts, edr.MaxListed)
	require.Equal(t, "host-000000", res.Hosts[0])
	require.Len(t, res.Notes, 1)
	require.Contains(t, res.Notes[0], "lower bound")
}

// failingReader delivers some bytes, then a network failure.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// A connection that breaks mid-export is not a malformed export: the
// input's own error comes back (and Collect makes it retryable).
func TestSummarizeNetworkFailureIsNotMalformed(t *testing.T) {
	t.Parallel()
	netErr := &httpc.TransportError{Service: "download", Method: "GET", Path: "https://s3/x", Err: errors.New("connection reset")}
	for _, in := range [][]byte{[]byte(sampleCSV[:50]), jsonArray()[:30], edrtest.Gzip([]byte(sampleCSV))[:30], []byte(sampleNDJSON[:70])} {
		_, err := summarize(&failingReader{data: in, err: netErr}, testLimits())
		require.ErrorIs(t, err, netErr)
		require.NotErrorIs(t, err, errMalformedExport)
		require.True(t, httpc.IsRetryable(err))
	}
}

func TestDecodeStart(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{"id":4522,"type":"event_export","status":"CREATED"}`: "4522",
		`{"id":"4522","x":{"y":[1]}}`:                          "4522",
		`{"id":4.522e3}`:                                       "4522",
		`{"id":" job_9-A "}`:                                   "job_9-A",
	} {
		id, err := decodeStart([]byte(in))
		require.NoError(t, err, in)
		require.Equal(t, want, id)
	}
	for _, in := range []string{``, `[]`, `{}`, `{"id":null}`, `{"id":""}`, `{"id":1.5}`, `{"id":"a/b"}`, `{"id":true}`, `{"id":4522`} {
		_, err := decodeStart([]byte(in))
		require.ErrorIs(t, err, errMalformed, in)
	}
}

func TestDecodeProgress(t *testing.T) {
	t.Parallel()
	p, err := decodeProgress([]byte(`{"num_total":100000,"num_completed":100000,"message":"FINISHED"}`))
	require.NoError(t, err)
	require.Equal(t, progress{Total: 100000, Completed: 100000, Message: "FINISHED"}, p)
	p, err = decodeProgress([]byte(`{"num_total":"7","message":" in_progress\n","other":1}`))
	require.NoError(t, err)
	require.Equal(t, progress{Total: 7, Message: "IN_PROGRESS"}, p)
	p, err = decodeProgress([]byte(`{"num_total":18,"num_completed":18}`)) // the SDK's fixture for a completed job
	require.NoError(t, err)
	require.Equal(t, progress{Total: 18, Completed: 18}, p)
	require.Equal(t, "18/18", p.String())
	p, err = decodeProgress([]byte(`{"num_total":40,"num_completed":0,"message":""}`))
	require.NoError(t, err)
	require.Equal(t, progress{Total: 40}, p)
	for _, in := range []string{``, `{}`, `{"other":1}`, `{"message":3}`, `{"message":"QUEUED","num_total":"x"}`, `{"message":"QUEUED","num_total":{}}`, `[1]`} {
		_, err := decodeProgress([]byte(in))
		require.ErrorIs(t, err, errMalformed, in)
	}
}

func FuzzDecodeStart(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{`{"id":4522,"type":"event_export","status":"CREATED"}`, `{"id":"abc"}`, `{"id":4.5e3}`, `{}`, `[`}, decodeStart, func(t *testing.T, id string) {
		require.Regexp(t, jobIDRe, id)
	})
}

func FuzzDecodeProgress(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{`{"num_total":100000,"num_completed":100000,"message":"FINISHED"}`,
		`{"num_total":"5","num_completed":-1,"message":"IN_PROGRESS"}`, `{"message":"QUEUED"}`, `{"message":null}`}, decodeProgress, func(t *testing.T, p progress) {
		require.LessOrEqual(t, len(p.Message), 64)
		require.GreaterOrEqual(t, p.Total, int64(0))
		require.GreaterOrEqual(t, p.Completed, int64(0))
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{`{"id":"4522"}`, `{"id":4522}`, `{"id":"../x"}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, err := parseRef(b); err == nil {
			require.Regexp(t, jobIDRe, id)
		}
	})
}

func FuzzSummarize(f *testing.F) {
	f.Add([]byte(sampleCSV))
	f.Add([]byte(sampleNDJSON))
	f.Add(jsonArray())
	f.Add([]byte(`{"results":[{"device_name":"a"},{"device_id":1}],"num_found":2}`))
	f.Add(edrtest.Gzip([]byte(sampleCSV)))
	f.Add(zipOf(map[string][]byte{"a.csv": []byte(sampleCSV), "c.json": jsonArray()}, zip.Deflate))
	f.Add(zipOf(map[string][]byte{"e.csv.gz": edrtest.Gzip([]byte(sampleCSV))}, zip.Store))
	f.Add([]byte(""))
	dir := f.TempDir() // zips over 1 KiB are spooled here
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := exportLimits{maxRaw: 1 << 20, maxInflated: 4 << 20, maxHosts: 50, spoolMem: 1 << 10, tempDir: dir,
			maxLine: 4 << 10, spool: NewSpoolBudget(64 << 10)}
		res, err := summarize(bytes.NewReader(b), lim)
		require.Zero(t, lim.spool.inUse())
		if err != nil {
			if !errors.Is(err, errMalformedExport) && !errors.Is(err, errExportTooLarge) && !errors.Is(err, errLineTooLong) &&
				!errors.Is(err, errSpoolTooLarge) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		require.GreaterOrEqual(t, res.Rows, int64(0))
		require.LessOrEqual(t, len(res.Hosts), edr.MaxListed)
		require.LessOrEqual(t, res.HostsTotal, lim.maxHosts)
		require.GreaterOrEqual(t, res.HostsTotal, len(res.Hosts))
		require.LessOrEqual(t, int64(res.HostsTotal), res.Rows)
		for _, h := range res.Hosts {
			require.NotEmpty(t, h)
			require.LessOrEqual(t, len(h), maxHostLen)
		}
	})
}

// endless serves a prefix, then fill bytes forever, counting what it
// served.
type endless struct {
	prefix []byte
	fill   byte
	served int64
}

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.prefix)
	e.prefix = e.prefix[n:]
	for i := n; i < len(p); i++ {
		p[i] = e.fill
	}
	e.served += int64(len(p))
	return len(p), nil
}

// A line (CSV record, NDJSON event, JSON value, run of whitespace) longer
// than maxLine fails as errLineTooLong after reading little more than
// maxLine: it is never read whole into memory. The export limits are far
// larger, so only the line cap can stop these.
func TestSummarizeLineCap(t *testing.T) {
	t.Parallel()
	const maxLine = 64 << 10
	const slack = 2*guardChunk + 64<<10 // the parsers' read-ahead
	for name, in := range map[string]*endless{
		"csv record":           {prefix: []byte("event_id,device_name\ne1,"), fill: 'a'},
		"csv quoted newlines":  {prefix: []byte("event_id,device_name\ne1,\""), fill: '\n'},
		"ndjson event":         {prefix: []byte(`{"device_name":"`), fill: 'a'},
		"json array element":   {prefix: []byte(`[{"device_name":"a"},{"device_name":"`), fill: 'a'},
		"json results element": {prefix: []byte(`{"results":[{"device_name":"`), fill: 'a'},
		"json key":             {prefix: []byte(`{"`), fill: 'k'},
		"json whitespace":      {prefix: []byte(`[{"device_name":"a"},`), fill: ' '},
		"json other array":     {prefix: []byte(`{"data":[{"device_name":"`), fill: 'a'},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			lim := exportLimits{maxRaw: 1 << 40, maxInflated: 1 << 40, maxHosts: 10, maxLine: maxLine}
			_, err := summarize(in, lim)
			require.ErrorIs(t, err, errLineTooLong)
			require.Contains(t, err.Error(), "export line longer than 65536 bytes")
			require.Less(t, in.served, int64(maxLine+slack), "read %d bytes", in.served)
		})
	}
}

// The incident: a small gzip holding a header and one endless line. Lines
// up to the cap are fine.
func TestSummarizeLineCapThroughGzip(t *testing.T) {
	t.Parallel()
	b := edrtest.Gzip([]byte("event_id,device_name\n"), bytes.Repeat([]byte("a"), 1<<20))
	require.Less(t, len(b), 64<<10)
	lim := testLimits()
	lim.maxLine = 256 << 10
	_, err := summarize(bytes.NewReader(b), lim)
	require.ErrorIs(t, err, errLineTooLong)

	long := strings.Repeat("x", 200<<10) // a long command line, under the cap
	res, err := summarize(strings.NewReader("event_id,device_name,process_cmdline\ne1,h1,"+long+"\n"), lim)
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 1, Hosts: []string{"h1"}, HostsTotal: 1}, res)
	res, err = summarize(strings.NewReader(`{"results":[{"device_name":"h1","process_cmdline":"`+long+`"}]}`), lim)
	require.NoError(t, err)
	require.Equal(t, edr.Result{Rows: 1, Hosts: []string{"h1"}, HostsTotal: 1}, res)
}

// Zip exports spooled at the same time share one budget: a download that
// finds it spent fails with errSpoolBusy (retryable) and gives back what it
// held; one larger than the whole budget fails with errSpoolTooLarge
// (permanent).
func TestSummarizeSpoolBudget(t *testing.T) {
	t.Parallel()
	big := zipOf(map[string][]byte{"a.csv": []byte(sampleCSV + strings.Repeat("e9,9,WIN-A,h,p.exe,childproc,2026-01-01T00:00:00.000Z\n", 200))}, zip.Store)
	budget := NewSpoolBudget(int64(len(big)) + 100)
	lim := testLimits()
	lim.spoolMem = 256
	lim.tempDir = t.TempDir()
	lim.spool = budget

	res, err := summarize(bytes.NewReader(big), lim)
	require.NoError(t, err)
	require.EqualValues(t, 204, res.Rows)
	require.Zero(t, budget.inUse(), "given back")

	// Another download holds most of the budget.
	require.True(t, budget.take(int64(len(big))))
	_, err = summarize(bytes.NewReader(big), lim)
	require.ErrorIs(t, err, errSpoolBusy)
	require.NotErrorIs(t, err, errMalformedExport)
	require.Equal(t, int64(len(big)), budget.inUse(), "the failed download gave its share back")
	budget.give(int64(len(big)))

	small := NewSpoolBudget(1024)
	lim.spool = small
	_, err = summarize(bytes.NewReader(big), lim)
	require.ErrorIs(t, err, errSpoolTooLarge)
	require.Zero(t, small.inUse())
	entries, err := os.ReadDir(lim.tempDir)
	require.NoError(t, err)
	require.Empty(t, entries, "spool files are removed")
}

// The job objects of the SDK's fixtures decode to what they say.
func TestDecodeRecordedJobs(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	for file, want := range map[string]jobInfo{
		"sdk_job_completed.json": {ID: "12345", Type: "livequery_export", Status: "COMPLETED",
			Created: at("2022-01-04T19:18:58.213Z"), Progress: &progress{Total: 18, Completed: 18}},
		"sdk_job_created.json": {ID: "23456", Type: "livequery_export", Status: "CREATED",
			Created: at("2022-01-04T19:18:58.213Z"), Progress: &progress{Total: 34, Completed: 16}},
		"sdk_job_usbdevice_export.json": {ID: "9941708", Type: "usbdevice_export", Status: "COMPLETED",
			Created: at("2023-07-21T18:08:46.490Z"), Progress: &progress{Total: 6, Completed: 6, Message: "FINISHED"},
			Params: exportParams{ok: true, Query: "*", Rows: -1, APIResource: "usbdevice"}},
		"sdk_job_download_blank.json": {ID: "120066", Progress: &progress{Total: 40}},
		"sdk_job_workflow_completed.json": {ID: "666666", Type: "user_workflow_update", Status: "COMPLETED",
			Created: at("2023-10-18T13:19:02.000467Z"), Progress: &progress{Message: "DISMISSAL COMPLETED"}},
		"sdk_job_audit_export.json":   {ID: "4805565", Type: "external", Status: "COMPLETED", Created: at("2023-02-02T23:16:25.625583Z")},
		"sdk_job_devices_export.json": {ID: "11608915", Type: "endpoints", Status: "IN_PROGRESS", Created: at("2024-01-26T18:18:39.962319Z")},
	} {
		got, err := decodeJob(edrtest.Testdata(t, file))
		require.NoError(t, err, file)
		require.Equal(t, want, got, file)
	}
	l, err := decodeJobList(edrtest.Testdata(t, "sdk_jobs_list.json"))
	require.NoError(t, err)
	require.EqualValues(t, 2, l.NumFound)
	require.Equal(t, 2, l.Listed)
	require.Equal(t, []string{"12345", "23456"}, []string{l.Jobs[0].ID, l.Jobs[1].ID})

	code, msg := vendorMessage(edrtest.Testdata(t, "sdk_error_invalid_enum.json"))
	require.Equal(t, "INVALID_ENUM_VALUE", code)
	require.Equal(t, "Malformed JSON input: terms.fields[0]", msg)
	code, _ = vendorMessage(edrtest.Testdata(t, "sdk_error_query_malformed.json"))
	require.Equal(t, "query_malformed_syntax", code)
	_, msg = vendorMessage(edrtest.Testdata(t, "sdk_error_message.json"))
	require.Equal(t, "Test Alpha Message", msg)
}

func FuzzDecodeJob(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{`{"id":1,"status":"FAILED","errors":"x","progress":{"num_total":1},"job_parameters":{"job_parameters":{"query":{"query":"q","time_range":{"start":"2026-01-01T00:00:00.000Z"},"rows":5}}}}`,
		`{"id":"a","create_time":"2022-01-04T19:18:58.213Z","errors":["a",{"b":1}]}`, `{"id":1,"job_parameters":{"query":"q"}}`, `null`, `[]`}, decodeJob, func(t *testing.T, j jobInfo) {
		require.Regexp(t, jobIDRe, j.ID)
		require.LessOrEqual(t, len(j.Status), 64)
		require.LessOrEqual(t, len(j.Errors), 300)
		if j.Progress != nil {
			require.GreaterOrEqual(t, j.Progress.Total, int64(0))
		}
	})
}

func FuzzDecodeJobList(f *testing.F) {
	for _, s := range []string{`{"num_found":2,"results":[{"id":1},{"id":"x/y"}]}`, `[{"id":3,"type":"event_export"}]`, `{"results":null}`, `{}`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeJobList(b)
		if err != nil {
			require.ErrorIs(t, err, errMalformed)
			return
		}
		require.Equal(t, l.Listed, len(l.Jobs)+l.Unreadable)
		require.GreaterOrEqual(t, l.NumFound, int64(-1))
		for _, j := range l.Jobs {
			require.Regexp(t, jobIDRe, j.ID)
		}
		code, msg := vendorMessage(b)
		require.LessOrEqual(t, len(code), 64)
		require.LessOrEqual(t, len(msg), 200)
	})
}
