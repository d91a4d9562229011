package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gearproxy/gearproxy/auth"
	"golang.org/x/term"
)

// maxPasswordLen bounds a password read from stdin, so a mistaken pipe of
// a large file fails clearly instead of hashing megabytes.
const maxPasswordLen = 1024

func runPasswd(args []string, stdout, stderr io.Writer) int {
	return passwd(args, os.Stdin, stdout, stderr)
}

// passwd prints a SCRAM-SHA-256 verifier for a password read from the
// terminal (twice, without echo) or from the first line of stdin. The
// verifier is all the users file ever holds: it serves SCRAM and PLAIN and
// cannot be turned back into the password.
func passwd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	iterations := fs.Int("iterations", auth.DefaultIterations, "PBKDF2 iterations (at least 4096, RFC 7677)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gearproxy passwd [-iterations N] [NAME]")
		fmt.Fprintln(stderr, "Reads a password from the terminal or stdin and prints its SCRAM-SHA-256 verifier;")
		fmt.Fprintln(stderr, "with NAME, a [[user]] table ready for the config file.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return 2
	}
	name := fs.Arg(0)
	if name != "" {
		if _, err := auth.NewUsers([]auth.UserConfig{{Name: name}}, nil); err != nil {
			fmt.Fprintf(stderr, "gearproxy passwd: %v\n", err)
			return 2
		}
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "gearproxy passwd: %v\n", err)
		return 1
	}
	v, err := auth.NewVerifier(pw, *iterations)
	if err != nil {
		fmt.Fprintf(stderr, "gearproxy passwd: %v\n", err)
		return 2
	}
	if name == "" {
		fmt.Fprintln(stdout, v.String())
		return 0
	}
	fmt.Fprintf(stdout, "[[user]]\nname = %s\npassword = %s\n", tomlString(name), tomlString(v.String()))
	return 0
}

// readPassword asks twice on a terminal, without echo; from a pipe it
// takes the first line.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		fmt.Fprint(stderr, "Password: ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stderr, "Again: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(stderr)
		if err != nil {
			return "", err
		}
		if string(a) != string(b) {
			return "", errors.New("the passwords differ")
		}
		return checkPassword(string(a))
	}
	line, err := bufio.NewReaderSize(io.LimitReader(stdin, maxPasswordLen+2), maxPasswordLen+2).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	if len(line) > maxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", maxPasswordLen)
	}
	return checkPassword(line)
}

func checkPassword(pw string) (string, error) {
	if pw == "" {
		return "", errors.New("empty password")
	}
	if strings.IndexByte(pw, 0) >= 0 {
		// PLAIN separates fields with NUL (RFC 4616): such a password
		// could never be sent.
		return "", errors.New("password contains a NUL byte")
	}
	return pw, nil
}

// tomlString quotes s as a TOML basic string. Names are free of control
// characters (NewUsers checks) and verifiers are base64, so only the
// backslash and the quote need escaping.
func tomlString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
