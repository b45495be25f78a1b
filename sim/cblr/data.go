package cblr

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// Command names, exactly as the API spells them in supported_commands and
// in command objects.
const (
	CmdProcessList = "process list"
	CmdGetFile     = "get file"
)

// allCommands is what a healthy Windows sensor reports in
// supported_commands (the recorded answers' list, which adds "memdump" to
// the document's).
var allCommands = []string{
	"delete file", "put file", "reg delete key", "directory list", "reg create key", "get file",
	"reg enum key", "reg query value", "kill", "create process", "process list",
	"reg delete value", "reg set value", "create directory", "memdump",
}

// Sensor is one simulated CB EDR sensor (endpoint).
type Sensor struct {
	ID       int64
	Hostname string
	// OS is reported as the session's os_version.
	OS string
	// Address is reported as the session's address once it is active.
	Address string
	// Processes are returned by "process list".
	Processes []Process
	// Files are served by "get file", keyed by path (looked up
	// case-insensitively, as on Windows).
	Files map[string][]byte
	// LiveResponseDisabled makes a session POST answer 403.
	LiveResponseDisabled bool
	// SessionLimit is the number of concurrent open (pending or active)
	// sessions the sensor accepts; a POST beyond it answers 409. 0 means
	// unlimited.
	SessionLimit int
	// NeverCheckIn keeps sessions pending until check_in_timeout, then
	// "timeout".
	NeverCheckIn bool
	// Unsupported commands are left out of supported_commands; POSTing one
	// answers 400.
	Unsupported []string
	// CommandErrors makes the named commands end in status "error" with
	// these result fields.
	CommandErrors map[string]ErrorInfo
	// ListsNoCommands makes active sessions report supported_commands as
	// [] (as the document's pending session does); the commands still run.
	ListsNoCommands bool
	// StalledUpload makes file objects report size_uploaded stuck at half
	// the size; the content route still serves the whole file.
	StalledUpload bool
}

// Process is one entry of a "process list" result. SHA256 and MD5 are not
// in the source document; they are sent only when set, to check that
// clients tolerate (and use) extra hash fields.
type Process struct {
	PID         int64
	ParentPID   int64
	CreateTime  int64 // unix seconds
	ProcGUID    string
	ParentGUID  string
	Path        string
	CommandLine string
	SID         string
	Username    string
	SHA256      string
	MD5         string
}

// ErrorInfo is what a failed command carries: result_code, result_type
// ("WinHresult", "CbError", ...) and result_desc.
type ErrorInfo struct {
	Code int64
	Type string
	Desc string
}

// ErrFileNotFound is the error a "get file" of a missing path ends with
// (HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)).
var ErrFileNotFound = ErrorInfo{Code: 0x80070002, Type: "WinHresult", Desc: "The system cannot find the file specified."}

// DefaultSamplePath is where the default sensors keep DefaultSample.
const DefaultSamplePath = `C:\Users\Public\Downloads\invoice_2291.exe`

// DefaultSample is the content of the sample the default sensors run
// (worker dev submits it so that Live Response finds something).
var DefaultSample = []byte("MZ\x90\x00analysisfleet simulated sample: invoice_2291.exe\x00")

// DefaultSampleSHA256 is the lower-case hex SHA-256 of DefaultSample.
func DefaultSampleSHA256() string {
	sum := sha256.Sum256(DefaultSample)
	return hex.EncodeToString(sum[:])
}

// DefaultSensors returns the sensors `worker dev` uses: three Windows hosts.
// Sensors 1 and 2 run DefaultSample from DefaultSamplePath (and can hand
// the file over with "get file"); sensor 3 is clean.
func DefaultSensors() []Sensor {
	base := func(id int64, host string) Sensor {
		return Sensor{
			ID: id, Hostname: host, OS: "Windows 10 Enterprise (10.0.19045)",
			Address:   "::ffff:10.20.0." + strconv.FormatInt(id+10, 10),
			Processes: baselineProcesses(id),
			Files: map[string][]byte{
				`C:\Windows\System32\notepad.exe`: []byte("MZ simulated notepad"),
			},
		}
	}
	s1, s2, s3 := base(1, "WIN-FIN-LT01"), base(2, "WIN-HR-WS07"), base(3, "WIN-DC-01")
	for _, s := range []*Sensor{&s1, &s2} {
		plant(s, DefaultSamplePath, DefaultSample)
	}
	return []Sensor{s1, s2, s3}
}

// plant puts content at path on s and starts a process from it.
func plant(s *Sensor, path string, content []byte) {
	if s.Files == nil {
		s.Files = map[string][]byte{}
	}
	s.Files[path] = append([]byte(nil), content...)
	sum := sha256.Sum256(content)
	pid := int64(4000 + 4*len(s.Processes))
	s.Processes = append(s.Processes, Process{
		PID: pid, ParentPID: 3120, CreateTime: 1418247500,
		ProcGUID:    guid(s.ID, pid),
		ParentGUID:  guid(s.ID, 3120),
		Path:        strings.ToLower(path),
		CommandLine: `"` + path + `"`,
		SID:         "s-1-5-21-1004336348-1177238915-682003330-1001",
		Username:    `CORP\analyst`,
		SHA256:      hex.EncodeToString(sum[:]),
	})
}

func baselineProcesses(sensor int64) []Process {
	sys := func(pid, parent int64, path, cmd string) Process {
		return Process{
			PID: pid, ParentPID: parent, CreateTime: 1418247141,
			ProcGUID: guid(sensor, pid), ParentGUID: guid(sensor, parent),
			Path: path, CommandLine: cmd, SID: "s-1-5-18", Username: `NT AUTHORITY\SYSTEM`,
		}
	}
	return []Process{
		sys(4, 0, "", ""),
		sys(276, 4, `c:\windows\system32\smss.exe`, `\systemroot\system32\smss.exe`),
		sys(512, 276, `c:\windows\system32\csrss.exe`, `%systemroot%\system32\csrss.exe`),
		sys(3120, 512, `c:\windows\explorer.exe`, `c:\windows\explorer.exe`),
	}
}

func guid(sensor, pid int64) string {
	const hexd = "0123456789abcdef"
	h := func(v int64, n int) string {
		b := make([]byte, n)
		for i := n - 1; i >= 0; i-- {
			b[i] = hexd[v&0xf]
			v >>= 4
		}
		return string(b)
	}
	return h(sensor, 8) + "-0000-" + h(pid, 4) + "-01d0-14c0c80ce18b"
}

// clone deep-copies a sensor so that callers can't change it under the
// server's lock.
func (s Sensor) clone() *Sensor {
	c := s
	c.Processes = append([]Process(nil), s.Processes...)
	c.Files = make(map[string][]byte, len(s.Files))
	for k, v := range s.Files {
		c.Files[k] = append([]byte(nil), v...)
	}
	c.Unsupported = append([]string(nil), s.Unsupported...)
	c.CommandErrors = make(map[string]ErrorInfo, len(s.CommandErrors))
	for k, v := range s.CommandErrors {
		c.CommandErrors[k] = v
	}
	return &c
}

func (s *Sensor) supported() []string {
	out := make([]string, 0, len(allCommands))
	for _, c := range allCommands {
		if !s.unsupported(c) {
			out = append(out, c)
		}
	}
	return out
}

func (s *Sensor) unsupported(name string) bool {
	for _, u := range s.Unsupported {
		if strings.EqualFold(u, name) {
			return true
		}
	}
	return false
}

func (s *Sensor) file(path string) ([]byte, bool) {
	for k, v := range s.Files {
		if strings.EqualFold(k, path) {
			return v, true
		}
	}
	return nil, false
}
