package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/analysisfleet/analysisfleet/edr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// docExample is the job message exactly as the SampleDB documentation
// shows it (specs: "Job creation").
const docExample = `{
  "jobID": "12345678-1234-1234-1234-123456789abc",
  "submission": {
    "id": "abcdef01-abcd-abcd-abcd-abcdef012345",
    "customer": "customerid",
    "sample": {
      "id": "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"
    },
    "createdByUser": {
      "id": 0,
      "shortName": "sn",
      "name": "name",
      "customer": null,
      "domain": null
    },
    "createdTimestamp": 123,
    "name": "fielname.exe",
    "timestamp": 124,
    "mimeType": "application/octet-stream",
    "metaData": {
      "key": "value"
    },
    "tlp": "white",
    "acl": [],
    "userAgent": {
      "name": "python-requests",
      "version": "3"
    }
  },
  "classification": {
    "sample": "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9",
    "classificationID": "12345678-1234-1234-1234-123456789012",
    "createdTimestamp": 123,
    "version": "1",
    "type": "PE",
    "superType": "executable",
    "arch": "x86",
    "platform": "win",
    "meta": {}
  }
}`

const docHash = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"

// secret is planted in records to prove BadRecord.Detail never echoes them.
const secret = "SECRET-tok3n-9f8e7d6c5b4a"

// mutate returns docExample after f edited its generic form. Numbers stay
// json.Number so the untouched fields round-trip exactly.
func mutate(t testing.TB, f func(m map[string]any)) []byte {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(docExample))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	f(m)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	return b
}

func sub(m map[string]any) map[string]any { return m["submission"].(map[string]any) }
func cls(m map[string]any) map[string]any { return m["classification"].(map[string]any) }

type decodeCase struct {
	name   string
	value  []byte
	max    int
	reason string // "" = accepted
}

func decodeCases(t testing.TB) []decodeCase {
	ex := []byte(docExample)
	return []decodeCase{
		{name: "document example", value: ex},
		{name: "document example compact", value: mutate(t, func(map[string]any) {})},
		{name: "unknown fields ignored", value: mutate(t, func(m map[string]any) {
			m["futureField"] = map[string]any{"x": []any{1, "two"}}
			sub(m)["priority"] = "high"
		})},
		{name: "upper-case UUID", value: mutate(t, func(m map[string]any) { m["jobID"] = "ABCDEF01-ABCD-ABCD-ABCD-ABCDEF012345" })},
		{name: "upper-case hex hash", value: mutate(t, func(m map[string]any) {
			sub(m)["sample"] = map[string]any{"id": strings.ToUpper(docHash)}
		})},
		{name: "no classification.sample", value: mutate(t, func(m map[string]any) { delete(cls(m), "sample") })},
		{name: "no classification at all", value: mutate(t, func(m map[string]any) { delete(m, "classification") })},
		{name: "exactly at the limit", value: ex, max: len(ex)},
		{name: "limit 0 means unlimited", value: ex, max: 0},
		{name: "surrounding whitespace", value: []byte("\n\t " + docExample + " \r\n")},

		{name: "over the limit by one byte", value: ex, max: len(ex) - 1, reason: ReasonOversized},
		{name: "oversized whitespace", value: bytes.Repeat([]byte(" "), 100), max: 10, reason: ReasonOversized},

		{name: "empty", value: nil, reason: ReasonEmptyRecord},
		{name: "zero length", value: []byte{}, reason: ReasonEmptyRecord},
		{name: "only whitespace", value: []byte(" \n\t\r "), reason: ReasonEmptyRecord},

		{name: "not JSON", value: []byte("not json at all"), reason: ReasonNotJSON},
		{name: "truncated JSON", value: ex[:len(ex)/2], reason: ReasonNotJSON},
		{name: "two objects", value: []byte(docExample + docExample), reason: ReasonNotJSON},
		{name: "trailing garbage", value: []byte(docExample + " x"), reason: ReasonNotJSON},
		{name: "single quotes", value: []byte(`{'jobID': '12345678-1234-1234-1234-123456789abc'}`), reason: ReasonNotJSON},
		{name: "byte order mark", value: append([]byte("\xef\xbb\xbf"), ex...), reason: ReasonNotJSON},

		{name: "top-level array", value: []byte(`[` + docExample + `]`), reason: ReasonWrongType},
		{name: "top-level string", value: []byte(`"` + secret + `"`), reason: ReasonWrongType},
		{name: "top-level number", value: []byte(`12345`), reason: ReasonWrongType},
		{name: "top-level null", value: []byte(`null`), reason: ReasonWrongType},
		{name: "top-level true", value: []byte(`true`), reason: ReasonWrongType},

		{name: "missing jobID", value: mutate(t, func(m map[string]any) { delete(m, "jobID") }), reason: ReasonMissingJobID},
		{name: "null jobID", value: mutate(t, func(m map[string]any) { m["jobID"] = nil }), reason: ReasonMissingJobID},
		{name: "empty jobID", value: mutate(t, func(m map[string]any) { m["jobID"] = "" }), reason: ReasonMissingJobID},
		{name: "empty object", value: []byte(`{}`), reason: ReasonMissingJobID},

		{name: "non-UUID jobID", value: mutate(t, func(m map[string]any) { m["jobID"] = "job-42" }), reason: ReasonInvalidJobID},
		{name: "jobID without dashes", value: mutate(t, func(m map[string]any) { m["jobID"] = "12345678123412341234123456789abc" }), reason: ReasonInvalidJobID},
		{name: "jobID in braces", value: mutate(t, func(m map[string]any) { m["jobID"] = "{12345678-1234-1234-1234-123456789abc}" }), reason: ReasonInvalidJobID},
		{name: "jobID trailing newline", value: mutate(t, func(m map[string]any) { m["jobID"] = "12345678-1234-1234-1234-123456789abc\n" }), reason: ReasonInvalidJobID},
		{name: "jobID non-hex", value: mutate(t, func(m map[string]any) { m["jobID"] = "1234567g-1234-1234-1234-123456789abc" }), reason: ReasonInvalidJobID},
		{name: "jobID injection", value: mutate(t, func(m map[string]any) { m["jobID"] = "x' OR 1=1--" }), reason: ReasonInvalidJobID},

		{name: "missing hash", value: mutate(t, func(m map[string]any) { delete(sub(m), "sample") }), reason: ReasonInvalidHash},
		{name: "missing submission", value: mutate(t, func(m map[string]any) { delete(m, "submission") }), reason: ReasonInvalidHash},
		{name: "null hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": nil} }), reason: ReasonInvalidHash},
		{name: "injection hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": "x' OR 1=1--"} }), reason: ReasonInvalidHash},
		{name: "63-char hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": docHash[:63]} }), reason: ReasonInvalidHash},
		{name: "65-char hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": docHash + "0"} }), reason: ReasonInvalidHash},
		{name: "non-hex hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": "g" + docHash[1:]} }), reason: ReasonInvalidHash},
		{name: "padded hash", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": " " + docHash + " "} }), reason: ReasonInvalidHash},
		{name: "hash with quote and space injection", value: mutate(t, func(m map[string]any) {
			sub(m)["sample"] = map[string]any{"id": docHash[:60] + `" OR`}
		}), reason: ReasonInvalidHash},
		{name: "classification hash mismatch", value: mutate(t, func(m map[string]any) {
			cls(m)["sample"] = strings.Repeat("a", 64)
		}), reason: ReasonInvalidHash},
		{name: "classification hash invalid", value: mutate(t, func(m map[string]any) { cls(m)["sample"] = "x' OR 1=1--" }), reason: ReasonInvalidHash},

		{name: "jobID number", value: mutate(t, func(m map[string]any) { m["jobID"] = 12345 }), reason: ReasonWrongType},
		{name: "jobID object", value: mutate(t, func(m map[string]any) { m["jobID"] = map[string]any{"id": "x"} }), reason: ReasonWrongType},
		{name: "submission string", value: mutate(t, func(m map[string]any) { m["submission"] = "sub" }), reason: ReasonWrongType},
		{name: "submission array", value: mutate(t, func(m map[string]any) { m["submission"] = []any{} }), reason: ReasonWrongType},
		{name: "metaData array", value: mutate(t, func(m map[string]any) { sub(m)["metaData"] = []any{"a"} }), reason: ReasonWrongType},
		{name: "metaData string", value: mutate(t, func(m map[string]any) { sub(m)["metaData"] = "k=v" }), reason: ReasonWrongType},
		{name: "sample.id number", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": 42} }), reason: ReasonWrongType},
		{name: "sample string", value: mutate(t, func(m map[string]any) { sub(m)["sample"] = docHash }), reason: ReasonWrongType},
		{name: "classification.platform number", value: mutate(t, func(m map[string]any) { cls(m)["platform"] = 7 }), reason: ReasonWrongType},
		{name: "classification.platform array", value: mutate(t, func(m map[string]any) { cls(m)["platform"] = []any{"win"} }), reason: ReasonWrongType},
		{name: "submission.name number", value: mutate(t, func(m map[string]any) { sub(m)["name"] = 5 }), reason: ReasonWrongType},
		{name: "submission.customer object", value: mutate(t, func(m map[string]any) { sub(m)["customer"] = map[string]any{"id": 1} }), reason: ReasonWrongType},
		{name: "classification.type number", value: mutate(t, func(m map[string]any) { cls(m)["type"] = 1 }), reason: ReasonWrongType},
		{name: "classification.sample object", value: mutate(t, func(m map[string]any) { cls(m)["sample"] = map[string]any{"id": docHash} }), reason: ReasonWrongType},
		{name: "classification string", value: mutate(t, func(m map[string]any) { m["classification"] = "PE" }), reason: ReasonWrongType},
	}
}

// unreadCases are the document example with fields the fleet never reads
// in shapes other than the document shows: all accepted.
func unreadCases(t testing.TB) []decodeCase {
	user := func(m map[string]any) map[string]any { return sub(m)["createdByUser"].(map[string]any) }
	ua := func(m map[string]any) map[string]any { return sub(m)["userAgent"].(map[string]any) }
	return []decodeCase{
		{name: "createdByUser.customer object", value: mutate(t, func(m map[string]any) {
			user(m)["customer"] = map[string]any{"id": 1, "shortName": "acme", "name": "Acme"}
		})},
		{name: "createdByUser.domain object", value: mutate(t, func(m map[string]any) { user(m)["domain"] = map[string]any{"id": 2, "name": "mnemonic"} })},
		{name: "createdByUser.customer string", value: mutate(t, func(m map[string]any) { user(m)["customer"] = "acme" })},
		{name: "createdByUser.id string", value: mutate(t, func(m map[string]any) { user(m)["id"] = "zero" })},
		{name: "createdByUser.id fraction", value: mutate(t, func(m map[string]any) { user(m)["id"] = json.Number("1.5") })},
		{name: "createdByUser a string", value: mutate(t, func(m map[string]any) { sub(m)["createdByUser"] = "analyst" })},
		{name: "createdByUser null", value: mutate(t, func(m map[string]any) { sub(m)["createdByUser"] = nil })},
		{name: "userAgent.version number", value: mutate(t, func(m map[string]any) { ua(m)["version"] = 3 })},
		{name: "userAgent an array", value: mutate(t, func(m map[string]any) { sub(m)["userAgent"] = []any{"python-requests", "3"} })},
		{name: "submission.id number", value: mutate(t, func(m map[string]any) { sub(m)["id"] = 17 })},
		{name: "createdTimestamp string", value: mutate(t, func(m map[string]any) { sub(m)["createdTimestamp"] = "123" })},
		{name: "createdTimestamp fraction", value: mutate(t, func(m map[string]any) { sub(m)["createdTimestamp"] = json.Number("123.5") })},
		{name: "createdTimestamp overflow", value: mutate(t, func(m map[string]any) {
			sub(m)["createdTimestamp"] = json.Number("123456789012345678901234567890")
		})},
		{name: "timestamp RFC 3339", value: mutate(t, func(m map[string]any) { sub(m)["timestamp"] = "2024-01-01T00:00:00Z" })},
		{name: "mimeType null", value: mutate(t, func(m map[string]any) { sub(m)["mimeType"] = nil })},
		{name: "tlp object", value: mutate(t, func(m map[string]any) { sub(m)["tlp"] = map[string]any{"name": "white"} })},
		{name: "acl object", value: mutate(t, func(m map[string]any) { sub(m)["acl"] = map[string]any{"read": []any{1}} })},
		{name: "classification.version number", value: mutate(t, func(m map[string]any) { cls(m)["version"] = 1 })},
		{name: "classification.classificationID number", value: mutate(t, func(m map[string]any) { cls(m)["classificationID"] = 5 })},
		{name: "classification createdTimestamp bool", value: mutate(t, func(m map[string]any) { cls(m)["createdTimestamp"] = true })},
		{name: "classification.superType list", value: mutate(t, func(m map[string]any) { cls(m)["superType"] = []any{"executable"} })},
		{name: "classification.arch number", value: mutate(t, func(m map[string]any) { cls(m)["arch"] = 64 })},
		{name: "classification.meta array", value: mutate(t, func(m map[string]any) { cls(m)["meta"] = []any{"x"} })},
	}
}

// A valid message is never dead-lettered over a field the fleet does not
// read; what it reads is intact.
func TestDecodeToleratesFieldsTheFleetDoesNotRead(t *testing.T) {
	t.Parallel()
	for _, c := range unreadCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg, err := Decode(c.value, 0)
			require.NoError(t, err)
			require.Equal(t, "12345678-1234-1234-1234-123456789abc", msg.JobID)
			require.Equal(t, docHash, msg.Submission.Sample.ID)
			require.Equal(t, "customerid", msg.Submission.Customer)
			require.Equal(t, "fielname.exe", msg.Submission.Name)
			require.Equal(t, map[string]any{"key": "value"}, msg.Submission.MetaData)
			require.Equal(t, "win", msg.Classification.Platform)
			require.Equal(t, "PE", msg.Classification.Type)
			require.Equal(t, docHash, msg.Classification.Sample)
		})
	}
	// An object where the document shows null is kept as sent.
	msg, err := Decode(unreadCases(t)[0].value, 0)
	require.NoError(t, err)
	require.JSONEq(t, `{"id":1,"shortName":"acme","name":"Acme"}`, string(msg.Submission.CreatedByUser.Customer))
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, c := range decodeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			msg, err := Decode(c.value, c.max)
			if c.reason == "" {
				require.NoError(t, err)
				require.NotNil(t, msg)
				return
			}
			require.Nil(t, msg)
			var bad *BadRecord
			require.ErrorAs(t, err, &bad)
			require.Equal(t, c.reason, bad.Reason, "detail: %s", bad.Detail)
			require.NotEmpty(t, bad.Detail)
			require.Equal(t, bad.Reason+": "+bad.Detail, err.Error())
		})
	}
}

func TestDecodeDocumentExample(t *testing.T) {
	t.Parallel()
	msg, err := Decode([]byte(docExample), 1<<20)
	require.NoError(t, err)
	require.Equal(t, "12345678-1234-1234-1234-123456789abc", msg.JobID)
	require.Equal(t, "abcdef01-abcd-abcd-abcd-abcdef012345", msg.Submission.ID)
	require.Equal(t, "customerid", msg.Submission.Customer)
	require.Equal(t, docHash, msg.Submission.Sample.ID)
	require.Equal(t, int64(123), msg.Submission.CreatedTimestamp)
	require.Equal(t, int64(124), msg.Submission.Timestamp)
	require.Equal(t, "fielname.exe", msg.Submission.Name)
	require.Equal(t, "white", msg.Submission.TLP)
	require.Equal(t, map[string]any{"key": "value"}, msg.Submission.MetaData)
	require.NotNil(t, msg.Submission.CreatedByUser)
	require.Equal(t, "sn", msg.Submission.CreatedByUser.ShortName)
	require.JSONEq(t, `null`, string(msg.Submission.CreatedByUser.Customer))
	require.NotNil(t, msg.Submission.UserAgent)
	require.Equal(t, "python-requests", msg.Submission.UserAgent.Name)
	require.Equal(t, docHash, msg.Classification.Sample)
	require.Equal(t, "win", msg.Classification.Platform)
	require.Equal(t, "PE", msg.Classification.Type)
	require.Equal(t, "x86", msg.Classification.Arch)
}

// Numbers in metaData stay json.Number: job.TargetOf relies on it to read
// sensor IDs without float rounding.
func TestDecodeKeepsMetaDataNumbersExact(t *testing.T) {
	t.Parallel()
	msg, err := Decode(mutate(t, func(m map[string]any) {
		sub(m)["metaData"] = map[string]any{"sensorId": json.Number("9007199254740993")}
	}), 0)
	require.NoError(t, err)
	require.Equal(t, json.Number("9007199254740993"), msg.Submission.MetaData["sensorId"])
}

// The Detail goes into a DLQ header and a log line: it must never carry the
// record's bytes, whatever part of the record is wrong.
func TestDecodeDetailNeverEchoesRecord(t *testing.T) {
	t.Parallel()
	const cardLike = "4111111111111111" // a secret-looking number
	for _, c := range []struct {
		name   string
		value  []byte
		reason string
	}{
		{"secret jobID", mutate(t, func(m map[string]any) { m["jobID"] = secret }), ReasonInvalidJobID},
		{"secret hash", mutate(t, func(m map[string]any) { sub(m)["sample"] = map[string]any{"id": secret} }), ReasonInvalidHash},
		{"secret classification hash", mutate(t, func(m map[string]any) { cls(m)["sample"] = secret }), ReasonInvalidHash},
		{"secret in truncated record", []byte(`{"jobID": "` + secret), ReasonNotJSON},
		{"secret as bare word", []byte(secret), ReasonNotJSON},
		{"secret top-level string", []byte(`"` + secret + `"`), ReasonWrongType},
		{"secret where an object belongs", mutate(t, func(m map[string]any) { sub(m)["metaData"] = secret }), ReasonWrongType},
		{"secret string where an object belongs", mutate(t, func(m map[string]any) { sub(m)["sample"] = secret }), ReasonWrongType},
		{"secret number where a string belongs", mutate(t, func(m map[string]any) { m["jobID"] = json.Number(cardLike) }), ReasonWrongType},
		{"secret fractional number", mutate(t, func(m map[string]any) { sub(m)["name"] = json.Number(cardLike + ".5") }), ReasonWrongType},
		{"secret overflowing number", mutate(t, func(m map[string]any) {
			cls(m)["platform"] = json.Number(cardLike + cardLike)
		}), ReasonWrongType},
		{"secret object where a string belongs", mutate(t, func(m map[string]any) {
			sub(m)["customer"] = map[string]any{secret: secret}
		}), ReasonWrongType},
		{"secret in a field the fleet does not read, bad jobID", mutate(t, func(m map[string]any) {
			sub(m)["createdTimestamp"] = secret
			m["jobID"] = "nope"
		}), ReasonInvalidJobID},
		{"secret in unknown field with bad jobID", mutate(t, func(m map[string]any) {
			m[secret] = secret
			m["jobID"] = "nope"
		}), ReasonInvalidJobID},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode(c.value, 0)
			var bad *BadRecord
			require.ErrorAs(t, err, &bad)
			require.Equal(t, c.reason, bad.Reason)
			require.NotContains(t, bad.Detail, secret)
			require.NotContains(t, bad.Detail, cardLike)
			require.NotContains(t, err.Error(), secret)
			require.NotContains(t, err.Error(), cardLike)
		})
	}
}

// A number of a megabyte must not become a megabyte of DLQ header.
func TestDecodeDetailIsShort(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("9", 512<<10)
	_, err := Decode(mutate(t, func(m map[string]any) { sub(m)["name"] = json.Number(huge) }), 0)
	var bad *BadRecord
	require.ErrorAs(t, err, &bad)
	require.Equal(t, ReasonWrongType, bad.Reason)
	require.Less(t, len(bad.Detail), 256, bad.Detail)
	require.Contains(t, bad.Detail, "submission.name", "the detail names the field")

	// In a field the fleet does not read it costs nothing.
	_, err = Decode(mutate(t, func(m map[string]any) { sub(m)["createdTimestamp"] = json.Number(huge) }), 0)
	require.NoError(t, err)
}

var (
	fuzzUUID     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	knownReasons = []string{
		ReasonOversized, ReasonNotJSON, ReasonWrongType, ReasonMissingJobID,
		ReasonInvalidJobID, ReasonInvalidHash, ReasonInvalidField, ReasonEmptyRecord, ReasonAmbiguousField,
	}
)

func FuzzDecode(f *testing.F) {
	for _, c := range append(append(decodeCases(f), unreadCases(f)...), append(ambiguousCases(), unambiguousCases()...)...) {
		f.Add(c.value)
	}
	// Spellings encoding/json folds together: the Kelvin sign and the long s.
	f.Add([]byte(`{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"sample":{"id":"` + docHash + `"},"metaData":{"sensorIds":[1],"ſensorIds":[2]}},"classification":{"Kind":1,"type":"PE","TYPE":"x"}}`))
	f.Add([]byte(`{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"sample":{"id":"` + docHash + `"}},"submiſſion":null}`))
	f.Add([]byte(`{"jobID":"12345678-1234-1234-1234-123456789abc","submission":{"sample":{"id":"` + docHash + `"},"metaData":{"sensorIds":[1,"2"," 3 "],"path":"C:\\x.exe"}}}`))
	f.Fuzz(func(t *testing.T, value []byte) {
		const limit = 1 << 16
		msg, err := Decode(value, limit)
		if err != nil {
			require.Nil(t, msg)
			var bad *BadRecord
			require.True(t, errors.As(err, &bad), "error %T is not a *BadRecord", err)
			require.True(t, slices.Contains(knownReasons, bad.Reason), "unknown reason %q", bad.Reason)
			require.NotEmpty(t, bad.Detail)
			require.Less(t, len(bad.Detail), 512, "detail must stay short")
			if len(value) > limit {
				require.Equal(t, ReasonOversized, bad.Reason)
			}
			return
		}
		require.NotNil(t, msg)
		require.LessOrEqual(t, len(value), limit)
		require.Regexp(t, fuzzUUID, msg.JobID)
		require.Equal(t, strings.ToLower(msg.JobID), msg.JobID, "the job ID is canonical")
		// The value the ledger keeps decodes to the same message.
		_, stored, err := DecodeRecord(value, limit)
		require.NoError(t, err)
		again, err := Decode(stored, 0)
		require.NoError(t, err)
		require.Equal(t, msg, again)
		sha, herr := edr.ValidSHA256(msg.Submission.Sample.ID)
		require.NoError(t, herr)
		if msg.Classification.Sample != "" {
			csha, cerr := edr.ValidSHA256(msg.Classification.Sample)
			require.NoError(t, cerr)
			require.Equal(t, sha, csha)
		}
		// Accepted at its own size, refused one byte below it.
		_, err = Decode(value, len(value))
		require.NoError(t, err)
		_, err = Decode(value, len(value)-1)
		var bad *BadRecord
		require.ErrorAs(t, err, &bad)
		require.Equal(t, ReasonOversized, bad.Reason)
	})
}
