package job

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr"
)

const tgtHash = "8f84837cf04c1694512256ef78fa67c051b92326e31af2598efad37ccd2e01d9"

// metaNumber decodes metaData as job.Decode does (numbers are
// json.Number); metaFloat as plain encoding/json does (numbers are float64).
func metaNumber(t testing.TB, doc string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	require.NoError(t, dec.Decode(&m))
	return m
}

func metaFloat(t testing.TB, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(doc), &m))
	return m
}

func tgtMsg(md map[string]any) *Message {
	return &Message{
		JobID: "12345678-1234-1234-1234-123456789abc",
		Submission: Submission{
			Name:     "fielname.exe",
			Sample:   Sample{ID: tgtHash},
			MetaData: md,
		},
		Classification: Classification{Platform: "win", Type: "PE"},
	}
}

func idList(n, from int) string {
	var parts []string
	for i := range n {
		parts = append(parts, fmt.Sprint(from+i))
	}
	return strings.Join(parts, ",")
}

func TestTargetMetaData(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		meta    string
		sensors []int64
		path    string
		note    string // substring of the one note; "" = no note
	}{
		{name: "no metaData", meta: `null`},
		{name: "unrelated metaData", meta: `{"key": "value", "sensor": 5}`},
		{name: "sensorId number", meta: `{"sensorId": 42}`, sensors: []int64{42}},
		{name: "sensorId string", meta: `{"sensorId": "42"}`, sensors: []int64{42}},
		{name: "sensorId padded string", meta: `{"sensorId": " 42 "}`, sensors: []int64{42}},
		{name: "sensorId large", meta: `{"sensorId": 4294967297}`, sensors: []int64{4294967297}},
		{name: "sensorIds numbers", meta: `{"sensorIds": [3, 1, 2]}`, sensors: []int64{3, 1, 2}},
		{name: "sensorIds strings", meta: `{"sensorIds": ["10", "11"]}`, sensors: []int64{10, 11}},
		{name: "sensorIds mixed", meta: `{"sensorIds": [10, "11"]}`, sensors: []int64{10, 11}},
		{name: "sensorIds comma-separated", meta: `{"sensorIds": "1, 2,3"}`, sensors: []int64{1, 2, 3}},
		{name: "sensorIds comma-separated with blanks", meta: `{"sensorIds": ",1,, 2 ,"}`, sensors: []int64{1, 2}},
		{name: "sensorIds single number", meta: `{"sensorIds": 7}`, sensors: []int64{7}},
		{name: "sensorIds empty list", meta: `{"sensorIds": []}`},
		{name: "sensorIds empty string", meta: `{"sensorIds": ""}`},
		{name: "nulls", meta: `{"sensorId": null, "sensorIds": null}`},
		{name: "duplicates removed", meta: `{"sensorId": 5, "sensorIds": [5, 6, "5", "6", 6]}`, sensors: []int64{5, 6}},
		{name: "duplicates in string", meta: `{"sensorIds": "9,9, 9"}`, sensors: []int64{9}},
		{name: "32 sensors", meta: `{"sensorIds": "` + idList(32, 1) + `"}`, sensors: seq(32, 1)},
		{name: "40 entries, 32 distinct", meta: `{"sensorIds": "` + idList(32, 1) + "," + idList(8, 1) + `"}`, sensors: seq(32, 1)},
		{name: "sensorId plus 31", meta: `{"sensorId": 100, "sensorIds": "` + idList(31, 1) + `"}`, sensors: append([]int64{100}, seq(31, 1)...)},

		{name: "33 sensors", meta: `{"sensorIds": "` + idList(33, 1) + `"}`, note: "33 sensors; at most 32"},
		{name: "sensorId plus 32", meta: `{"sensorId": 100, "sensorIds": "` + idList(32, 1) + `"}`, note: "at most 32"},
		{name: "sensorId 0", meta: `{"sensorId": 0}`, note: "metaData.sensorId"},
		{name: "sensorId -1", meta: `{"sensorId": -1}`, note: "metaData.sensorId"},
		{name: "sensorId 1.5", meta: `{"sensorId": 1.5}`, note: "metaData.sensorId"},
		{name: "sensorId abc", meta: `{"sensorId": "abc"}`, note: "metaData.sensorId"},
		{name: "sensorId empty string", meta: `{"sensorId": ""}`, note: "metaData.sensorId"},
		{name: "sensorId object", meta: `{"sensorId": {"id": 1}}`, note: "metaData.sensorId"},
		{name: "sensorId list", meta: `{"sensorId": [1]}`, note: "metaData.sensorId"},
		{name: "sensorId bool", meta: `{"sensorId": true}`, note: "metaData.sensorId"},
		{name: "sensorId overflow", meta: `{"sensorId": "9223372036854775808"}`, note: "metaData.sensorId"},
		{name: "sensorId injection", meta: `{"sensorId": "1 OR 1=1"}`, note: "metaData.sensorId"},
		{name: "sensorIds with 0", meta: `{"sensorIds": [1, 0]}`, note: "metaData.sensorIds"},
		{name: "sensorIds with -1", meta: `{"sensorIds": [-1]}`, note: "metaData.sensorIds"},
		{name: "sensorIds with 1.5", meta: `{"sensorIds": [1.5]}`, note: "metaData.sensorIds"},
		{name: "sensorIds with abc", meta: `{"sensorIds": ["1", "abc"]}`, note: "metaData.sensorIds"},
		{name: "sensorIds string with abc", meta: `{"sensorIds": "1,abc"}`, note: "metaData.sensorIds"},
		{name: "sensorIds object", meta: `{"sensorIds": {"a": 1}}`, note: "metaData.sensorIds"},
		{name: "sensorIds nested list", meta: `{"sensorIds": [[1]]}`, note: "metaData.sensorIds"},
		{name: "sensorIds with null", meta: `{"sensorIds": [1, null]}`, note: "metaData.sensorIds"},
		{name: "sensorIds bool", meta: `{"sensorIds": false}`, note: "metaData.sensorIds"},

		{name: "path", meta: `{"path": "C:\\Temp\\x.exe"}`, path: `C:\Temp\x.exe`},
		{name: "filePath", meta: `{"filePath": "/tmp/x"}`, path: "/tmp/x"},
		{name: "path wins over filePath", meta: `{"filePath": "/b", "path": "/a"}`, path: "/a"},
		{name: "blank path falls back to filePath", meta: `{"path": "  ", "filePath": "/b"}`, path: "/b"},
		{name: "non-string path ignored", meta: `{"path": 5, "filePath": "/b"}`, path: "/b"},
		{name: "path trimmed", meta: `{"path": "  /opt/x \n"}`, path: "/opt/x"},
		{name: "path object ignored", meta: `{"path": {"p": "/a"}}`},
		{name: "sensors and path", meta: `{"sensorId": "8", "filePath": "/b"}`, sensors: []int64{8}, path: "/b"},
	} {
		for _, mode := range []struct {
			name   string
			decode func(testing.TB, string) map[string]any
		}{{"json.Number", metaNumber}, {"float64", metaFloat}} {
			t.Run(c.name+"/"+mode.name, func(t *testing.T) {
				t.Parallel()
				msg := tgtMsg(mode.decode(t, c.meta))
				got, notes, err := msg.Target()
				require.NoError(t, err, "metaData never fails the job")
				if c.note != "" {
					require.Len(t, notes, 1)
					require.Contains(t, notes[0], c.note)
					require.Contains(t, notes[0], "Live Response skipped")
					require.Nil(t, got.Sensors, "unusable sensor IDs: no Live Response")
				} else {
					require.Empty(t, notes)
				}
				require.Equal(t, c.sensors, got.Sensors)
				require.Equal(t, c.path, got.Path)
				require.Equal(t, msg.JobID, got.JobID)
				require.Equal(t, tgtHash, got.SHA256)
				require.Equal(t, "win", got.Platform)
				require.Equal(t, "fielname.exe", got.FileName)
			})
		}
	}
}

func seq(n, from int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(from + i)
	}
	return out
}

// job.Decode keeps numbers as json.Number, so IDs above 2^53 stay exact.
func TestTargetSensorIDPrecision(t *testing.T) {
	t.Parallel()
	got, notes, err := (tgtMsg(metaNumber(t, `{"sensorId": 9007199254740993, "sensorIds": [9223372036854775807]}`))).Target()
	require.NoError(t, err)
	require.Empty(t, notes)
	require.Equal(t, []int64{9007199254740993, 9223372036854775807}, got.Sensors)

	unusable := func(md map[string]any, field string) {
		t.Helper()
		got, notes, err := (tgtMsg(md)).Target()
		require.NoError(t, err)
		require.Nil(t, got.Sensors)
		require.Len(t, notes, 1)
		require.Contains(t, notes[0], field)
	}
	unusable(metaNumber(t, `{"sensorId": 9223372036854775808}`), "metaData.sensorId")
	// As float64 the same huge value is not mistaken for a valid ID.
	unusable(metaFloat(t, `{"sensorId": 1e300}`), "metaData.sensorId")
	unusable(map[string]any{"sensorIds": []any{float64(1 << 62), 1e19}}, "metaData.sensorIds")
}

// A long unusable value is cut in the note: notes go to logs and outcomes.
func TestTargetNoteIsShort(t *testing.T) {
	t.Parallel()
	_, notes, err := (tgtMsg(map[string]any{"sensorId": strings.Repeat("x", 10000)})).Target()
	require.NoError(t, err)
	require.Len(t, notes, 1)
	require.Less(t, len(notes[0]), 200, notes[0])
}

func TestTargetHashAndPlatform(t *testing.T) {
	t.Parallel()
	msg := tgtMsg(nil)
	msg.Submission.Sample.ID = strings.ToUpper(tgtHash)
	msg.Classification.Platform = "WIN"
	got, notes, err := msg.Target()
	require.NoError(t, err)
	require.Empty(t, notes)
	require.Equal(t, tgtHash, got.SHA256, "hash lower-cased")
	require.Equal(t, "win", got.Platform, "platform lower-cased")
	require.Nil(t, got.Sensors)
	require.Empty(t, got.Path)

	for _, bad := range []string{"", "x' OR 1=1--", tgtHash[:63], tgtHash + "0", "g" + tgtHash[1:], " " + tgtHash} {
		msg := tgtMsg(nil)
		msg.Submission.Sample.ID = bad
		_, _, err := msg.Target()
		require.ErrorIs(t, err, edr.ErrBadHash, "%q", bad)
		require.ErrorContains(t, err, "submission.sample.id")
	}
}

func FuzzTarget(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `{"sensorId": 42}`, `{"sensorId": "42"}`, `{"sensorIds": [1, "2", 3]}`,
		`{"sensorIds": "1, 2,,3"}`, `{"sensorIds": [1.5]}`, `{"sensorId": -1}`, `{"sensorId": {"a": 1}}`,
		`{"sensorIds": "` + idList(33, 1) + `"}`, `{"path": " /a ", "filePath": "/b"}`,
		`{"sensorId": 9223372036854775808}`, `{"sensorId": 1e300}`, `{"sensorIds": [[1], null]}`,
	} {
		f.Add([]byte(s), "Win")
	}
	f.Fuzz(func(t *testing.T, meta []byte, platform string) {
		for _, useNumber := range []bool{true, false} {
			dec := json.NewDecoder(bytes.NewReader(meta))
			if useNumber {
				dec.UseNumber()
			}
			var md map[string]any
			if dec.Decode(&md) != nil {
				return
			}
			msg := tgtMsg(md)
			msg.Classification.Platform = platform
			got, notes, err := msg.Target()
			require.NoError(t, err, "metaData never fails the job")
			for _, n := range notes {
				require.Contains(t, n, "metaData")
				require.Nil(t, got.Sensors)
			}
			require.Equal(t, tgtHash, got.SHA256)
			require.Equal(t, strings.ToLower(platform), got.Platform)
			require.LessOrEqual(t, len(got.Sensors), maxSensors)
			for i, id := range got.Sensors {
				require.Positive(t, id)
				require.False(t, slices.Contains(got.Sensors[:i], id), "duplicate sensor %d", id)
			}
			require.Equal(t, strings.TrimSpace(got.Path), got.Path)
		}
	})
}
