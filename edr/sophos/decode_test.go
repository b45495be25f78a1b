package sophos

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr/edrtest"
)

// The guide's own examples, used as tests and fuzz seeds.
const (
	docStarted = `{
"id": "bb0cbb9b-a189-495b-9cc9-7027df7110d6",
"createdAt": "2020-11-02T12:51:09.933Z",
"expiresAt": "2020-11-02T14:51:09.933Z",
"result": "notAvailable",
"status": "pending"
}`
	docFinished = `{
"id": "bb0cbb9b-a189-495b-9cc9-7027df7110d6",
"createdAt": "2020-11-02T12:51:09.933Z",
"expiresAt": "2020-11-02T14:51:09.933Z",
"finishedAt": "2020-11-02T12:51:12.512Z",
"result": "succeeded",
"status": "finished"
}`
	docResults = `{
"items": [
{"parent": 668, "sha256": null, "upload_size": 948, "osquery_action": "added",
 "path": "C:\\Program Files\\Sophos\\Sophos Network Threat Protection\\SophosNtpService.exe",
 "meta_hostname": "WIN-1", "endpoint_id": "e1", "timestamps": null},
{"meta_hostname": null, "endpoint_id": "e2"},
{"meta_hostname": "WIN-1"}
],
"metadata": {"columns": [{"name": "endpoint_id", "type": "string"},
 {"name": "ingestion_timestamp", "type": "timestamp"}]},
"pages": {"nextKey": "AVCcdoKeugP+/Ve1kw==", "size": 1000, "maxSize": 1000}
}`
	sophosToken = `{"access_token":"eyJhbGciOi.eyJzdWIi.c2ln","errorCode":"success","expires_in":3600,` +
		`"message":"OK","refresh_token":"abc","token_type":"bearer","trackingId":"t-1"}`
)

func TestDecodeRun(t *testing.T) {
	t.Parallel()
	r, err := decodeRun([]byte(docStarted))
	require.NoError(t, err)
	require.Equal(t, runState{ID: "bb0cbb9b-a189-495b-9cc9-7027df7110d6", Status: "pending", Result: "notAvailable",
		CreatedAt: "2020-11-02T12:51:09.933Z", ExpiresAt: "2020-11-02T14:51:09.933Z"}, r)

	r, err = decodeRun([]byte(docFinished))
	require.NoError(t, err)
	require.Equal(t, "2020-11-02T12:51:12.512Z", r.FinishedAt)

	r, err = decodeRun([]byte(`{"id": 12345, "status": "running", "extra": {"x": [1]}}`))
	require.NoError(t, err, "numeric IDs and unknown fields are tolerated")
	require.Equal(t, "12345", r.ID)

	for _, bad := range []string{``, `[]`, `null`, `{}`, `{"id":"x"}`, `{"status": 3}`, `{"id": {}, "status":"x"}`,
		`{"id":"a/b","status":"pending"}`, `{"status":"pending"} trailing`, `{"data": [ {"id": "trunc`} {
		_, err := decodeRun([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}
}

func TestDecodeToken(t *testing.T) {
	t.Parallel()
	tok, err := decodeToken([]byte(sophosToken))
	require.NoError(t, err)
	require.Equal(t, token{access: "eyJhbGciOi.eyJzdWIi.c2ln", ttl: time.Hour}, tok)

	tok, err = decodeToken([]byte(`{"access_token":"t","token_type":"Bearer","expires_in":"120"}`))
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, tok.ttl)

	tok, err = decodeToken([]byte(`{"access_token":"t"}`))
	require.NoError(t, err)
	require.Equal(t, defaultTokenTTL, tok.ttl)

	tok, err = decodeToken([]byte(`{"access_token":"t","expires_in":1e300}`))
	require.NoError(t, err)
	require.Equal(t, maxTokenTTL, tok.ttl)

	for _, bad := range []string{`{}`, `{"access_token":""}`, `{"access_token":"a b"}`, `{"access_token":"t\r\nX: y"}`,
		`{"access_token":"t","token_type":"mac"}`, `{"access_token":"t","expires_in":"soon"}`, `{"access_token":5}`, `"t"`} {
		_, err := decodeToken([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}
}

func results(body string) (resultsPage, error) {
	return decodeResults(strings.NewReader(body), 1<<20)
}

func TestDecodeResults(t *testing.T) {
	t.Parallel()
	p, err := results(docResults)
	require.NoError(t, err)
	require.Equal(t, []string{"WIN-1", "e2", "WIN-1"}, p.Hosts, "meta_hostname, else endpoint_id")
	require.Equal(t, "AVCcdoKeugP+/Ve1kw==", p.NextKey)
	require.EqualValues(t, len(docResults), p.Read)

	p, err = results(`{"items": null, "pages": {"nextKey": null}}`)
	require.NoError(t, err)
	require.Empty(t, p.Hosts)
	require.Empty(t, p.NextKey)

	p, err = results(`{"items": [null, {"meta_hostname": 42}]}`)
	require.NoError(t, err, "no pages: the last page")
	require.Equal(t, []string{"", "42"}, p.Hosts)

	p, err = results(`{"metadata": {"columns": [{"name": "x"}]}, "pages": {"size": 5, "fromKey": "k1"}}`)
	require.NoError(t, err, "Sophos's 2021 example has pages but no items")
	require.Empty(t, p.Hosts)
	require.Equal(t, "k1", p.FromKey)

	for _, bad := range []string{`{}`, `{"items": {}}`, `{"items": [1]}`, `{"items": [], "pages": {"nextKey": {}}}`,
		`{"items": [], "pages": []}`, `[]`, `{"items": [`, `{"items": []} {}`, `{"items": [], "items": []}`, ``, `{"items": [}`} {
		_, err := results(bad)
		require.ErrorIs(t, err, errMalformed, bad)
	}
}

func TestDecodeResultsCapsValues(t *testing.T) {
	t.Parallel()
	row := `{"meta_hostname": "h", "cmdline": "` + strings.Repeat("a", 2000) + `"}`
	body := `{"items": [` + row + `, ` + row + `], "metadata": {"x": "` + strings.Repeat("b", 500) + `"}}`
	p, err := decodeResults(strings.NewReader(body), 2100)
	require.NoError(t, err, "rows under the cap")
	require.Len(t, p.Hosts, 2)

	for name, body := range map[string]string{
		"row":         `{"items": [{"cmdline": "` + strings.Repeat("a", 20000) + `"}]}`,
		"metadata":    `{"metadata": {"columns": "` + strings.Repeat("a", 20000) + `"}, "items": []}`,
		"nextKey":     `{"items": [], "pages": {"nextKey": "` + strings.Repeat("a", 20000) + `"}}`,
		"key":         `{"` + strings.Repeat("a", 20000) + `": 1, "items": []}`,
		"whitespace":  `{"items": [` + strings.Repeat(" ", 20000) + `]}`,
		"deep object": `{"items": [` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `]}`,
	} {
		_, err := decodeResults(strings.NewReader(body), 1000)
		require.ErrorIs(t, err, errValueTooLarge, name)
	}
}

func TestDecodeRunList(t *testing.T) {
	t.Parallel()
	l, err := decodeRunList([]byte(`{"items":[{"id":"a","createdAt":"2024-01-15T10:30:00.000Z","result":"notAvailable","status":"started"},` +
		`{"id":"b","status":"finished","result":"canceled","name":"n","template":"SELECT 1","from":"f","to":"t"}],` +
		`"pages":{"current":1,"size":50,"total":3,"items":101,"maxSize":100}}`))
	require.NoError(t, err)
	require.Len(t, l.Items, 2)
	require.False(t, l.Items[0].HasName)
	require.Equal(t, runState{ID: "b", Status: "finished", Result: "canceled", Name: "n", HasName: true,
		Template: "SELECT 1", From: "f", To: "t"}, l.Items[1])
	require.Equal(t, runList{Items: l.Items, Current: 1, Size: 50, Total: 3, ItemsTotal: 101}, l)

	l, err = decodeRunList([]byte(`{"items":[],"pages":{"current":-31584472,"size":-6135250,"total":"x"}}`))
	require.NoError(t, err, "Sophos's generated example: nonsense counts are unknown counts")
	require.Equal(t, runList{}, l)

	for _, bad := range []string{`{}`, `{"items":{}}`, `{"items":[null]}`, `{"items":[{"status":"x"}]}`, `{"items":[{"id":"a"}]}`, `[]`} {
		_, err := decodeRunList([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}
}

func TestDecodeAPIError(t *testing.T) {
	t.Parallel()
	require.Equal(t, apiError{Error: "ValidationException", Code: "400", CorrelationID: "3f2aa7bc-bbb1-4f93-8d56-acad5f6ad3dc",
		RequestID: "3dc153c6-03a4-45c9-abb0-8d4a7e41a96f", Message: "Invalid time range 'from' field: 2023-07-18T10:52:22Z - cannot be in the future."},
		decodeAPIError([]byte(`{"error":"ValidationException","correlationId":"3f2aa7bc-bbb1-4f93-8d56-acad5f6ad3dc",`+
			`"requestId":"3dc153c6-03a4-45c9-abb0-8d4a7e41a96f","createdAt":"2023-07-18T09:23:25.449Z","code":400,`+
			`"message":"Invalid time range 'from' field: 2023-07-18T10:52:22Z - cannot be in the future."}`)))

	cut := decodeAPIError([]byte(`{"error":"BadRequest","correlationId":"c-1","message":"a long message that was cut sho`))
	require.Equal(t, apiError{Error: "BadRequest", CorrelationID: "c-1"}, cut, "a snippet keeps the fields it holds whole")

	odd := decodeAPIError([]byte(`{"error":"bad word\n","code":"` + strings.Repeat("x", 200) + `","message":"line1\nline2\u0000","correlationId":{"a":1}}`))
	require.Equal(t, apiError{Message: "line1 line2"}, odd)

	require.True(t, decodeAPIError([]byte(`<html>502</html>`)).empty())
}

func TestDecodeIdentityError(t *testing.T) {
	t.Parallel()
	require.Equal(t, identityError{ErrorCode: "oauth.invalid_client_secret", TrackingID: "197a2922-65e4-4548-a0a1-79a13b12c8fc"},
		decodeIdentityError([]byte(`{"errorCode":"oauth.invalid_client_secret","message":"Unauthorized","trackingId":"197a2922-65e4-4548-a0a1-79a13b12c8fc"}`)))
	require.Equal(t, identityError{}, decodeIdentityError([]byte(`{"errorCode":"a+b/c=","trackingId":"x%2B"}`)),
		"nothing an encoded secret is made of")
}

func TestTruncateKeepsUTF8(t *testing.T) {
	t.Parallel()
	s := truncate(strings.Repeat("é", 10), 5)
	require.True(t, utf8.ValidString(s))
	require.Equal(t, "éé", s)
}

func FuzzDecodeToken(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{sophosToken, `{"access_token":"t","expires_in":"12.5"}`, `{"access_token":"t","expires_in":-1}`,
		`{"access_token":null}`, `{`, `{"data": [ {"id": "trunc`}, decodeToken, func(t *testing.T, tok token) {
		if tok.access == "" || tok.ttl <= 0 || tok.ttl > maxTokenTTL {
			t.Fatalf("accepted an unusable token: %+v", tok)
		}
		if strings.ContainsAny(tok.access, " \r\n\t") {
			t.Fatalf("token would break the Authorization header: %q", tok.access)
		}
	})
}

func FuzzDecodeRun(f *testing.F) {
	for _, s := range []string{docStarted, docFinished, `{"id": 1, "status": "running"}`, `{"result": "cancelled"}`,
		`{"id": "..", "status": "x"}`, `{"data": [ {"id": "trunc`} {
		f.Add([]byte(s))
	}
	d := &Driver{pollEvery: time.Second}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeRun(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error is not malformed: %v", err)
			}
			return
		}
		if r.Status == "" && r.Result == "" {
			t.Fatal("accepted a run with neither status nor result")
		}
		if r.ID != "" && !validID(r.ID) {
			t.Fatalf("accepted an unusable id %q", r.ID)
		}
		st, err := d.interpret(r)
		if err == nil && !st.Done && st.NextPoll != time.Second {
			t.Fatalf("in-progress status without NextPoll: %+v", st)
		}
		if len(st.Progress) > 40 {
			t.Fatalf("progress too long: %q", st.Progress)
		}
	})
}

func FuzzDecodeResults(f *testing.F) {
	for _, s := range []string{docResults, `{"items": []}`, `{"items": null, "pages": {"nextKey": ""}}`,
		`{"items": [{"meta_hostname": 1.5e3, "endpoint_id": "x"}], "pages": {"nextKey": 7}}`, `{"data": [ {"id": "trunc`,
		`{"pages": {"fromKey": "k"}}`, `{"items": [{"a": [[[[{}]]]]}], "metadata": {"columns": [{}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		g := &countingReader{r: bytes.NewReader(body)}
		p, err := decodeResults(g, 64)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errValueTooLarge) {
				t.Fatalf("error is neither malformed nor too large: %v", err)
			}
			return
		}
		if p.Read != g.n {
			t.Fatalf("Read %d, consumed %d", p.Read, g.n)
		}
		for _, h := range p.Hosts {
			if len(h) > 255 {
				t.Fatalf("host name not capped: %d bytes", len(h))
			}
		}
	})
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func FuzzDecodeRunList(f *testing.F) {
	edrtest.FuzzDecoder(f, []string{`{"items":[{"id":"a","createdAt":"2024-01-15T10:30:00.000Z","result":"notAvailable","status":"started"}],` +
		`"pages":{"current":50,"size":50,"total":50,"items":50,"maxSize":50}}`, `{"items":[]}`, `{"items":[{"id":1,"status":"x","name":null}]}`}, decodeRunList, func(t *testing.T, l runList) {
		for _, r := range l.Items {
			if r.ID == "" || !validID(r.ID) {
				t.Fatalf("accepted an unusable run %+v", r)
			}
		}
		if l.Current < 0 || l.Size < 0 || l.Total < 0 || l.ItemsTotal < 0 {
			t.Fatalf("negative counts %+v", l)
		}
	})
}

func FuzzDecodeErrors(f *testing.F) {
	for _, s := range []string{`{"error":"ValidationException","correlationId":"3f2aa7bc","code":400,"message":"m"}`,
		`{"errorCode":"oauth.invalid_client_secret","message":"Unauthorized","trackingId":"197a2922"}`, `{"error":"x","message":"cut`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a := decodeAPIError(body)
		for _, w := range []string{a.Error, a.Code, a.CorrelationID, a.RequestID} {
			if len(w) > maxErrWord || strings.ContainsAny(w, " \r\n\t\"") {
				t.Fatalf("unsafe word %q", w)
			}
		}
		if len(a.Message) > maxErrMessage || strings.ContainsAny(a.Message, "\r\n\x00") {
			t.Fatalf("unsafe message %q", a.Message)
		}
		ie := decodeIdentityError(body)
		for _, w := range []string{ie.ErrorCode, ie.TrackingID} {
			if strings.ContainsAny(w, "%+/= ") {
				t.Fatalf("identity word could carry an encoded secret: %q", w)
			}
		}
	})
}
