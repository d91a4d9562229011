package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The example file at the repository root is the documented default: the
// two must not drift apart.
func TestExampleIsDefault(t *testing.T) {
	data, err := os.ReadFile("../config.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("config.toml.example", data)
	if err != nil {
		t.Fatal(err)
	}
	c.File = ""
	if d := Default(); !reflect.DeepEqual(c, d) {
		t.Fatalf("config.toml.example decodes to\n%+v\nDefault() is\n%+v", c, d)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"unknown top key", "data_dir = \"x\"\nbogus = 1\n" + minimal, "c.toml:2: unknown key bogus"},
		{"unknown key in second backend", minimal + "[[backend]]\nname = \"b\"\nadress = \"x:1\"\n", "c.toml:10: unknown key backend.adress"},
		{"unknown table", minimal + "[nope]\nx = 1\n", "c.toml:8: unknown key nope"},
		{"bad type", "data_dir = 5\n" + minimal, "c.toml:1:"},
		{"bad duration", minimal + "[limits]\nidle_timeout = \"5 parsecs\"\n", "invalid duration"},
		{"duplicate backend", minimal + "[[backend]]\nname = \"a\"\nbundled = true\n", "c.toml:9: duplicate backend name \"a\""},
		{"bundled and address", "[[listener]]\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"a\"\nbundled = true\naddress = \"h:1\"\n", "c.toml:6: backend \"a\" is bundled and has an address"},
		{"listener user unknown", "[[listener]]\naddress = \"127.0.0.1:1\"\nuser = \"who\"\n[[backend]]\nname = \"a\"\nbundled = true\n", "c.toml:3: listener user \"who\" is not a [[user]]"},
		{"syntax", "data_dir = \n", "c.toml:1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.toml", []byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

const minimal = `[[listener]]
address = "127.0.0.1:1"
[[backend]]
name = "a"
bundled = true
[[user]]
name = "u"
`

func TestSecurityKeysAccepted(t *testing.T) {
	in := minimal + `
[[listener]]
address = "0.0.0.0:4731"
sasl = ["SCRAM-SHA-256", "PLAIN", "EXTERNAL"]
auth_timeout = "10s"
[listener.tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
client_auth = "request"
[[user]]
name = "alice"
password = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
certificates = ["CN=alice-worker"]
groups = ["imaging"]
namespace = "{user}."
max_connections = 50
[user.allow]
submit = ["img.*"]
work = ["img.resize"]
admin = ["status", "workers"]
[user.deny]
submit = ["img.internal.*"]
[[group]]
name = "imaging"
[group.allow]
work = ["img.*"]
`
	// The certificate files must exist: a missing one is an error.
	t.Chdir(t.TempDir())
	for _, f := range []string{"server.pem", "server.key", "ca.pem"} {
		os.WriteFile(f, nil, 0o600)
	}
	c, err := Parse("c.toml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if c.Users[1].Allow.Work[0] != "img.resize" || c.Listeners[1].TLS.ClientAuth != "request" || c.Listeners[1].AuthTimeout.Seconds() != 10 {
		t.Fatalf("decoded %+v", c)
	}
}
