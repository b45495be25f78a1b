package cblr

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/analysisfleet/analysisfleet/edr/edrtest"
	"github.com/analysisfleet/analysisfleet/edr/vendorhttp"
)

// Seeds are the document's own examples plus the shapes other servers send.
var (
	sessionSeeds = []string{
		`{"status": "pending", "sensor_id": 10, "supported_commands": [], "drives": [], "storage_size": 0, "create_time": 1418247933.634789, "sensor_wait_timeout": 120, "address": null, "check_in_timeout": 1200, "id": 2, "hostname": "WIN-EP7RMLTCLAJ", "storage_ttl": 7, "os_version": "", "session_timeout": 300, "current_working_directory": ""}`,
		`{"status": "active", "sensor_id": 10, "supported_commands": ["delete file", "put file", "get file", "process list"], "drives": ["A:\\", "C:\\"], "sensor_wait_timeout": 120, "address": "::ffff:192.168.206.128", "id": 2, "hostname": "WIN-EP7RMLTCLAJ"}`,
		`{"id": "2"}`,
		`{"id": 2.0, "status": "ACTIVE", "sensor_wait_timeout": "0.25", "supported_commands": null, "hostname": null}`,
		`{"id": "../../x"}`,
		`[]`, `null`, `{"data": [ {"id": "trunc`, `{"id": {"nested": 1}}`,
	}
	commandSeeds = []string{
		`{"status": "pending", "username": "admin", "sensor_id": 10, "create_time": 1418248098.5540111, "name": "process list", "object": null, "id": 1, "session_id": 2}`,
		`{"status": "complete", "username": "admin", "sensor_id": 10, "object": null, "create_time": 1418248098.5540111, "id": 1, "completion": 1418248098.5710759, "processes": [{"username": "NT AUTHORITY\\SYSTEM", "create_time": 1418247141, "parent_guid": "0000000a-0000-0000-0000-000000000000", "parent": 0, "sid": "s-1-5-18", "path": "", "command_line": "", "pid": 4, "proc_guid": "0000000a-0000-0004-01d0-14c0c80ce18b"}, {"path": "c:\\windows\\system32\\smss.exe", "pid": 276, "sha256": "AB"}]}`,
		`{"status": "error", "sensor_id": 9, "name": "kill", "completion": 1464319733.190924, "object": 1660, "session_id": 7, "result_type": "WinHresult", "result_desc": "", "id": 22, "result_code": 2147942487}`,
		`{"status": "complete", "name": "get file", "object": "C:\\x.exe", "id": "3", "file_id": 7}`,
		`{"status": "error", "result_code": "-2147024894", "result_type": "WinHresult", "id": 4}`,
		`{"id": 1, "processes": [{"pid": "12"}], "object": {"a": [1]}}`,
		`{"id": 1, "processes": {}}`,
	}
	fileSeeds = []string{
		`{"id": 1, "file_name": "C:\\x.exe", "size": 123, "size_uploaded": 123, "status": 0, "delete": false}`,
		`{"id": "1", "size": "123", "size_uploaded": null, "status": "0"}`,
		`{"id": 1, "size": 1e3, "size_uploaded": 10, "status": 5}`,
		`{"id": 1, "size": -1}`, `{"size": "NaN"}`, `{}`,
	}
	listSeeds = []string{
		`[]`,
		`[{"id": 1, "name": "process list", "status": "complete", "object": null}, {"id": 2, "name": "get file", "object": "C:\\x.exe", "status": "in progress", "file_id": 1}]`,
		`{"commands": []}`, `[1, 2]`, `[null]`,
	}
)

// checkDecoded asserts what every decoder guarantees on success: ids are
// plain identifiers that stay inside one URL path segment.
func checkDecoded(t *testing.T, ids ...flexID) {
	for _, id := range ids {
		if id == "" {
			continue
		}
		require.Regexp(t, idRe, string(id))
		require.NotContains(t, []string{".", ".."}, string(id))
		require.Equal(t, string(id), url.PathEscape(string(id)), "an id must not need escaping")
	}
}

func FuzzDecodeSession(f *testing.F) {
	edrtest.FuzzDecoder(f, sessionSeeds, decodeSession, func(t *testing.T, s session) {
		checkDecoded(t, s.ID, s.SensorID)
	})
}

func FuzzDecodeCommand(f *testing.F) {
	edrtest.FuzzDecoder(f, commandSeeds, decodeCommand, func(t *testing.T, c command) {
		checkDecoded(t, c.ID, c.FileID)
		// Everything derived from a command for analysts must be safe to log.
		msg := commandError("process list", c)
		require.NotContains(t, msg, "\n")
		r := &opRef{SHA256: "ab", Path: `C:\x.exe`, FileName: "x.exe"}
		s := &sensorRef{}
		s.recordProcesses(r, c.Processes)
		require.LessOrEqual(t, len(s.Matched), maxMatched)
		_ = fileNotFound(c)
	})
}

func FuzzDecodeFile(f *testing.F) {
	edrtest.FuzzDecoder(f, fileSeeds, decodeFile, func(t *testing.T, fo fileObject) {
		checkDecoded(t, fo.ID)
	})
}

func FuzzDecodeCommandList(f *testing.F) {
	edrtest.FuzzDecoder(f, listSeeds, decodeCommandList, func(t *testing.T, list []command) {
		for _, c := range list {
			checkDecoded(t, c.ID, c.FileID)
		}
	})
}

func FuzzDecodeSessionList(f *testing.F) {
	seeds := append([]string{string(recordedBody(f, "get_session.json"))}, append(listSeeds, sessionSeeds...)...)
	edrtest.FuzzDecoder(f, seeds, decodeSessionList, func(t *testing.T, list []session) {
		for _, s := range list {
			checkDecoded(t, s.ID, s.SensorID)
		}
	})
}

func recordedBody(t testing.TB, name string) []byte {
	t.Helper()
	return edrtest.Testdata(t, "recorded", name)
}

// The recorded answers of a real server (testdata/recorded) decode, with
// their types: integer ids, float create_time, string storage_size.
func TestDecodeRecorded(t *testing.T) {
	t.Parallel()
	list, err := decodeSessionList(recordedBody(t, "get_session.json"))
	require.NoError(t, err)
	require.Len(t, list, 1)
	s := list[0]
	require.Equal(t, flexID("1"), s.ID)
	require.Equal(t, flexID("1"), s.SensorID)
	require.Equal(t, "active", s.Status)
	require.InDelta(t, 1517942461.155622, float64(s.CreateTime), 1e-6)
	require.Equal(t, "WIN7-HYPERV-2", s.Hostname)
	require.Contains(t, *s.SupportedCommands, "memdump")
	require.Empty(t, missingCommands(s, true, true))

	mixed, err := decodeSessionList([]byte(`[{"id": {"odd": 1}}, {"id": 7, "sensor_id": "3", "status": "pending"}, 5]`))
	require.NoError(t, err)
	require.Len(t, mixed, 1, "an unreadable entry is skipped, not fatal")
	require.Equal(t, flexID("3"), mixed[0].SensorID, "sensor_id as a string")

	one, err := decodeSession(recordedBody(t, "get_session_1.json"))
	require.NoError(t, err)
	require.Equal(t, s, one)

	c, err := decodeCommand(recordedBody(t, "post_session_1_command_get_file.json"))
	require.NoError(t, err)
	require.Equal(t, "pending", c.Status)
	require.Equal(t, flexID("3"), c.ID)
	require.Equal(t, flexID("2"), c.FileID, "the POST answer carries file_id")
	require.Equal(t, `C:\test.txt`, string(c.Object))

	c, err = decodeCommand(recordedBody(t, "get_session_1_command_3.json"))
	require.NoError(t, err)
	require.Equal(t, "complete", c.Status)
	require.Equal(t, "0", string(c.ResultCode))
	require.False(t, fileNotFound(c))

	c, err = decodeCommand(recordedBody(t, "post_session_1_command_process_list.json"))
	require.NoError(t, err)
	require.Equal(t, "", string(c.Object), "object null")
	require.InDelta(t, 1517942688.799793, float64(c.CreateTime), 1e-6)

	c, err = decodeCommand(recordedBody(t, "get_session_1_command_4.json"))
	require.NoError(t, err)
	require.Equal(t, "complete", c.Status)
	require.Len(t, c.Processes, 34)
	require.Equal(t, `c:\windows\system32\smss.exe`, c.Processes[1].Path)
	require.EqualValues(t, 340, c.Processes[1].PID)
	require.Less(t, vendorhttp.LongestToken(recordedBody(t, "get_session_1_command_4.json")), DefaultMaxToken)
}

func TestDecodeExamples(t *testing.T) {
	t.Parallel()
	s, err := decodeSession([]byte(sessionSeeds[1]))
	require.NoError(t, err)
	require.Equal(t, flexID("2"), s.ID)
	require.Equal(t, "active", s.Status)
	require.Equal(t, 120.0, float64(s.SensorWaitTimeout))
	require.Contains(t, *s.SupportedCommands, "process list")

	s, err = decodeSession([]byte(sessionSeeds[3]))
	require.NoError(t, err)
	require.Equal(t, flexID("2"), s.ID, "2.0 is id 2")
	require.Equal(t, 0.25, float64(s.SensorWaitTimeout))
	require.Nil(t, s.SupportedCommands, "null means not reported")

	_, err = decodeSession([]byte(`{"id": "../../x"}`))
	require.ErrorIs(t, err, errMalformed, "ids that would escape the URL path are refused")
	for _, bad := range []string{`[]`, `null`, ``, `{"data": [ {"id": "trunc`} {
		_, err = decodeSession([]byte(bad))
		require.ErrorIs(t, err, errMalformed, bad)
	}

	c, err := decodeCommand([]byte(commandSeeds[1]))
	require.NoError(t, err)
	require.Len(t, c.Processes, 2)
	require.Equal(t, `c:\windows\system32\smss.exe`, c.Processes[1].Path)
	require.EqualValues(t, 276, c.Processes[1].PID)

	c, err = decodeCommand([]byte(commandSeeds[2]))
	require.NoError(t, err)
	require.Equal(t, "1660", string(c.Object))
	require.Equal(t, `the "kill" command failed on the sensor: result_code 2147942487 (0x80070057), result_type WinHresult`, commandError("kill", c))

	c, err = decodeCommand([]byte(commandSeeds[4]))
	require.NoError(t, err)
	require.True(t, fileNotFound(c), "-2147024894 is 0x80070002")

	fo, err := decodeFile([]byte(fileSeeds[1]))
	require.NoError(t, err)
	require.EqualValues(t, 123, fo.Size)
	require.Nil(t, fo.SizeUploaded)
	require.Equal(t, "0", string(fo.Status))

	list, err := decodeCommandList([]byte(listSeeds[1]))
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, flexID("1"), list[1].FileID)
	_, err = decodeCommandList([]byte(`{"commands": []}`))
	require.ErrorIs(t, err, errMalformed)
}

func TestMatchProcess(t *testing.T) {
	t.Parallel()
	r := &opRef{SHA256: "aa", Path: `C:\Temp\evil.exe`, FileName: "evil.exe"}
	for path, want := range map[string]string{
		`c:\temp\EVIL.EXE`:        "path",
		`C:/Temp/evil.exe`:        "path",
		`\\?\C:\Temp\evil.exe`:    "path",
		`d:\other\Evil.exe`:       "file name",
		`c:\temp\evil.exe.bak`:    "",
		`c:\temp\notevil.exe`:     "",
		``:                        "",
		`/usr/local/bin/evil.exe`: "file name",
	} {
		require.Equal(t, want, matchProcess(r, process{Path: path}), path)
	}
	require.Equal(t, "sha256", matchProcess(r, process{Path: `c:\x`, SHA256: "AA"}))
	require.Empty(t, matchProcess(&opRef{SHA256: "aa"}, process{Path: `c:\x.exe`}), "nothing to match by")
}
