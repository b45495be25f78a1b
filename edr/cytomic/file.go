package cytomic

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxFields caps the fields of a result file's header line. Our query
// selects six columns; Cytomic may add a few. Without the cap a 1 MiB
// header of ";" would become a million strings (16 MiB of headers, kept).
const maxFields = 1024

// hostColumns name the column that identifies the machine a row came from,
// in order of preference (compared case-insensitively). Our query selects
// system_info.hostname AS hostname, so the first normally matches.
var hostColumns = []string{"hostname", "machine", "computername", "computer_name", "muid"}

// errLineTooLong is wrapped for a result file line over the line cap.
var errLineTooLong = errors.New("result file line too long")

// errTooManyFields is wrapped for a header line of more than maxFields
// fields.
var errTooManyFields = errors.New("result file header has too many fields")

// fileSummary is what one result file holds.
type fileSummary struct {
	// Header is the file's field names.
	Header []string
	// HostColumn is the index of the host column, -1 when none.
	HostColumn int
	// Rows counts data lines.
	Rows int64
	// Hosts are the distinct host values, keyed by lower case, in the
	// spelling first seen.
	Hosts map[string]string
}

// parseFile reads a Cytomic result file ("osquery_<operationId>"): text,
// first line the field names separated by ";", then one line per row. The
// source document defines no quoting, so fields are split on every ";" and
// surrounding double quotes are trimmed. Blank lines and repetitions of the
// header line (a file concatenated from several machines) are not rows; a
// UTF-8 byte-order mark and CRLF line ends are tolerated. A row with fewer
// fields than the header still counts; its host is taken when present.
//
// Memory stays bounded whatever the file holds: a line longer than maxLine
// bytes fails with errLineTooLong before it is read whole, a header of more
// than maxFields fields with errTooManyFields, and data lines are not split:
// only the host field is cut out.
func parseFile(r io.Reader, maxLine int) (fileSummary, error) {
	sum := fileSummary{HostColumn: -1, Hosts: map[string]string{}}
	br := bufio.NewReaderSize(r, 64<<10)
	var headerLine string
	first := true
	for {
		line, err := readLine(br, maxLine)
		if err != nil && !errors.Is(err, io.EOF) {
			return sum, err
		}
		if first && line != nil {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		text := strings.TrimRight(string(line), "\r")
		if strings.TrimSpace(text) != "" {
			switch {
			case first:
				first = false
				if n := strings.Count(text, ";") + 1; n > maxFields {
					return sum, fmt.Errorf("%w: %d fields, at most %d", errTooManyFields, n, maxFields)
				}
				headerLine = text
				sum.Header = splitFields(text)
				sum.HostColumn = findHostColumn(sum.Header)
			case text == headerLine:
			default:
				sum.Rows++
				if sum.HostColumn >= 0 {
					if h, ok := field(text, sum.HostColumn); ok && h != "" {
						k := strings.ToLower(h)
						if _, seen := sum.Hosts[k]; !seen {
							sum.Hosts[k] = h
						}
					}
				}
			}
		}
		if errors.Is(err, io.EOF) {
			return sum, nil
		}
	}
}

// readLine returns the next line without its "\n"; io.EOF with the last
// (possibly empty) line at the end. It never holds more than maxLine+1
// bytes of a line.
func readLine(br *bufio.Reader, maxLine int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > maxLine+1 {
			return nil, fmt.Errorf("%w: more than %d bytes", errLineTooLong, maxLine)
		}
		buf = append(buf, chunk...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return buf, io.EOF
		default:
			return nil, err
		}
	}
}

func splitFields(line string) []string {
	fields := strings.Split(line, ";")
	for i, f := range fields {
		fields[i] = cleanField(f)
	}
	return fields
}

// field returns field i of line, cleaned, without splitting the rest.
func field(line string, i int) (string, bool) {
	for ; i > 0; i-- {
		_, rest, ok := strings.Cut(line, ";")
		if !ok {
			return "", false
		}
		line = rest
	}
	f, _, _ := strings.Cut(line, ";")
	return cleanField(f), true
}

func cleanField(f string) string {
	f = strings.TrimSpace(f)
	if len(f) >= 2 && f[0] == '"' && f[len(f)-1] == '"' {
		f = f[1 : len(f)-1]
	}
	return f
}

func findHostColumn(header []string) int {
	for _, want := range hostColumns {
		for i, h := range header {
			if strings.EqualFold(h, want) {
				return i
			}
		}
	}
	return -1
}

// cappedReader fails with errFileTooLarge once more than max bytes were read.
type cappedReader struct {
	r   io.Reader
	max int64
	n   int64
}

var errFileTooLarge = errors.New("result file exceeds the size limit")

func (c *cappedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.max {
		return n, fmt.Errorf("%w (%d bytes)", errFileTooLarge, c.max)
	}
	return n, err
}
