package envconf

import (
	"crypto/tls"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaSecurity reads KAFKA_TLS, KAFKA_TLS_CA_FILE, KAFKA_TLS_CERT_FILE,
// KAFKA_TLS_KEY_FILE, KAFKA_TLS_SERVER_NAME and KAFKA_SASL_MECHANISM,
// KAFKA_SASL_USER, KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) into
// client options.
//
// TLS (1.2 or later) is on with KAFKA_TLS=true; KAFKA_TLS_CA_FILE then
// replaces the system roots with a private CA bundle, KAFKA_TLS_CERT_FILE
// and KAFKA_TLS_KEY_FILE add a client certificate, and
// KAFKA_TLS_SERVER_NAME overrides the name checked in the brokers'
// certificates (default: each broker's host). Setting any KAFKA_TLS_*
// variable without KAFKA_TLS=true is an error rather than a silent
// plaintext connection. The SASL password is read only when
// KAFKA_SASL_MECHANISM is set.
func (e *Env) KafkaSecurity() ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if e.Bool("KAFKA_TLS", false) {
		tc := &tls.Config{}
		e.tlsFiles("KAFKA", tc)
		opts = append(opts, kgo.DialTLSConfig(tc))
	} else if v := e.tlsVarsSet("KAFKA"); v != "" {
		e.Fail(v, "is set but KAFKA_TLS is not true (set KAFKA_TLS=true to connect with TLS)")
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
