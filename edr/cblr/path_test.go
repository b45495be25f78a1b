package cblr

import (
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/stretchr/testify/require"
)

func TestCheckPath(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ platform, path string }{
		{"win", `C:\Users\Bob\AppData\Local\Temp\dropper.exe`},
		{"win", `c:/users/bob/dropper.exe`},
		{"win", `D:\Program Files (x86)\Vendor\tool v2.1\a.dll`},
		{"win", `C:\Users\Бob\Загрузки\счёт.exe`},
		{"", `C:\x.exe`},
		{"", `/tmp/x`},
		{"linux", `/home/bob/.cache/dropper`},
		{"osx", `/Users/bob/Downloads/Invoice.app/Contents/MacOS/Invoice`},
		{"win", `C:\Temp\CONSOLE.exe`}, // not a device name
		{"win", `C:\Temp\COM10.txt`},
	} {
		require.NoError(t, checkPath(c.platform, c.path), "%s %q", c.platform, c.path)
	}
	for _, c := range []struct{ platform, path string }{
		{"win", ``},
		{"win", `\\attacker\share\payload.exe`},
		{"win", `//attacker/share/payload.exe`},
		{"win", `\\.\PhysicalDrive0`},
		{"win", `\\?\C:\Windows\x.exe`},
		{"win", `\/attacker\share`},
		{"win", `..\..\Windows\System32\config\SAM`},
		{"win", `C:\Windows\..\Windows\System32\config\SAM`},
		{"win", `C:\Windows\.\x.exe`},
		{"win", `C:`},
		{"win", `C:x.exe`},
		{"win", `C:\`},
		{"win", `C:\Temp\`},
		{"win", `C:\Temp\\x.exe`},
		{"win", `C:\Temp\nul`},
		{"win", `C:\Temp\LPT1.log`},
		{"win", `C:\Temp\COM¹`},
		{"win", `C:\Temp\x.exe.`},
		{"win", `C:\Temp\x.exe `},
		{"win", `C:\Temp\ x.exe`},
		{"win", `C:\Temp\a?.exe`},
		{"win", `C:\Temp\a*.exe`},
		{"win", `C:\Temp\a.exe::$DATA`},
		{"win", "C:\\Temp\\a\x00.exe"},
		{"win", "C:\\Temp\\a\n.exe"},
		{"win", "C:\\Temp\\a\u200b.exe"},
		{"win", "C:\\Temp\\\xff.exe"},
		{"win", `C:\` + strings.Repeat("a", maxPathLen)},
		{"win", `/tmp/x`},
		{"linux", `C:\x.exe`},
		{"linux", `/`},
		{"linux", `/tmp/`},
		{"linux", `//tmp/x`},
		{"linux", `/tmp//x`},
		{"linux", `/tmp/../etc/shadow`},
		{"linux", `/tmp/./x`},
		{"linux", `/dev/sda`},
		{"linux", `/proc/self/environ`},
		{"linux", `/sys/kernel/x`},
		{"linux", `tmp/x`},
		{"linux", `~/x`},
	} {
		err := checkPath(c.platform, c.path)
		require.Error(t, err, "%s %q", c.platform, c.path)
		require.ErrorIs(t, err, errPath)
	}
}

// FuzzCheckPath checks, for every path checkPath accepts, the properties
// the docs promise, by independent means.
func FuzzCheckPath(f *testing.F) {
	for _, s := range []string{`C:\Users\Bob\x.exe`, `\\attacker\share\payload.exe`, `\\.\PhysicalDrive0`,
		`..\..\Windows\System32\config\SAM`, "C:\\a\x07b", `/tmp/x`, `/dev/sda`, `C:\a\..\b`, `C:/a/./b`, `C:\CON`} {
		f.Add("win", s)
		f.Add("linux", s)
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, platform, p string) {
		err := checkPath(platform, p)
		if err != nil {
			require.True(t, errors.Is(err, errPath))
			return
		}
		require.LessOrEqual(t, len(p), maxPathLen)
		for _, r := range p {
			require.False(t, unicode.IsControl(r) || unicode.Is(unicode.Cf, r), "%q", p)
		}
		norm := strings.ReplaceAll(p, `\`, "/")
		require.False(t, strings.HasPrefix(norm, "//"), "UNC or device path %q", p)
		isWin := len(p) >= 3 && p[1] == ':' && (p[2] == '\\' || p[2] == '/')
		require.True(t, isWin || strings.HasPrefix(p, "/"), "absolute %q", p)
		rest := norm[1:]
		if isWin {
			rest = norm[3:]
		}
		for _, seg := range strings.Split(rest, "/") {
			require.NotContains(t, []string{"", ".", ".."}, seg, "segment of %q", p)
			if isWin {
				require.False(t, dosDevice(seg), "%q", p)
				require.False(t, strings.ContainsAny(seg, `<>:"|?*`), "%q", p)
			}
		}
	})
}
