package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gearproxy/gearproxy/bench"
	"github.com/gearproxy/gearproxy/client"
)

// benchSecurity holds gearproxy bench's TLS and SASL flags: the same
// names and meanings as gearproxy connect's, so a command line moves from
// one to the other.
type benchSecurity struct {
	tls          *bool
	caFile       *string
	certFile     *string
	keyFile      *string
	serverName   *string
	user         *string
	passwordFile *string
	mechanism    *string
}

func addBenchSecurityFlags(fs *flag.FlagSet) *benchSecurity {
	return &benchSecurity{
		tls:          fs.Bool("tls", false, "connect with TLS (implied by -ca, -cert and -server-name)"),
		caFile:       fs.String("ca", "", "PEM `file` of CAs for the server certificate (default: system roots)"),
		certFile:     fs.String("cert", "", "PEM client certificate `file` (EXTERNAL, or a certificate login when no -user or -mechanism is given)"),
		keyFile:      fs.String("key", "", "PEM private key `file` of -cert"),
		serverName:   fs.String("server-name", "", "`name` to verify the server certificate against and send as SNI (default: the host of each -server)"),
		user:         fs.String("user", "", "SASL user `name`; every connection logs in before the run starts"),
		passwordFile: fs.String("password-file", "", "read the password from `file` (first line); default the "+passwordEnv+" environment variable"),
		mechanism:    fs.String("mechanism", "", "SASL `mechanism`: SCRAM-SHA-256, SCRAM-SHA-256-PLUS, PLAIN or EXTERNAL (default: the best offered)"),
	}
}

// dialer turns the flags into bench's Dialer: plain TCP when none is set.
// Its errors are flag mistakes (exit 2).
func (s *benchSecurity) dialer() (bench.Dialer, error) {
	var tc *tls.Config
	if *s.tls || *s.caFile != "" || *s.certFile != "" || *s.keyFile != "" || *s.serverName != "" {
		tc = &tls.Config{ServerName: *s.serverName}
	}
	if *s.caFile != "" {
		pem, err := os.ReadFile(*s.caFile)
		if err != nil {
			return nil, fmt.Errorf("-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-ca %s: no PEM certificate in it", *s.caFile)
		}
	}
	if (*s.certFile == "") != (*s.keyFile == "") {
		return nil, errors.New("-cert and -key go together")
	}
	if *s.certFile != "" {
		cert, err := tls.LoadX509KeyPair(*s.certFile, *s.keyFile)
		if err != nil {
			return nil, fmt.Errorf("-cert/-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	mech := strings.ToUpper(*s.mechanism)
	switch mech {
	case "", client.MechSCRAM, client.MechSCRAMPlus, client.MechPlain, client.MechExternal:
	default:
		return nil, fmt.Errorf("-mechanism %q: want SCRAM-SHA-256, SCRAM-SHA-256-PLUS, PLAIN or EXTERNAL", *s.mechanism)
	}
	if *s.user == "" && mech == "" {
		if *s.passwordFile != "" {
			return nil, errors.New("-password-file needs -user")
		}
		// No SASL: plain Gearman, or a certificate login on TLS.
		return bench.DialSecure(tc, nil), nil
	}
	creds := &client.Credentials{Mechanism: mech, Username: *s.user}
	if mech == client.MechExternal {
		if tc == nil || len(tc.Certificates) == 0 {
			return nil, errors.New("-mechanism EXTERNAL needs -cert and -key")
		}
		return bench.DialSecure(tc, creds), nil
	}
	if *s.user == "" {
		return nil, fmt.Errorf("-mechanism %s needs -user", mech)
	}
	password, err := benchPassword(*s.passwordFile)
	if err != nil {
		return nil, err
	}
	if password == "" {
		return nil, fmt.Errorf("-user %s has no password: use -password-file or %s", *s.user, passwordEnv)
	}
	creds.Password = password
	return bench.DialSecure(tc, creds), nil
}

// benchPassword reads the first line of file, or the environment when no
// file is given: never a flag, which would show in ps.
func benchPassword(file string) (string, error) {
	if file == "" {
		return os.Getenv(passwordEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("-password-file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}
