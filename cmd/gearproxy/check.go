package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/gearproxy/gearproxy/config"
)

// runCheck is `gearproxy check -config FILE`: it validates the file as
// `gearproxy run` would load it, prints every error with its file and line
// and exits 1 on any, so that a service manager can refuse a broken file
// before a reload (deploy/gearproxy.service's ExecReload).
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file to check (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: gearproxy check -config FILE")
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				fmt.Fprintln(stderr, e)
			}
		} else {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	// What the file's syntax allows but startup would still refuse:
	// users the auth package rejects (it names the user).
	bad := false
	if _, err := authUsers(cfg); err != nil {
		fmt.Fprintf(stderr, "%s: users: %v\n", *file, err)
		bad = true
	}
	// Certificate files that exist but do not load (a key that does
	// not match, a CA bundle without a certificate).
	for _, l := range cfg.Listeners {
		if l.TLS != nil {
			if err := checkTLSFiles(l.TLS, l.ACME == nil); err != nil {
				fmt.Fprintf(stderr, "%s: listener %s: %v\n", *file, l.Address, err)
				bad = true
			}
		}
	}
	if a := cfg.Admin; a.TLSCert != "" {
		if _, err := tls.LoadX509KeyPair(a.TLSCert, a.TLSKey); err != nil {
			fmt.Fprintf(stderr, "%s: admin: certificate %s / key %s: %v\n", *file, a.TLSCert, a.TLSKey, err)
			bad = true
		}
	}
	if bad {
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK\n", *file)
	return 0
}
