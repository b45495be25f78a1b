// Package pkitest writes a throwaway certificate authority, a server
// certificate for the loopback addresses and a client certificate into a
// test's temporary directory, so TLS tests need no key material in the
// repository. Tests only.
package pkitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ServerName is a DNS name the server certificate carries besides
// localhost, 127.0.0.1 and ::1 (to test server-name overrides).
const ServerName = "fleet.test"

// PKI is a CA and the certificates it signed, as PEM files. Its fields are
// read-only after New; it is safe for concurrent use.
type PKI struct {
	// CAFile is the CA certificate.
	CAFile string
	// ServerCertFile and ServerKeyFile: a server certificate for localhost,
	// 127.0.0.1, ::1 and ServerName.
	ServerCertFile, ServerKeyFile string
	// ClientCertFile and ClientKeyFile: a client certificate (CN "fleet").
	ClientCertFile, ClientKeyFile string
	// OtherCAFile is a second CA that signed nothing here.
	OtherCAFile string

	pool   *x509.CertPool
	server tls.Certificate
}

// New generates the CA and certificates into t.TempDir().
func New(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{pool: x509.NewCertPool()}
	ca, caKey, caDER := newCA(t, "analysisfleet test CA")
	p.pool.AddCert(ca)
	p.CAFile = writePEM(t, dir, "ca.crt", "CERTIFICATE", caDER)
	_, _, otherDER := newCA(t, "unrelated test CA")
	p.OtherCAFile = writePEM(t, dir, "other-ca.crt", "CERTIFICATE", otherDER)

	srv := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost", ServerName},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	p.ServerCertFile, p.ServerKeyFile = issue(t, dir, "server", srv, ca, caKey)
	cli := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "fleet"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	p.ClientCertFile, p.ClientKeyFile = issue(t, dir, "client", cli, ca, caKey)

	pair, err := tls.LoadX509KeyPair(p.ServerCertFile, p.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	p.server = pair
	return p
}

// ServerTLS returns a server configuration with the server certificate,
// verifying client certificates against the CA as clientAuth says.
func (p *PKI) ServerTLS(clientAuth tls.ClientAuthType) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   clientAuth,
		ClientCAs:    p.pool,
		MinVersion:   tls.VersionTLS12,
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, der
}

func issue(t testing.TB, dir, name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl.SerialNumber = serial(t)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".crt", "CERTIFICATE", der), writePEM(t, dir, name+".key", "PRIVATE KEY", kder)
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	f := filepath.Join(dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
