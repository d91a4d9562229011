package config

import (
	"strings"
	"testing"
)

func TestSecurityErrors(t *testing.T) {
	const head = "[[backend]]\nname = \"a\"\nbundled = true\n" // lines 1-3
	for _, tc := range []struct{ name, in, want string }{
		{"missing cert file", head + "[[listener]]\naddress = \"127.0.0.1:1\"\nsasl = [\"PLAIN\"]\n[listener.tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
			"c.toml:8: listener 127.0.0.1:1: cert: stat /nonexistent/c.pem: no such file or directory"},
		{"unknown mechanism", head + "[[listener]]\naddress = \"127.0.0.1:1\"\nsasl = [\"CRAM-MD5\"]\n", "c.toml:6: listener 127.0.0.1:1: unknown SASL mechanism \"CRAM-MD5\""},
		{"plain without tls", head + "[[listener]]\naddress = \"127.0.0.1:1\"\nsasl = [\"PLAIN\"]\n", "c.toml:6: listener 127.0.0.1:1: PLAIN without TLS"},
		{"clear-text password", head + "[[user]]\nname = \"bob\"\npassword = \"hunter2\"\n", "c.toml:6: user \"bob\": password must be a SCRAM-SHA-256 verifier"},
		{"unknown group", head + "[[user]]\nname = \"bob\"\ngroups = [\"nope\"]\n", "c.toml:6: user \"bob\": group \"nope\" is not a [[group]]"},
		{"bad certificate entry", head + "[[user]]\nname = \"bob\"\ncertificates = [\"bob\"]\n", "c.toml:6: user \"bob\": certificate \"bob\": want CN=name"},
		{"unknown user key", head + "[[user]]\nname = \"bob\"\n[user.allow]\nsubmitt = [\"x\"]\n", "c.toml:7: unknown key user.allow.submitt"},
		{"bad cert mapping", head + "[[listener]]\naddress = \"127.0.0.1:1\"\nsasl = [\"SCRAM-SHA-256\"]\n[listener.tls]\ncert = \"/\"\nkey = \"/\"\ncert_mapping = [\"serial\"]\n", "c.toml:10: listener 127.0.0.1:1: cert_mapping \"serial\": want cn, dns or uri"},
		{"anonymous without user", head + "[[listener]]\naddress = \"127.0.0.1:1\"\nsasl = [\"ANONYMOUS\"]\n", "list ANONYMOUS in sasl exactly when anonymous_user is set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
