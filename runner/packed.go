package runner

import (
	"bytes"
	"compress/flate"
	"io"
	"sync"
)

// packed is a job message as a waiting job keeps it: deflated. A job
// message's IDs and hashes repeat and its field names are many: it packs
// to about half (766 → 409 bytes for `worker bench`'s), and a job reads it
// back two or three times in its life (its starts, its summary, a
// re-seed), never while it waits.
type packed []byte

var (
	deflaters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed)
		return w
	}}
	inflaters sync.Pool
)

// pack deflates b into a slice of its own.
func pack(b []byte) packed {
	var buf bytes.Buffer
	buf.Grow(len(b)/2 + 32)
	w := deflaters.Get().(*flate.Writer)
	w.Reset(&buf)
	_, _ = w.Write(b) // a bytes.Buffer does not fail
	_ = w.Close()
	deflaters.Put(w)
	return packed(bytes.Clone(buf.Bytes()))
}

// unpack returns the bytes p packed.
func (p packed) unpack() ([]byte, error) {
	r, _ := inflaters.Get().(io.ReadCloser)
	if r == nil {
		r = flate.NewReader(bytes.NewReader(p))
	} else if err := r.(flate.Resetter).Reset(bytes.NewReader(p), nil); err != nil {
		return nil, err
	}
	out := bytes.NewBuffer(make([]byte, 0, 2*len(p)+64))
	_, err := io.Copy(out, r)
	inflaters.Put(r)
	if err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
