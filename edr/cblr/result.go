package cblr

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/analysisfleet/analysisfleet/edr"
)

// recordProcesses keeps the processes that match the target: same path
// (case-insensitive, either slash), same base name as the submitted file, or
// a sha256 field equal to the sample. It replaces earlier results, so
// re-reading a completed command after a crash counts nothing twice.
func (s *sensorRef) recordProcesses(r *opRef, procs []process) {
	s.Matches, s.Matched = 0, nil
	for _, p := range procs {
		why := matchProcess(r, p)
		if why == "" {
			continue
		}
		s.Matches++
		if len(s.Matched) < maxMatched {
			s.Matched = append(s.Matched, matchedProc{PID: int64(p.PID), Path: clip(p.Path), Why: why})
		}
	}
}

// matchProcess says why p matches the target ("sha256", "path", "file
// name"), or "" when it does not.
func matchProcess(r *opRef, p process) string {
	if h := norm(p.SHA256); h != "" && h == r.SHA256 {
		return "sha256"
	}
	path := winPath(p.Path)
	if path == "" {
		return ""
	}
	if r.Path != "" && strings.EqualFold(path, winPath(r.Path)) {
		return "path"
	}
	if name := baseName(winPath(r.FileName)); name != "" && strings.EqualFold(baseName(path), name) {
		return "file name"
	}
	return ""
}

// winPath normalises a path for comparison: trimmed, surrounding quotes and
// the \\?\ prefix removed, forward slashes as backslashes.
func winPath(p string) string {
	p = strings.Trim(strings.TrimSpace(p), `"`)
	p = strings.ReplaceAll(p, "/", `\`)
	p = strings.TrimPrefix(p, `\\?\`)
	return p
}

func baseName(p string) string {
	if i := strings.LastIndex(p, `\`); i >= 0 {
		p = p[i+1:]
	}
	return strings.TrimSpace(p)
}

// commandError describes a command that ended in "error" with its
// result_code (and the HRESULT in hex), result_type and result_desc.
func commandError(name string, c command) string {
	return fmt.Sprintf("the %q command failed on the sensor: %s", name, resultText(c))
}

func resultText(c command) string {
	code := strings.TrimSpace(string(c.ResultCode))
	if v, ok := resultCode(c); ok && (v < 0 || v > 0xffff) {
		code = fmt.Sprintf("%s (0x%08X)", code, uint32(v))
	}
	msg := fmt.Sprintf("result_code %s, result_type %s", cmp.Or(clip(code), "none"), cmp.Or(clip(c.ResultType), "none"))
	if desc := clip(c.ResultDesc); desc != "" {
		msg += fmt.Sprintf(", result_desc %q", desc)
	}
	return msg
}

// resultCode returns result_code as a 32-bit value (HRESULTs arrive both
// as unsigned and as negative numbers).
func resultCode(c command) (int64, bool) {
	v, err := strconv.ParseInt(strings.TrimSpace(string(c.ResultCode)), 10, 64)
	if err != nil || v < math.MinInt32 || v > math.MaxUint32 {
		return 0, false
	}
	return v, true
}

// fileNotFound reports a "get file" that failed because the path does not
// exist: Win32 ERROR_FILE_NOT_FOUND (2) or ERROR_PATH_NOT_FOUND (3), bare or
// as HRESULT_FROM_WIN32 (0x80070002, 0x80070003).
func fileNotFound(c command) bool {
	v, ok := resultCode(c)
	if !ok {
		return false
	}
	u := uint32(v)
	return (u>>16 == 0x8007 || u>>16 == 0) && (u&0xffff == 2 || u&0xffff == 3)
}

// decodeLoose decodes a JSON object keeping numbers exact, so that it can be
// PUT back unchanged but for one field. It returns nil for anything else.
func decodeLoose(b []byte) map[string]any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil
	}
	return m
}

// result summarises the finished sensors.
func (r *opRef) result() edr.Result {
	var res edr.Result
	seen := map[string]bool{}
	note := func(format string, args ...any) {
		if len(res.Notes) < edr.MaxListed {
			res.Notes = append(res.Notes, fmt.Sprintf(format, args...))
		}
	}
	for _, n := range r.Notes {
		note("%s", n)
	}
	for _, s := range r.Sensors {
		host := s.Host
		if host == "" {
			host = fmt.Sprintf("sensor %d", s.SensorID)
		}
		res.Rows += int64(s.Matches)
		found := s.Matches > 0
		if s.Matches > 0 {
			var list []string
			for _, m := range s.Matched {
				list = append(list, fmt.Sprintf("pid %d %s (%s)", m.PID, m.Path, m.Why))
			}
			more := ""
			if s.Matches > len(s.Matched) {
				more = fmt.Sprintf(" and %d more", s.Matches-len(s.Matched))
			}
			note("%s: %d matching process(es): %s%s", s.name(), s.Matches, strings.Join(list, "; "), more)
		}
		if f := s.File; f != nil {
			if f.TooLarge {
				switch {
				case f.Size > 0 && f.Limit > 0:
					note("%s: %s is over the size limit (%d bytes, limit %d); it was not retrieved or hashed", s.name(), f.Path, f.Size, f.Limit)
				case f.Limit > 0:
					note("%s: %s is over the size limit of %d bytes; it was not retrieved or hashed", s.name(), f.Path, f.Limit)
				default:
					note("%s: %s is over the size limit (%d bytes); it was not retrieved or hashed", s.name(), f.Path, f.Size)
				}
			} else {
				match := f.SHA256 == r.SHA256
				found = found || match
				if len(res.Files) < edr.MaxListed {
					res.Files = append(res.Files, edr.File{Host: host, Path: f.Path, Size: f.Size, SHA256: f.SHA256, Matches: match})
				}
			}
		}
		if found && !seen[host] {
			seen[host] = true
			res.HostsTotal++
			if len(res.Hosts) < edr.MaxListed {
				res.Hosts = append(res.Hosts, host)
			}
		}
		if s.Failure != "" {
			note("%s failed: %s", s.name(), s.Failure)
		}
		for _, rm := range s.Remarks {
			note("%s: %s", s.name(), rm)
		}
	}
	return res
}
