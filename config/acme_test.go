package config

import (
	"strings"
	"testing"
)

func TestACMEErrors(t *testing.T) {
	const head = "[[backend]]\nname = \"a\"\nbundled = true\n[[listener]]\naddress = \"127.0.0.1:4731\"\nsasl = [\"PLAIN\"]\n" // lines 1-6
	for _, tc := range []struct{ name, in, want string }{
		{"no domains", head + "[listener.acme]\nemail = \"ops@example.org\"\n", "c.toml:7: listener 127.0.0.1:4731: [listener.acme] needs domains"},
		{"bad domain", head + "[listener.acme]\ndomains = [\"*.example.org\"]\n", "c.toml:8: listener 127.0.0.1:4731: acme domain \"*.example.org\" is not a DNS name"},
		{"bad ca", head + "[listener.acme]\ndomains = [\"gear.example.org\"]\nca = \"http://ca.example.org/dir\"\n", "c.toml:9: listener 127.0.0.1:4731: acme ca \"http://ca.example.org/dir\": want the https:// URL"},
		{"missing ca_root", head + "[listener.acme]\ndomains = [\"gear.example.org\"]\nca_root = \"/nonexistent/root.pem\"\n", "c.toml:9: listener 127.0.0.1:4731: acme ca_root: open /nonexistent/root.pem"},
		{"cert and acme", head + "[listener.tls]\ncert = \"/\"\nkey = \"/\"\n[listener.acme]\ndomains = [\"gear.example.org\"]\n", "c.toml:10: listener 127.0.0.1:4731: [listener.acme] obtains the certificate: remove cert and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
	// A good table, with client certificate policy in [listener.tls],
	// makes the listener secure enough for PLAIN.
	ok := head + "[listener.tls]\nclient_ca = \"/dev/null\"\nclient_auth = \"none\"\n[listener.acme]\ndomains = [\"gear.example.org\"]\nemail = \"ops@example.org\"\nca = \"https://acme.example.org/directory\"\n"
	c, err := Parse("c.toml", []byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Listeners[0].Secure() || c.Listeners[0].ACME.CA != "https://acme.example.org/directory" {
		t.Fatalf("listener %+v", c.Listeners[0])
	}
}
