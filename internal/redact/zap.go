package redact

import (
	"encoding/json"
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logger returns l with every message and field passed through s.
func (s *Set) Logger(l *zap.Logger) *zap.Logger {
	if s == nil || l == nil {
		return l
	}
	return l.WithOptions(zap.WrapCore(s.Core))
}

// Core wraps c so that messages and field values are redacted before they
// are encoded: strings, errors, Stringers, byte strings, and structured
// values (arrays, objects, reflected values), whatever logged them.
func (s *Set) Core(c zapcore.Core) zapcore.Core {
	if s == nil {
		return c
	}
	return &core{Core: c, s: s}
}

type core struct {
	zapcore.Core
	s *Set
}

func (c *core) With(fs []zapcore.Field) zapcore.Core {
	return &core{Core: c.Core.With(c.fields(fs)), s: c.s}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fs []zapcore.Field) error {
	e.Message = c.s.String(e.Message)
	return c.Core.Write(e, c.fields(fs))
}

func (c *core) fields(fs []zapcore.Field) []zapcore.Field {
	if c.s.Len() == 0 {
		return fs
	}
	out := make([]zapcore.Field, len(fs))
	for i, f := range fs {
		out[i] = c.field(f)
	}
	return out
}

func (c *core) field(f zapcore.Field) zapcore.Field {
	switch f.Type {
	case zapcore.StringType:
		f.String = c.s.String(f.String)
		return f
	case zapcore.ByteStringType, zapcore.BinaryType:
		if b, ok := f.Interface.([]byte); ok {
			return zap.String(f.Key, c.s.String(string(b)))
		}
	case zapcore.ErrorType:
		if err, ok := f.Interface.(error); ok && err != nil {
			return zap.String(f.Key, c.s.String(err.Error()))
		}
	case zapcore.StringerType:
		if v, ok := f.Interface.(fmt.Stringer); ok && v != nil {
			return zap.String(f.Key, c.s.String(safeString(v)))
		}
	case zapcore.ArrayMarshalerType, zapcore.ObjectMarshalerType, zapcore.ReflectType, zapcore.InlineMarshalerType:
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		b, err := json.Marshal(enc.Fields)
		if err != nil {
			return zap.String(f.Key, Mask)
		}
		red := c.s.String(string(b))
		if red == string(b) {
			return f
		}
		var v map[string]any
		if json.Unmarshal([]byte(red), &v) != nil {
			return zap.String(f.Key, Mask)
		}
		if f.Type == zapcore.InlineMarshalerType {
			return zap.Any("inline", v)
		}
		return zap.Any(f.Key, v[f.Key])
	}
	return f
}

func safeString(v fmt.Stringer) (s string) {
	defer func() {
		if recover() != nil {
			s = "<panic in String>"
		}
	}()
	return v.String()
}
