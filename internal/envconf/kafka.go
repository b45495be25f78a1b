package envconf

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaSecurity reads KAFKA_TLS, KAFKA_TLS_CA_FILE, KAFKA_TLS_CERT_FILE,
// KAFKA_TLS_KEY_FILE, KAFKA_TLS_SERVER_NAME and KAFKA_SASL_MECHANISM,
// KAFKA_SASL_USER, KAFKA_SASL_PASSWORD into client options.
func (e *Env) KafkaSecurity() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if e.Bool("KAFKA_TLS", false) {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: e.Str("KAFKA_TLS_SERVER_NAME", "")}
		if ca := e.Str("KAFKA_TLS_CA_FILE", ""); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				e.Fail("KAFKA_TLS_CA_FILE", "cannot read: %v", ErrNoPath(err))
			} else {
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					e.Fail("KAFKA_TLS_CA_FILE", "no PEM certificates in the file")
				}
				tc.RootCAs = pool
			}
		}
		cert, key := e.Str("KAFKA_TLS_CERT_FILE", ""), e.Str("KAFKA_TLS_KEY_FILE", "")
		if (cert == "") != (key == "") {
			e.Fail("KAFKA_TLS_CERT_FILE", "KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together")
		} else if cert != "" {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				e.Fail("KAFKA_TLS_CERT_FILE", "cannot load the client certificate: %v", ErrNoPath(err))
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	mech := strings.ToUpper(e.Str("KAFKA_SASL_MECHANISM", ""))
	if mech != "" {
		user, pass := e.Required("KAFKA_SASL_USER"), e.RequiredSecret("KAFKA_SASL_PASSWORD")
		switch mech {
		case "PLAIN":
			opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
		case "SCRAM-SHA-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
		case "SCRAM-SHA-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
		default:
			e.Fail("KAFKA_SASL_MECHANISM", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mech)
		}
	}
	return opts, e.Err()
}

// Redis reads REDIS_URL (or REDIS_URL_FILE: the URL carries the password):
// redis://, rediss:// (TLS) or unix://, with ACL user and password.
func (e *Env) Redis() *redis.Options {
	u := e.RequiredSecret("REDIS_URL")
	if u == "" {
		return nil
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		e.Fail("REDIS_URL", "not a redis://, rediss:// or unix:// URL (%s)", strings.ReplaceAll(err.Error(), u, "<REDIS_URL>"))
		return nil
	}
	return opts
}
