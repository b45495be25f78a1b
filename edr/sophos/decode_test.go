package sophos

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
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

func TestDecodeResults(t *testing.T) {
	t.Parallel()
	p, err := decodeResults([]byte(docResults))
	require.NoError(t, err)
	require.Equal(t, []string{"WIN-1", "e2", "WIN-1"}, p.Hosts, "meta_hostname, else endpoint_id")
	require.Equal(t, "AVCcdoKeugP+/Ve1kw==", p.NextKey)

	p, err = decodeResults([]byte(`{"items": null, "pages": {"nextKey": null}}`))
	require.NoError(t, err)
	require.Empty(t, p.Hosts)
	require.Empty(t, p.NextKey)

	p, err = decodeResults([]byte(`{"items": [null, {"meta_hostname": 42}]}`))
	require.NoError(t, err, "no pages: the last page")
	require.Equal(t, []string{"", "42"}, p.Hosts)

	for _, bad := range []string{`{}`, `{"items": {}}`, `{"items": [1]}`, `{"items": [], "pages": {"nextKey": {}}}`,
		`{"items": [], "pages": []}`, `[]`, `{"items": [`} {
		_, err := decodeResults([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}
}

func TestTruncateKeepsUTF8(t *testing.T) {
	t.Parallel()
	s := truncate(strings.Repeat("é", 10), 5)
	require.True(t, utf8.ValidString(s))
	require.Equal(t, "éé", s)
}

func FuzzDecodeToken(f *testing.F) {
	for _, s := range []string{sophosToken, `{"access_token":"t","expires_in":"12.5"}`, `{"access_token":"t","expires_in":-1}`,
		`{"access_token":null}`, `{`, `{"data": [ {"id": "trunc`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := decodeToken(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error is not malformed: %v", err)
			}
			return
		}
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
		`{"items": [{"meta_hostname": 1.5e3, "endpoint_id": "x"}], "pages": {"nextKey": 7}}`, `{"data": [ {"id": "trunc`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := decodeResults(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error is not malformed: %v", err)
			}
			return
		}
		for _, h := range p.Hosts {
			if len(h) > 255 {
				t.Fatalf("host name not capped: %d bytes", len(h))
			}
		}
	})
}
