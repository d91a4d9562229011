package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/gearproxy/gearproxy/auth"
)

func TestPasswd(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stderr string
	}{
		{"verifier", nil, "s3cret\n", 0, ""},
		{"crlf", nil, "s3cret\r\n", 0, ""},
		{"no newline", nil, "s3cret", 0, ""},
		{"user table", []string{"alice"}, "s3cret\n", 0, ""},
		{"empty", nil, "\n", 1, "empty password"},
		{"too long", nil, strings.Repeat("x", 2000), 1, "longer"},
		{"bad name", []string{"a b"}, "s3cret\n", 2, "space"},
		{"few iterations", []string{"-iterations", "100"}, "s3cret\n", 2, "iterations"},
		{"two names", []string{"a", "b"}, "s3cret\n", 2, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := passwd(tt.args, strings.NewReader(tt.stdin), &out, &errOut)
			if code != tt.code || !strings.Contains(errOut.String(), tt.stderr) {
				t.Fatalf("code %d stderr %q, want %d and %q", code, errOut.String(), tt.code, tt.stderr)
			}
			if code != 0 {
				return
			}
			verifier := strings.TrimSpace(out.String())
			if len(tt.args) == 1 {
				var cfg struct {
					User []struct{ Name, Password string }
				}
				if _, err := toml.Decode(out.String(), &cfg); err != nil {
					t.Fatalf("output is not TOML: %v\n%s", err, out.String())
				}
				if len(cfg.User) != 1 || cfg.User[0].Name != tt.args[0] {
					t.Fatalf("got %+v", cfg)
				}
				verifier = cfg.User[0].Password
			}
			v, err := auth.ParseVerifier(verifier)
			if err != nil {
				t.Fatal(err)
			}
			if !v.CheckPassword("s3cret") {
				t.Fatal("verifier does not match the password")
			}
		})
	}
}
