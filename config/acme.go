package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The [listener.acme] table: a certificate obtained and renewed
// automatically, validated with TLS-ALPN-01 on the listener's own port.
// Client certificate settings stay in [listener.tls], which then has no
// cert and key.

// Secure reports whether the listener speaks TLS, with certificate files
// or with ACME.
func (l *Listener) Secure() bool { return l.TLS != nil || l.ACME != nil }

// ACMEStorage is where a listener's ACME account, keys and certificates
// live: under data_dir, so that a restart reuses them instead of asking
// the CA again (Let's Encrypt rate-limits new certificates).
func (c *Config) ACMEStorage() string { return filepath.Join(c.DataDir, "acme") }

// validateACME checks listener i's [listener.acme], if any, naming lines.
func (c *Config) validateACME(file string, lines [][]byte, i int) Errors {
	l := c.Listeners[i]
	a := l.ACME
	if a == nil {
		return nil
	}
	// The nth [listener.acme] in the file, for pointing at its lines.
	nth := 0
	for _, prev := range c.Listeners[:i] {
		if prev.ACME != nil {
			nth++
		}
	}
	var errs Errors
	add := func(key string, format string, args ...any) {
		k := toml.Key{"listener", "acme"}
		if key != "" {
			k = append(k, key)
		}
		errs = append(errs, &Error{File: file, Line: nthKey(lines, k, nth), Msg: fmt.Sprintf("listener %s: ", l.Address) + fmt.Sprintf(format, args...)})
	}
	if len(a.Domains) == 0 {
		add("domains", "[listener.acme] needs domains: the names clients connect to, which the CA validates")
	}
	for _, d := range a.Domains {
		if !validDomain(d) {
			add("domains", "acme domain %q is not a DNS name (wildcards need DNS-01, which gearproxy does not do)", d)
		}
	}
	if a.Email != "" && !strings.Contains(a.Email, "@") {
		add("email", "acme email %q is not an address", a.Email)
	}
	if a.CA != "" {
		u, err := url.Parse(a.CA)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			add("ca", "acme ca %q: want the https:// URL of the CA's ACME directory", a.CA)
		}
	}
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		switch {
		case err != nil:
			add("ca_root", "acme ca_root: %v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(pem):
			add("ca_root", "acme ca_root %s holds no PEM certificate", a.CARoot)
		}
	}
	if _, port, err := net.SplitHostPort(l.Address); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n <= 0 {
			add("", "[listener.acme] needs a fixed port in address: the CA validates by connecting to it")
		}
	}
	if t := l.TLS; t != nil && (t.Cert != "" || t.Key != "") {
		add("", "[listener.acme] obtains the certificate: remove cert and key from [listener.tls] (keep client_ca, client_auth, cert_mapping there)")
	}
	return errs
}

// validDomain accepts a DNS name of letters, digits and hyphens with at
// least two labels, as CAs issue for.
func validDomain(d string) bool {
	if len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
