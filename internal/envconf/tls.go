package envconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
)

// tlsFiles applies <prefix>_TLS_CA_FILE (a PEM bundle that replaces the
// system roots: only these CAs are trusted), <prefix>_TLS_CERT_FILE with
// <prefix>_TLS_KEY_FILE (a client certificate, for mutual TLS) and
// <prefix>_TLS_SERVER_NAME (the name the server certificate must carry) to
// tc, and raises tc.MinVersion to TLS 1.2. Problems are recorded in e,
// naming the variable; no file content appears in them.
func (e *Env) tlsFiles(prefix string, tc *tls.Config) {
	if tc.MinVersion < tls.VersionTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	if sn := e.Str(prefix + "_TLS_SERVER_NAME"); sn != "" {
		tc.ServerName = sn
	}
	if ca := e.Str(prefix + "_TLS_CA_FILE"); ca != "" {
		pem, err := os.ReadFile(ca)
		switch {
		case err != nil:
			e.Fail(prefix+"_TLS_CA_FILE", "cannot read the CA file: %v", ErrNoPath(err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				e.Fail(prefix+"_TLS_CA_FILE", "no PEM certificate in the file")
			}
			tc.RootCAs = pool
		}
	}
	certVar, keyVar := prefix+"_TLS_CERT_FILE", prefix+"_TLS_KEY_FILE"
	cert, key := e.Str(certVar), e.Str(keyVar)
	switch {
	case cert == "" && key == "":
	case cert == "":
		e.Fail(certVar, "is required with %s (a client certificate needs both)", keyVar)
	case key == "":
		e.Fail(keyVar, "is required with %s (a client certificate needs both)", certVar)
	default:
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			e.Fail(certVar, "cannot load the client certificate and key (%s): %v", keyVar, ErrNoPath(err))
			return
		}
		tc.Certificates = []tls.Certificate{pair}
	}
}

// tlsVarsSet returns the first of <prefix>_TLS_CA_FILE, _CERT_FILE,
// _KEY_FILE, _SERVER_NAME that is set to a non-empty value, or "".
func (e *Env) tlsVarsSet(prefix string) string {
	for _, s := range []string{"_TLS_CA_FILE", "_TLS_CERT_FILE", "_TLS_KEY_FILE", "_TLS_SERVER_NAME"} {
		if v, _ := e.Raw(prefix + s); v != "" {
			return prefix + s
		}
	}
	return ""
}
