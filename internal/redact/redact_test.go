package redact

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A secret with every character that encodings treat specially.
const secret = "s3cr+t/with=odd&chars?x"

func TestEveryWireFormIsRedacted(t *testing.T) {
	t.Parallel()
	s := New(secret)
	s.AddBasic("client-id-1", secret)
	forms := map[string]string{
		"raw":              secret,
		"query escape":     url.QueryEscape(secret),
		"query lower hex":  strings.ToLower(url.QueryEscape(secret)),
		"path escape":      url.PathEscape(secret),
		"json slash":       strings.ReplaceAll(secret, "/", `\/`),
		"json html":        strings.ReplaceAll(secret, "&", `\u0026`),
		"base64":           base64.StdEncoding.EncodeToString([]byte(secret)),
		"base64 url raw":   base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"basic auth":       base64.StdEncoding.EncodeToString([]byte("client-id-1:" + secret)),
		"percent20 spaces": strings.ReplaceAll(url.QueryEscape(secret+" x"), "+", "%20"),
	}
	for name, f := range forms {
		text := fmt.Sprintf(`403 {"message":"invalid token \"%s\""}`, f)
		got := s.String(text)
		require.NotContains(t, got, f, name)
		require.Contains(t, got, Mask, name)
	}
}

func TestSnippetMasksASecretCutShort(t *testing.T) {
	t.Parallel()
	s := New(secret)
	for _, f := range []string{secret, url.QueryEscape(secret), base64.StdEncoding.EncodeToString([]byte(secret))} {
		for _, keep := range []int{MinCut, len(f) / 2, len(f) - 1} {
			text := `{"message":"rejected ` + f[:keep]
			got := s.Snippet(text)
			require.Equal(t, `{"message":"rejected `+Mask, got, "%s cut to %d bytes", f, keep)
		}
	}
	// Whole forms are masked as String does; a start shorter than MinCut,
	// or text that is no secret's start, stays.
	require.Equal(t, "a "+Mask+" b", s.Snippet("a "+secret+" b"))
	require.Equal(t, "ends with "+secret[:MinCut-1], s.Snippet("ends with "+secret[:MinCut-1]))
	require.Equal(t, "nothing secret here", s.Snippet("nothing secret here"))
	var nilSet *Set
	require.Equal(t, "x", nilSet.Snippet("x"))
}

func TestPartOfALongerSecretIsNotLeft(t *testing.T) {
	t.Parallel()
	// The CB Cloud token is SECRET/ID: both parts are secrets of their own.
	s := New("API-SECRET-1234", "API-SECRET-1234/APIID99")
	got := s.String(`invalid token "API-SECRET-1234/APIID99"`)
	require.Equal(t, `invalid token "`+Mask+`"`, got)
}

func TestShortStringsAreNotMasks(t *testing.T) {
	t.Parallel()
	s := New("abc", "")
	require.Zero(t, s.Len())
	require.Equal(t, "abc def", s.String("abc def"))
	var nilSet *Set
	require.Equal(t, "x", nilSet.String("x"))
	require.NoError(t, nilSet.Error(nil))
}

func TestErrorKeepsItsChain(t *testing.T) {
	t.Parallel()
	s := New(secret)
	base := fmt.Errorf("call failed: %s: %w", secret, context.DeadlineExceeded)
	err := s.Error(base)
	require.NotContains(t, err.Error(), secret)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, IsRedacted(err))
	plain := errors.New("nothing secret here")
	require.Same(t, plain, s.Error(plain))
}

func TestSetIsBounded(t *testing.T) {
	t.Parallel()
	s := New()
	for i := range 2 * MaxForms {
		s.Add(fmt.Sprintf("access-token-%06d", i))
	}
	require.LessOrEqual(t, s.Len(), MaxForms)
	require.Contains(t, s.String("access-token-"+fmt.Sprintf("%06d", 2*MaxForms-1)), Mask, "the newest stay")
}

type stringer string

func (v stringer) String() string { return string(v) }

type obj struct{ v string }

func (o obj) MarshalLogObject(e zapcore.ObjectEncoder) error {
	e.AddString("token", o.v)
	return nil
}

func TestLoggerRedactsEveryFieldKind(t *testing.T) {
	t.Parallel()
	s := New(secret)
	zc, logs := observer.New(zap.DebugLevel)
	log := s.Logger(zap.New(zc)).With(zap.String("bound", secret))
	log.Warn("vendor said "+secret,
		zap.String("s", "x"+secret),
		zap.Error(errors.New("403 "+url.QueryEscape(secret))),
		zap.Stringer("st", stringer(secret)),
		zap.ByteString("b", []byte(secret)),
		zap.Strings("list", []string{"ok", secret}),
		zap.Object("o", obj{secret}),
		zap.Any("m", map[string]string{"k": secret}),
		zap.Int("n", 3),
	)
	require.Equal(t, 1, logs.Len())
	e := logs.All()[0]
	require.NotContains(t, e.Message, secret)
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range e.Context {
		f.AddTo(enc)
	}
	dump := fmt.Sprint(enc.Fields)
	require.NotContains(t, dump, secret)
	require.NotContains(t, dump, url.QueryEscape(secret))
	require.Contains(t, dump, Mask)
	require.EqualValues(t, 3, enc.Fields["n"])
}

func FuzzString(f *testing.F) {
	f.Add("s3cr+t/x==", "before s3cr+t/x== after")
	f.Fuzz(func(t *testing.T, sec, text string) {
		s := New(sec)
		got := s.String(text + sec)
		if len(sec) >= MinLen && strings.Contains(got, sec) && !strings.Contains(Mask, sec) {
			t.Fatalf("secret %q survives in %q", sec, got)
		}
	})
}
