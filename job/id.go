package job

import "strings"

// CanonicalID returns the form the fleet keys a job by. SampleDB's job
// IDs are UUIDs, and a UUID is the same whatever the case of its hex
// digits: 6BA7B810-9DAD-… and 6ba7b810-9dad-… name one job. A UUID is
// therefore lower-cased; any other ID is returned as it is (it is
// SampleDB's business, and the fleet only compares it exactly).
func CanonicalID(id string) string {
	if !isUUID(id) {
		return id
	}
	return strings.ToLower(id)
}

// SameID reports whether two job IDs name the same job.
func SameID(a, b string) bool { return CanonicalID(a) == CanonicalID(b) }

// isUUID reports whether s is a UUID in its textual form,
// 8-4-4-4-12 hexadecimal digits, in any case.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
