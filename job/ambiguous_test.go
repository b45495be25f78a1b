package job

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	ambJobID = `"jobID":"12345678-1234-1234-1234-123456789abc"`
	ambSub   = `"submission":{"customer":"acme","sample":{"id":"` + docHash + `"},"name":"x.exe","metaData":{"sensorId":"7","path":"C:\\x.exe"}}`
	ambCls   = `"classification":{"sample":"` + docHash + `","type":"PE","platform":"win"}`
)

// ambiguousCases are messages in which a field the fleet reads appears
// more than once, under one spelling or several that encoding/json takes
// for the same field (it matches keys case-insensitively, and the last one
// wins): each is refused.
func ambiguousCases() []decodeCase {
	sub := func(inner string) string { return `"submission":{` + inner + `}` }
	cls := func(inner string) string { return `"classification":{` + inner + `}` }
	sample := `"sample":{"id":"` + docHash + `"}`
	obj := func(parts ...string) []byte { return []byte("{" + strings.Join(parts, ",") + "}") }
	return []decodeCase{
		{name: "jobID twice", value: obj(ambJobID, ambSub, ambCls, `"jobID":"87654321-1234-1234-1234-123456789abc"`)},
		{name: "jobID and JOBID", value: obj(ambJobID, `"JOBID":"87654321-1234-1234-1234-123456789abc"`, ambSub, ambCls)},
		{name: "jobID and jobId", value: obj(`"jobId":"87654321-1234-1234-1234-123456789abc"`, ambJobID, ambSub, ambCls)},
		{name: "jobID and an escaped spelling", value: obj(ambJobID, `"job\u0049d":"87654321-1234-1234-1234-123456789abc"`, ambSub, ambCls)},
		{name: "jobID twice, the second not even a string", value: obj(ambJobID, ambSub, ambCls, `"jobID":null`)},
		{name: "submission twice", value: obj(ambJobID, ambSub, ambCls, sub(sample))},
		{name: "submission and a long-s spelling", value: obj(ambJobID, ambSub, ambCls, `"ſubmission":{}`)},
		{name: "classification and Classification", value: obj(ambJobID, ambSub, ambCls, `"Classification":{}`)},
		{name: "submission.customer twice", value: obj(ambJobID, sub(sample+`,"customer":"acme","Customer":"evil"`), ambCls)},
		{name: "submission.sample twice", value: obj(ambJobID, sub(sample+`,"SAMPLE":{"id":"`+strings.Repeat("a", 64)+`"}`), ambCls)},
		{name: "submission.sample.id and ID", value: obj(ambJobID, sub(`"sample":{"id":"`+docHash+`","ID":"`+strings.Repeat("a", 64)+`"}`), ambCls)},
		{name: "submission.name twice", value: obj(ambJobID, sub(sample+`,"name":"a","name":"b"`), ambCls)},
		{name: "submission.metaData twice", value: obj(ambJobID, sub(sample+`,"metaData":{},"metadata":{"sensorId":1}`), ambCls)},
		{name: "metaData.sensorId twice", value: obj(ambJobID, sub(sample+`,"metaData":{"sensorId":1,"sensorId":2}`), ambCls)},
		{name: "metaData.sensorId and sensorID", value: obj(ambJobID, sub(sample+`,"metaData":{"sensorId":1,"sensorID":2}`), ambCls)},
		{name: "metaData.sensorIds and SENSORIDS", value: obj(ambJobID, sub(sample+`,"metaData":{"SENSORIDS":[3],"sensorIds":[1,2]}`), ambCls)},
		{name: "metaData.path twice", value: obj(ambJobID, sub(sample+`,"metaData":{"path":"a","path":"b"}`), ambCls)},
		{name: "metaData.filePath and FilePath", value: obj(ambJobID, sub(sample+`,"metaData":{"filePath":"a","FilePath":"b"}`), ambCls)},
		{name: "classification.sample twice", value: obj(ambJobID, ambSub, cls(`"sample":"`+docHash+`","sample":"`+docHash+`"`))},
		{name: "classification.type and TYPE", value: obj(ambJobID, ambSub, cls(`"type":"PE","TYPE":"ELF"`))},
		{name: "classification.platform and Platform", value: obj(ambJobID, ambSub, cls(`"platform":"win","Platform":"linux"`))},
	}
}

// unambiguousCases repeat only what the fleet does not read, or keys that
// are different fields: accepted.
func unambiguousCases() []decodeCase {
	sample := `"sample":{"id":"` + docHash + `"}`
	obj := func(parts ...string) []byte { return []byte("{" + strings.Join(parts, ",") + "}") }
	return []decodeCase{
		{name: "an unread top-level field twice", value: obj(ambJobID, ambSub, ambCls, `"future":1,"future":2,"FUTURE":3`)},
		{name: "submission.tlp twice", value: obj(ambJobID, `"submission":{`+sample+`,"tlp":"white","tlp":"red"}`, ambCls)},
		{name: "an unread metaData key twice", value: obj(ambJobID, `"submission":{`+sample+`,"metaData":{"key":1,"key":2,"sensorId":7}}`, ambCls)},
		{name: "sensorId and sensorIds, path and filePath", value: obj(ambJobID, `"submission":{`+sample+`,"metaData":{"sensorId":1,"sensorIds":[2],"path":"a","filePath":"b"}}`, ambCls)},
		{name: "createdByUser.name twice", value: obj(ambJobID, `"submission":{`+sample+`,"createdByUser":{"name":"a","name":"b"}}`, ambCls)},
		{name: "classification.meta keys twice", value: obj(ambJobID, ambSub, `"classification":{"platform":"win","meta":{"a":1,"a":2}}`)},
		{name: "sample at two levels", value: obj(ambJobID, ambSub, ambCls, `"sample":{"id":"x"}`)},
	}
}

// TestDecodeRefusesAmbiguousFields: encoding/json reads a repeated key last
// wins and matches keys case-insensitively, so {"jobID": a, "JOBID": b} is
// job b to the fleet and maybe job a to another reader. A record in which
// a field the fleet reads appears more than once, at any level the fleet
// reads, is dead-lettered as ambiguous_field, naming the field.
func TestDecodeRefusesAmbiguousFields(t *testing.T) {
	t.Parallel()
	for _, c := range ambiguousCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg, err := Decode(c.value, 0)
			require.Nil(t, msg)
			var bad *BadRecord
			require.ErrorAs(t, err, &bad)
			require.Equal(t, ReasonAmbiguousField, bad.Reason, "detail: %s", bad.Detail)
			require.Contains(t, bad.Detail, "appears 2 times")
			require.Less(t, len(bad.Detail), 256)
		})
	}
	for _, c := range unambiguousCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg, err := Decode(c.value, 0)
			require.NoError(t, err)
			require.Equal(t, "12345678-1234-1234-1234-123456789abc", msg.JobID)
		})
	}
	_, err := Decode([]byte(`{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"sample":{"id":"`+docHash+`","Id":"x"}}}`), 0)
	require.EqualError(t, err, `ambiguous_field: field submission.sample.id appears 2 times (as "id", "Id"): which one counts is ambiguous`)
	_, err = Decode([]byte(`{"jobID":"12345678-1234-1234-1234-123456789abc"`+strings.Repeat(`,"JOBID":1,"jobid":2,"JobId":3`, 1000)+`}`), 0)
	require.EqualError(t, err, `ambiguous_field: field jobID appears 3001 times (as "jobID", "JOBID", "jobid", …): which one counts is ambiguous`)
}

// TestSameFieldIsEncodingJSONs: the ambiguity check takes a key for a
// field exactly when encoding/json decodes the key into that field.
func TestSameFieldIsEncodingJSONs(t *testing.T) {
	t.Parallel()
	for _, key := range []string{
		"jobID", "jobid", "JOBID", "JobId", "jobI", "jobIDs", "job_id", "job-id", " jobID", "jobıd", "jobİD",
		"sample", "ſample", "SAMPLE", "ſampLe", "sampl", "\u212aind", "kind", "KIND", "sensorIds", "ſenſorIdſ", "filePath", "FILEPATH",
	} {
		for _, field := range []string{"jobID", "sample", "kind", "sensorIds", "filePath"} {
			var v struct {
				JobID     string `json:"jobID"`
				Sample    string `json:"sample"`
				Kind      string `json:"kind"`
				SensorIDs string `json:"sensorIds"`
				FilePath  string `json:"filePath"`
			}
			raw, err := json.Marshal(map[string]string{key: "x"})
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(raw, &v))
			got := map[string]string{"jobID": v.JobID, "sample": v.Sample, "kind": v.Kind, "sensorIds": v.SensorIDs, "filePath": v.FilePath}[field]
			require.Equal(t, got == "x", sameField([]byte(key), field), "key %q, field %s", key, field)
		}
	}
}

// FuzzMembers checks the object scanner against encoding/json's own
// tokenizer: the same keys, the same values, in the same order.
func FuzzMembers(f *testing.F) {
	for _, c := range append(append(decodeCases(f), unreadCases(f)...), append(ambiguousCases(), unambiguousCases()...)...) {
		f.Add(c.value)
	}
	f.Add([]byte(`{"a\"b":"c\\","\u00e9\ud83d\ude00":[{"x":"]}"}],"n":-1.5e3 , "t":true,"z":null}`))
	f.Add([]byte("{\"\xff\":1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = bytes.TrimSpace(b)
		if !json.Valid(b) || len(b) == 0 || b[0] != '{' {
			return
		}
		type kv struct{ key, value string }
		var want []kv
		dec := json.NewDecoder(bytes.NewReader(b))
		_, err := dec.Token()
		require.NoError(t, err)
		for dec.More() {
			tok, err := dec.Token()
			require.NoError(t, err)
			var raw json.RawMessage
			require.NoError(t, dec.Decode(&raw))
			want = append(want, kv{tok.(string), string(raw)})
		}
		var got []kv
		require.NoError(t, members(b, func(key []byte, start, end int) error {
			got = append(got, kv{string(key), string(b[start:end])})
			return nil
		}))
		require.Equal(t, want, got)
	})
}
