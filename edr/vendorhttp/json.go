package vendorhttp

// LongestToken returns the length in bytes of the longest scalar in the
// JSON text b (a string's contents, escapes counted as written, or a run of
// number or literal characters), without decoding or allocating anything.
// Drivers refuse an answer whose longest token is over their cap before
// decoding it: an ID goes into a checkpointed reference, a URL to the
// downloader, an access token into every request header, and a string of
// megabytes would otherwise be kept. It does not validate b: the decoder
// does that afterwards, on text whose every value is known to be short.
func LongestToken(b []byte) int {
	longest, run := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString && escaped:
			escaped = false
			run++
		case inString && c == '\\':
			escaped = true
			run++
		case inString && c == '"':
			inString = false
			longest = max(longest, run)
			run = 0
		case inString:
			run++
		case c == '"':
			longest = max(longest, run)
			inString, run = true, 0
		case c == '{', c == '}', c == '[', c == ']', c == ',', c == ':', c == ' ', c == '\t', c == '\n', c == '\r':
			longest = max(longest, run)
			run = 0
		default:
			run++
		}
	}
	return max(longest, run)
}
