// Command gearproxy runs the Gearman proxy, its bundled job server, the
// local TLS sidecar and the tools around them.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
)

// command is one subcommand: it gets its own arguments and the standard
// streams, and returns the process exit code.
type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() map[string]command {
	return map[string]command{
		"run":     {"run the proxy (the default)", runProxy},
		"server":  {"run the bundled job server standalone", runServer},
		"bench":   {"load-test a Gearman server and verify every result", runBench},
		"version": {"print the version", runVersion},
		"passwd":  {"print a SCRAM-SHA-256 verifier for a user's password", runPasswd},
		"connect": {"relay local plain Gearman clients to a TLS + SASL gearproxy", runConnect},
		"check":   {"validate a configuration file, printing every error with its line", runCheck},
	}
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	cmds := commands()
	name := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		name, args = args[0], args[1:]
	}
	if name == "help" || name == "-h" {
		usage(stdout, cmds)
		return 0
	}
	c, ok := cmds[name]
	if !ok {
		fmt.Fprintf(stderr, "gearproxy: unknown command %q\n", name)
		usage(stderr, cmds)
		return 2
	}
	return c.run(args, stdout, stderr)
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: gearproxy [command] [flags]")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
}
