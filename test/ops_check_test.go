package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gearproxy check names the file and line of each mistake and exits 1;
// a good file (the shipped example) passes with exit 0.
func TestOpsCheck(t *testing.T) {
	t.Parallel()
	const base = "[[listener]]\naddress = \"127.0.0.1:4730\"\nuser = \"local\"\n" + // lines 1-3
		"[[user]]\nname = \"local\"\nsuperuser = true\n" + // lines 4-6
		"[[backend]]\nname = \"a\"\nbundled = true\n" // lines 7-9
	for _, tc := range []struct{ name, text, want string }{
		{"unknown key", base + "[admin]\nadress = \"127.0.0.1:1\"\n", "c.toml:11: unknown key admin.adress"},
		{"bad type", "drain_timeout = 30\n" + base, "c.toml:1: "},
		{"bad duration", "drain_timeout = \"30 seconds\"\n" + base, `c.toml:1: invalid duration "30 seconds"`},
		// The TLS listener comes first: config's key finder counts the
		// nth [listener.tls] cert as the nth listener's (see report).
		{"missing listener cert", "[[listener]]\naddress = \"127.0.0.1:4731\"\nsasl = [\"SCRAM-SHA-256\"]\n[listener.tls]\ncert = \"/nonexistent/server.pem\"\nkey = \"/nonexistent/server.key\"\n" + base,
			"c.toml:5: listener 127.0.0.1:4731: cert: stat /nonexistent/server.pem: no such file or directory"},
		{"missing admin cert", base + "[admin]\ntls_cert = \"/nonexistent/admin.pem\"\ntls_key = \"/nonexistent/admin.key\"\n",
			"c.toml:11: admin tls_cert: stat /nonexistent/admin.pem"},
		{"duplicate backend", base + "[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:4731\"\n", `c.toml:11: duplicate backend name "a"`},
		{"bad cron", base + "[[schedule]]\nname = \"s\"\ncron = \"61 * * * *\"\nfunction = \"f\"\n", `c.toml:12: schedule "s": `},
		{"duplicate schedule", base + "[[schedule]]\nname = \"s\"\ncron = \"@daily\"\nfunction = \"f\"\n[[schedule]]\nname = \"s\"\ncron = \"@hourly\"\nfunction = \"g\"\n",
			`c.toml:15: duplicate schedule "s"`},
		{"bad log format", base + "[log]\nformat = \"xml\"\n", `c.toml:11: log format "xml": want text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "c.toml")
			if err := os.WriteFile(file, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			r := runTool(t, 30*time.Second, nil, gearproxyBinary(t), "check", "-config", file)
			if r.Exit != 1 {
				t.Fatalf("exit %d, want 1: %s", r.Exit, r)
			}
			if !strings.Contains(r.Stderr, filepath.Dir(file)+"/"+tc.want) {
				t.Fatalf("stderr %q does not hold %q", r.Stderr, tc.want)
			}
		})
	}
	r := runTool(t, 30*time.Second, nil, gearproxyBinary(t), "check", "-config", "../config.toml.example")
	if r.Exit != 0 || !strings.Contains(r.Stdout, "OK") {
		t.Fatalf("the example does not pass: %s", r)
	}
}
