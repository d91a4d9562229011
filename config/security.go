package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/BurntSushi/toml"
)

// The security keys of a [[listener]], [[user]] and [[group]] (issue 5).
// Decoding puts them in the structs of config.go; this file checks what
// an operator can get wrong, naming the line, before cmd/gearproxy hands
// them to the auth package (which checks the rest, naming the user).

// Mechanisms a listener may offer in `sasl`.
var saslMechanisms = map[string]bool{
	"SCRAM-SHA-256-PLUS": true, "SCRAM-SHA-256": true, "PLAIN": true, "EXTERNAL": true, "ANONYMOUS": true,
}

// Certificate fields that `cert_mapping` may name, tried in the order
// given, and the prefixes of a user's `certificates` entries.
var certFields = map[string]string{"cn": "CN", "dns": "DNS", "uri": "URI"}

// verifierRe is the PostgreSQL form `gearproxy passwd` prints; a
// clear-text password here would be an operator's mistake worth a line.
var verifierRe = regexp.MustCompile(`^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$`)

// CertLogin reports whether a verified client certificate alone logs in on
// this listener: it has a client CA and asks for client certificates
// (client_auth defaults to "request" when client_ca is set).
func (t *TLS) CertLogin() bool {
	return t != nil && t.ClientCA != "" && t.ClientAuth != "none"
}

// CertMappingFields returns cert_mapping as the auth package names the
// fields ("CN", "DNS", "URI"); the default prefers the most specific.
func (t *TLS) CertMappingFields() []string {
	if t == nil || len(t.CertMapping) == 0 {
		return []string{"URI", "DNS", "CN"}
	}
	out := make([]string, 0, len(t.CertMapping))
	for _, f := range t.CertMapping {
		out = append(out, certFields[strings.ToLower(f)])
	}
	return out
}

// Authenticates reports whether a listener asks who connects, rather than
// acting as one configured user.
func (l *Listener) Authenticates() bool { return l.User == "" }

func (c *Config) validateSecurity(file string, lines [][]byte) Errors {
	var errs Errors
	add := func(key toml.Key, nth int, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: nthKey(lines, key, nth), Msg: fmt.Sprintf(format, args...)})
	}
	users := map[string]bool{}
	for _, u := range c.Users {
		users[u.Name] = true
	}
	groups := map[string]bool{}
	for i, g := range c.Groups {
		if g.Name == "" {
			add(toml.Key{"group", "name"}, i, "group %d has no name", i+1)
		} else if groups[g.Name] {
			add(toml.Key{"group", "name"}, i, "duplicate group %q", g.Name)
		}
		groups[g.Name] = true
		checkRules(add, toml.Key{"group", "name"}, i, "group "+g.Name, g.Allow, g.Deny)
	}
	for i, u := range c.Users {
		if u.Password != "" && !verifierRe.MatchString(u.Password) {
			add(toml.Key{"user", "password"}, i, "user %q: password must be a SCRAM-SHA-256 verifier as `gearproxy passwd` prints it, never a clear-text password", u.Name)
		}
		for _, g := range u.Groups {
			if !groups[g] {
				add(toml.Key{"user", "groups"}, i, "user %q: group %q is not a [[group]]", u.Name, g)
			}
		}
		for _, cert := range u.Certificates {
			field, value, ok := strings.Cut(cert, "=")
			if _, known := certFields[strings.ToLower(field)]; !ok || !known || value == "" {
				add(toml.Key{"user", "certificates"}, i, "user %q: certificate %q: want CN=name, DNS=name or URI=uri", u.Name, cert)
			}
		}
		if u.MaxConnections < 0 {
			add(toml.Key{"user", "max_connections"}, i, "user %q: max_connections %d is negative", u.Name, u.MaxConnections)
		}
		if u.MaxPayload < 0 {
			add(toml.Key{"user", "max_payload"}, i, "user %q: max_payload %d is negative", u.Name, u.MaxPayload)
		}
		checkRules(add, toml.Key{"user", "name"}, i, "user "+u.Name, u.Allow, u.Deny)
	}
	for i, l := range c.Listeners {
		seen := map[string]bool{}
		for _, m := range l.SASL {
			m = strings.ToUpper(m)
			switch {
			case !saslMechanisms[m]:
				add(toml.Key{"listener", "sasl"}, i, "listener %s: unknown SASL mechanism %q (have SCRAM-SHA-256-PLUS, SCRAM-SHA-256, PLAIN, EXTERNAL, ANONYMOUS)", l.Address, m)
			case seen[m]:
				add(toml.Key{"listener", "sasl"}, i, "listener %s: SASL mechanism %s listed twice", l.Address, m)
			}
			seen[m] = true
		}
		if l.User != "" && (len(l.SASL) > 0 || l.TLS.CertLogin()) {
			add(toml.Key{"listener", "user"}, i, "listener %s: user = %q means no authentication; remove it or the sasl and client certificate settings", l.Address, l.User)
		}
		if seen["PLAIN"] && !l.Secure() && !l.InsecurePlain {
			add(toml.Key{"listener", "sasl"}, i, "listener %s: PLAIN without TLS sends passwords in clear text: add [listener.tls] or insecure_plain = true (trusted networks only)", l.Address)
		}
		if (seen["EXTERNAL"] || seen["SCRAM-SHA-256-PLUS"]) && !l.Secure() {
			add(toml.Key{"listener", "sasl"}, i, "listener %s: EXTERNAL and SCRAM-SHA-256-PLUS need [listener.tls]", l.Address)
		}
		if seen["ANONYMOUS"] != (l.AnonymousUser != "") {
			add(toml.Key{"listener", "anonymous_user"}, i, "listener %s: list ANONYMOUS in sasl exactly when anonymous_user is set", l.Address)
		}
		if l.AnonymousUser != "" && !users[l.AnonymousUser] {
			add(toml.Key{"listener", "anonymous_user"}, i, "listener %s: anonymous_user %q is not a [[user]]", l.Address, l.AnonymousUser)
		}
		if l.MaxAuthFailures < 0 {
			add(toml.Key{"listener", "max_auth_failures"}, i, "listener %s: max_auth_failures %d is negative", l.Address, l.MaxAuthFailures)
		}
		errs = append(errs, c.validateACME(file, lines, i)...)
		if t := l.TLS; t != nil {
			if l.ACME == nil && (t.Cert == "" || t.Key == "") {
				add(toml.Key{"listener", "tls"}, i, "listener %s: [listener.tls] needs both cert and key", l.Address)
			}
			for _, f := range []struct{ key, path string }{{"cert", t.Cert}, {"key", t.Key}, {"client_ca", t.ClientCA}} {
				if f.path == "" {
					continue
				}
				if _, err := os.Stat(f.path); err != nil {
					add(toml.Key{"listener", "tls", f.key}, i, "listener %s: %s: %v", l.Address, f.key, err)
				}
			}
			if t.ClientCA == "" && (t.ClientAuth == "request" || t.ClientAuth == "require") {
				add(toml.Key{"listener", "tls", "client_auth"}, i, "listener %s: client_auth = %q needs client_ca to verify certificates against", l.Address, t.ClientAuth)
			}
			for _, f := range t.CertMapping {
				if _, ok := certFields[strings.ToLower(f)]; !ok {
					add(toml.Key{"listener", "tls", "cert_mapping"}, i, "listener %s: cert_mapping %q: want cn, dns or uri", l.Address, f)
				}
			}
		}
	}
	return errs
}

// checkRules refuses empty patterns, which would read as "allow nothing"
// or a typo, and names the owner.
func checkRules(add func(toml.Key, int, string, ...any), key toml.Key, nth int, owner string, sides ...Rules) {
	for _, r := range sides {
		for _, list := range [][]string{r.Submit, r.Work, r.Admin} {
			for _, p := range list {
				if strings.TrimSpace(p) == "" {
					add(key, nth, "%s: empty ACL pattern", owner)
				}
			}
		}
	}
}
