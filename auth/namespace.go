package auth

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// MaxUnique is the longest unique ID the proxy may send to a backend:
// gearmand truncates a 64-byte unique and refuses a longer one, so a
// namespaced unique must fit in 63 bytes like any other.
const MaxUnique = 63

// maxNamespace keeps room in a unique for the tenant's own ID: a UUID (36
// bytes) must still fit after the prefix.
const maxNamespace = MaxUnique - 36

// ErrUniqueTooLong is returned when a unique ID with its namespace prefix
// would not fit in MaxUnique bytes; the proxy answers ARGUMENT_TOO_LARGE.
var ErrUniqueTooLong = errors.New("unique ID too long with the tenant namespace")

// Namespace is a tenant's resolved prefix ("alice." for namespace =
// "{user}."), or "" for a user without one. The proxy adds it to function
// names and unique IDs on the way to a backend and strips it on the way
// back, so tenants can neither see, coalesce with, nor query each other's
// jobs, and never see the prefix themselves.
type Namespace string

// resolveNamespace expands "{user}" and "{group}" in a configured value.
func resolveNamespace(template, user, group string) (Namespace, error) {
	ns := strings.ReplaceAll(template, "{user}", user)
	ns = strings.ReplaceAll(ns, "{group}", group)
	if ns == "" {
		return "", nil
	}
	if len(ns) > maxNamespace {
		return "", fmt.Errorf("namespace %q is %d bytes, limit %d (a unique ID must still fit)", ns, len(ns), maxNamespace)
	}
	for _, r := range ns {
		// A namespace lands in function names that admin text lines
		// list separated by tabs and spaces.
		if r == 0 || unicode.IsSpace(r) || unicode.IsControl(r) {
			return "", fmt.Errorf("namespace %q contains a space or control character", ns)
		}
	}
	return Namespace(ns), nil
}

// AppendFunction appends the backend's name of a function to dst.
func (n Namespace) AppendFunction(dst, function []byte) []byte {
	dst = append(dst, n...)
	return append(dst, function...)
}

// AppendUnique appends the backend's form of a unique ID to dst. An empty
// unique is left empty, since gearmand never coalesces on it and a prefix
// would make every such job of the tenant coalesce into one; "-" (Perl's
// legacy "coalesce on identical data") is left as it is too, its meaning
// kept. Neither leaks across tenants: coalescing is per function, and the
// function carries the namespace.
func (n Namespace) AppendUnique(dst, unique []byte) ([]byte, error) {
	if n == "" || len(unique) == 0 || (len(unique) == 1 && unique[0] == '-') {
		return append(dst, unique...), nil
	}
	if len(n)+len(unique) > MaxUnique {
		return dst, ErrUniqueTooLong
	}
	dst = append(dst, n...)
	return append(dst, unique...), nil
}

// StripFunction returns a backend function name as the tenant sees it;
// ok is false for a function outside the namespace, which the tenant must
// not see at all (admin listings drop it).
func (n Namespace) StripFunction(function []byte) (name []byte, ok bool) {
	if n == "" {
		return function, true
	}
	if !bytes.HasPrefix(function, []byte(n)) {
		return nil, false
	}
	return function[len(n):], true
}

// StripUnique returns a backend unique ID as the tenant sees it. A unique
// without the prefix (empty, "-") comes back unchanged.
func (n Namespace) StripUnique(unique []byte) []byte {
	if n == "" {
		return unique
	}
	if rest, ok := bytes.CutPrefix(unique, []byte(n)); ok {
		return rest
	}
	return unique
}
