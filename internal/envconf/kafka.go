package envconf

import (
	"crypto/tls"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// KafkaTLS declares the variables of KafkaSecurity's TLS half.
var KafkaTLS = Row{
	Vars: []Var{
		{Name: "KAFKA_TLS", Kind: Bool},
		{Name: "KAFKA_TLS_CA_FILE"},
		{Name: "KAFKA_TLS_CERT_FILE"},
		{Name: "KAFKA_TLS_KEY_FILE"},
		{Name: "KAFKA_TLS_SERVER_NAME"},
	},
	Default: "off",
	Doc: "TLS 1.2+ to the brokers; the CA file replaces the system roots; any `KAFKA_TLS_*` without " +
		"`KAFKA_TLS=true` is an error",
}

// KafkaSASL declares the variables of KafkaSecurity's SASL half.
var KafkaSASL = Row{
	Vars: []Var{
		{Name: "KAFKA_SASL_MECHANISM"},
		{Name: "KAFKA_SASL_USER"},
		{Name: "KAFKA_SASL_PASSWORD", Secret: true},
	},
	Default: "off",
	Doc:     "`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`; the user and password are read only with a mechanism",
}

// saslMechanisms are the KAFKA_SASL_MECHANISM values, upper-cased.
var saslMechanisms = map[string]func(user, pass string) kgo.Opt{
	"PLAIN": func(u, p string) kgo.Opt { return kgo.SASL(plain.Auth{User: u, Pass: p}.AsMechanism()) },
	"SCRAM-SHA-256": func(u, p string) kgo.Opt {
		return kgo.SASL(scram.Auth{User: u, Pass: p}.AsSha256Mechanism())
	},
	"SCRAM-SHA-512": func(u, p string) kgo.Opt {
		return kgo.SASL(scram.Auth{User: u, Pass: p}.AsSha512Mechanism())
	},
}

// KafkaSecurity reads the variables of KafkaTLS and KafkaSASL (the Env's
// table must declare both) into client options; problems are recorded in
// e.
//
// TLS (1.2 or later) is on with KAFKA_TLS=true; KAFKA_TLS_CA_FILE then
// replaces the system roots with a private CA bundle, KAFKA_TLS_CERT_FILE
// and KAFKA_TLS_KEY_FILE add a client certificate, and
// KAFKA_TLS_SERVER_NAME overrides the name checked in the brokers'
// certificates (default: each broker's host). Setting any KAFKA_TLS_*
// variable without KAFKA_TLS=true is an error rather than a silent
// plaintext connection. KAFKA_SASL_USER and KAFKA_SASL_PASSWORD (or
// KAFKA_SASL_PASSWORD_FILE) are read only when KAFKA_SASL_MECHANISM is set,
// and only after it was found to be one this client speaks: an unknown
// mechanism is the one problem to fix, whatever else is missing.
func (e *Env) KafkaSecurity() []kgo.Opt {
	var opts []kgo.Opt
	if e.Bool("KAFKA_TLS") {
		tc := &tls.Config{}
		e.tlsFiles("KAFKA", tc)
		opts = append(opts, kgo.DialTLSConfig(tc))
	} else if v := e.tlsVarsSet("KAFKA"); v != "" && !e.Failed("KAFKA_TLS") {
		e.Fail(v, "is set but KAFKA_TLS is not true (set KAFKA_TLS=true to connect with TLS)")
	}
	mech := strings.ToUpper(e.Str("KAFKA_SASL_MECHANISM"))
	if mech == "" {
		return opts
	}
	sasl, ok := saslMechanisms[mech]
	if !ok {
		e.Fail("KAFKA_SASL_MECHANISM", "%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", mech)
		return opts
	}
	user, pass := e.Required("KAFKA_SASL_USER"), e.RequiredSecret("KAFKA_SASL_PASSWORD")
	return append(opts, sasl(user, pass))
}
