package cblr

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxPathLen is the longest path "get file" is asked for, in bytes. It is
// above Windows' classic MAX_PATH (260) and well above any path a
// submission names in practice, and far below what would make the command
// object (and the session log the server keeps) a vehicle for bulk data.
const maxPathLen = 1024

// errPath is wrapped by every reason checkPath gives.
var errPath = errors.New("not an absolute local path")

// checkPath says why p must not be sent to a sensor as the object of
// "get file", or nil when it may. The path comes from the submission's
// metaData, which nobody vouches for, and "get file" runs with the sensor's
// privileges: a UNC path (\\attacker\share\x) makes the endpoint connect out
// over SMB with its machine credentials, a device path (\\.\PhysicalDrive0,
// /dev/sda, CON) reads a disk or hangs, and ..\ climbs to the SAM hive.
//
// Only an absolute local file path of sane length and characters passes:
// a Windows drive-letter path (C:\dir\file, either slash) for Windows
// targets, an absolute POSIX path (/dir/file, outside /dev, /proc and /sys)
// for Linux and macOS targets, either when the platform is unknown. No
// segment may be empty, "." or "..", no character may be a control or
// format character (bidi overrides, zero-width), and a Windows path may not
// use a reserved character (<>:"|?*), a DOS device name (CON, NUL, COM1,
// …) or a name ending in a dot or space (Windows strips them).
func checkPath(platform, p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", errPath)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("%w: longer than %d bytes", errPath, maxPathLen)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w: not valid UTF-8", errPath)
	}
	for _, r := range p {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf) || r == utf8.RuneError {
			return fmt.Errorf("%w: contains control or format character %U", errPath, r)
		}
	}
	win, posix := true, true
	switch strings.ToLower(strings.TrimSpace(platform)) {
	case "win", "windows", "win32", "win64":
		posix = false
	case "linux", "osx", "mac", "macos", "darwin", "unix":
		win = false
	}
	switch {
	case strings.HasPrefix(p, "/"):
		if !posix {
			return fmt.Errorf("%w: a POSIX path for a %s target", errPath, platform)
		}
		return checkPOSIX(p)
	case len(p) >= 3 && isDriveLetter(p[0]) && p[1] == ':' && (p[2] == '\\' || p[2] == '/'):
		if !win {
			return fmt.Errorf("%w: a Windows path for a %s target", errPath, platform)
		}
		return checkWindows(p)
	case strings.HasPrefix(p, `\\`) || strings.HasPrefix(p, "//") || strings.HasPrefix(p, `\/`) || strings.HasPrefix(p, `/\`):
		return fmt.Errorf("%w: a UNC or device-namespace path", errPath)
	}
	return fmt.Errorf("%w: neither a drive-letter path (C:\\…) nor an absolute POSIX path (/…)", errPath)
}

func isDriveLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

func checkWindows(p string) error {
	segs := strings.FieldsFunc(p[3:], func(r rune) bool { return r == '\\' || r == '/' })
	if n := strings.Count(p[3:], `\`) + strings.Count(p[3:], "/"); n != len(segs)-1 || len(segs) == 0 {
		return fmt.Errorf("%w: an empty path segment, or no file name", errPath)
	}
	for _, s := range segs {
		if s == "." || s == ".." {
			return fmt.Errorf("%w: a %q segment", errPath, s)
		}
		if i := strings.IndexAny(s, `<>:"|?*`); i >= 0 {
			return fmt.Errorf("%w: reserved character %q", errPath, s[i])
		}
		if strings.HasSuffix(s, ".") || strings.HasSuffix(s, " ") || strings.HasPrefix(s, " ") {
			return fmt.Errorf("%w: a name that begins with a space or ends in a dot or space", errPath)
		}
		if dosDevice(s) {
			return fmt.Errorf("%w: the DOS device name %q", errPath, s)
		}
	}
	return nil
}

// dosDevice reports a name Windows maps to a device whatever the directory
// (CON, NUL.txt, COM1, LPT9.log, CONIN$, and the superscript-digit forms).
func dosDevice(name string) bool {
	base := strings.ToUpper(name)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		base = base[:i]
	}
	base = strings.TrimRight(base, " ")
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$":
		return true
	}
	if len(base) >= 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) {
		switch base[3:] {
		case "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³":
			return true
		}
	}
	return false
}

func checkPOSIX(p string) error {
	segs := strings.Split(p[1:], "/")
	for _, s := range segs {
		switch s {
		case "":
			return fmt.Errorf("%w: an empty path segment, or no file name", errPath)
		case ".", "..":
			return fmt.Errorf("%w: a %q segment", errPath, s)
		}
	}
	switch segs[0] {
	case "dev", "proc", "sys":
		return fmt.Errorf("%w: a device or kernel file system (/%s)", errPath, segs[0])
	}
	return nil
}
