package auth

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/xdg-go/stringprep"
)

// UserConfig is one [[user]] table as the config package reads it.
type UserConfig struct {
	Name string
	// Password is a SCRAM-SHA-256 verifier in PostgreSQL's form, never a
	// clear-text password; empty for a user who authenticates only with a
	// certificate (or as the anonymous user).
	Password string
	// Certificates are the verified client certificate identities that
	// authenticate as this user: "CN=<subject common name>",
	// "DNS=<DNS SAN>" or "URI=<URI SAN>" (a SPIFFE ID, say).
	Certificates []string
	Groups       []string
	// Superuser allows every verb on every name that no deny rule names.
	// It is never implied: it must be set.
	Superuser bool
	// Namespace is "{user}." or a fixed prefix; empty inherits the first
	// of Groups that sets one.
	Namespace string
	// MaxConnections caps the user's concurrent connections; 0 is no cap.
	MaxConnections int
	// MaxPayload caps a job's data in bytes; 0 is no cap.
	MaxPayload int64
	// Disabled refuses every authentication as this user and lets the
	// proxy close the user's live sessions on reload.
	Disabled bool
	Allow    Rules
	Deny     Rules
}

// GroupConfig is one [[group]] table.
type GroupConfig struct {
	Name string
	// Namespace applies to members without their own; "{user}" and
	// "{group}" are expanded.
	Namespace string
	Allow     Rules
	Deny      Rules
}

// User is an authenticated identity with everything the proxy enforces for
// it. It is immutable: a reload makes new Users.
type User struct {
	Name           string
	Groups         []string
	Superuser      bool
	Namespace      Namespace
	MaxConnections int
	MaxPayload     int64
	Disabled       bool
	Certificates   []string
	ACL            *ACL

	verifier *Verifier // nil when the user has no password
}

// HasPassword reports whether the user can authenticate with PLAIN or SCRAM.
func (u *User) HasPassword() bool { return u.verifier != nil }

// Users is an immutable, validated set of users. NewUsers checks the whole
// set before returning, so a reload either gets a complete new set or an
// error and keeps the old one.
type Users struct {
	byName map[string]*User
	byCert map[string]*User
	// fakeIterations and fakeSaltSize are the most common parameters among
	// the real verifiers, used for the made-up credentials of an unknown
	// user so that a SCRAM server-first-message does not tell them apart.
	fakeIterations int
	fakeSaltSize   int
}

// NewUsers validates and compiles users and groups. Every problem found is
// reported, each naming its user or group.
func NewUsers(users []UserConfig, groups []GroupConfig) (*Users, error) {
	var errs []error
	groupByName := make(map[string]*GroupConfig, len(groups))
	for i := range groups {
		g := &groups[i]
		if err := validName(g.Name); err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w", g.Name, err))
			continue
		}
		if _, dup := groupByName[g.Name]; dup {
			errs = append(errs, fmt.Errorf("group %q: defined twice", g.Name))
			continue
		}
		groupByName[g.Name] = g
	}
	us := &Users{byName: make(map[string]*User, len(users)), byCert: make(map[string]*User)}
	type params struct{ iter, salt int }
	counts := map[params]int{}
	for i := range users {
		uc := &users[i]
		u, err := compileUser(uc, groupByName)
		if err != nil {
			errs = append(errs, fmt.Errorf("user %q: %w", uc.Name, err))
			continue
		}
		if _, dup := us.byName[u.Name]; dup {
			errs = append(errs, fmt.Errorf("user %q: defined twice", u.Name))
			continue
		}
		us.byName[u.Name] = u
		for _, c := range u.Certificates {
			if other, dup := us.byCert[c]; dup {
				errs = append(errs, fmt.Errorf("user %q: certificate identity %q already maps to user %q", u.Name, c, other.Name))
				continue
			}
			us.byCert[c] = u
		}
		if u.verifier != nil {
			counts[params{u.verifier.Iterations, len(u.verifier.Salt)}]++
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	us.fakeIterations, us.fakeSaltSize = DefaultIterations, saltSize
	best := 0
	for p, n := range counts {
		if n > best || (n == best && p.iter > us.fakeIterations) {
			best, us.fakeIterations, us.fakeSaltSize = n, p.iter, p.salt
		}
	}
	return us, nil
}

func compileUser(uc *UserConfig, groups map[string]*GroupConfig) (*User, error) {
	if err := validName(uc.Name); err != nil {
		return nil, err
	}
	u := &User{
		Name:           uc.Name,
		Groups:         append([]string(nil), uc.Groups...),
		Superuser:      uc.Superuser,
		MaxConnections: uc.MaxConnections,
		MaxPayload:     uc.MaxPayload,
		Disabled:       uc.Disabled,
	}
	if uc.MaxConnections < 0 || uc.MaxPayload < 0 {
		return nil, errors.New("max_connections and max_payload must not be negative")
	}
	if uc.Password != "" {
		v, err := ParseVerifier(uc.Password)
		if err != nil {
			return nil, fmt.Errorf("password: %w", err)
		}
		u.verifier = &v
	}
	for _, c := range uc.Certificates {
		id, err := normalizeCertIdentity(c)
		if err != nil {
			return nil, err
		}
		u.Certificates = append(u.Certificates, id)
	}
	sources := []aclSource{{owner: "user " + uc.Name, allow: uc.Allow, deny: uc.Deny}}
	ns, err := resolveNamespace(uc.Namespace, uc.Name, "")
	if err != nil {
		return nil, err
	}
	nsSet := uc.Namespace != ""
	for _, gname := range uc.Groups {
		g, ok := groups[gname]
		if !ok {
			return nil, fmt.Errorf("unknown group %q", gname)
		}
		sources = append(sources, aclSource{owner: "group " + g.Name, allow: g.Allow, deny: g.Deny})
		if !nsSet && g.Namespace != "" {
			if ns, err = resolveNamespace(g.Namespace, uc.Name, g.Name); err != nil {
				return nil, fmt.Errorf("group %q: %w", g.Name, err)
			}
			nsSet = true
		}
	}
	u.Namespace = ns
	if u.ACL, err = compileACL(uc.Superuser, uc.Name, sources); err != nil {
		return nil, err
	}
	return u, nil
}

// validName accepts user and group names that can travel in a SASL
// exchange and an audit line unharmed: valid UTF-8, no control characters
// (NUL would cut a PLAIN message), not too long.
func validName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > 255:
		return errors.New("name longer than 255 bytes")
	case !utf8.ValidString(name):
		return errors.New("name is not valid UTF-8")
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }):
		return errors.New("name contains a space or control character")
	}
	// SCRAM clients SASLprep the name they send (RFC 5802 section 5.1);
	// a configured name that SASLprep would change could log in with
	// PLAIN but never with SCRAM.
	if p, err := stringprep.SASLprep.Prepare(name); err != nil || p != name {
		return errors.New("name is not in SASLprep (RFC 4013) normal form")
	}
	return nil
}

// normalizeCertIdentity checks a "KIND=value" certificate identity and
// upper-cases its kind.
func normalizeCertIdentity(s string) (string, error) {
	kind, value, ok := strings.Cut(s, "=")
	if !ok || value == "" {
		return "", fmt.Errorf("certificate identity %q: want CN=..., DNS=... or URI=...", s)
	}
	kind = strings.ToUpper(strings.TrimSpace(kind))
	switch kind {
	case "CN", "DNS", "URI":
	default:
		return "", fmt.Errorf("certificate identity %q: kind %q is not CN, DNS or URI", s, kind)
	}
	return kind + "=" + value, nil
}

// Lookup returns the user with this name.
func (us *Users) Lookup(name string) (*User, bool) {
	if us == nil {
		return nil, false
	}
	u, ok := us.byName[name]
	return u, ok
}

// Len is the number of users.
func (us *Users) Len() int {
	if us == nil {
		return 0
	}
	return len(us.byName)
}

// lookupCert returns the user a certificate identity maps to.
func (us *Users) lookupCert(id string) (*User, bool) {
	if us == nil {
		return nil, false
	}
	u, ok := us.byCert[id]
	return u, ok
}

// UserStore holds the current Users behind an atomic pointer: sessions
// read it without locks while a reload swaps in a whole new set.
type UserStore struct {
	p atomic.Pointer[Users]
}

// NewUserStore returns a store holding us.
func NewUserStore(us *Users) *UserStore {
	s := &UserStore{}
	s.p.Store(us)
	return s
}

// Users returns the current set.
func (s *UserStore) Users() *Users { return s.p.Load() }

// Swap installs a new set and returns the old one. A nil set is refused,
// so a failed reload can never leave the proxy without users.
func (s *UserStore) Swap(us *Users) *Users {
	if us == nil {
		return s.p.Load()
	}
	return s.p.Swap(us)
}

// Recheck returns the current version of a live session's user after a
// reload. ok is false when the user was removed or disabled: the proxy then
// closes the session. Otherwise the proxy resets the session's Permissions
// to the returned user, so changed ACLs apply from the next packet.
func (us *Users) Recheck(u *User) (*User, bool) {
	if u == nil {
		return nil, false
	}
	cur, ok := us.Lookup(u.Name)
	if !ok || cur.Disabled {
		return nil, false
	}
	return cur, true
}

// Connections counts each user's live connections to enforce
// max_connections. It is safe for concurrent use.
type Connections struct {
	mu sync.Mutex
	n  map[string]int
}

// NewConnections returns an empty count.
func NewConnections() *Connections { return &Connections{n: make(map[string]int)} }

// Acquire takes a connection slot for u. ok is false when u already has
// MaxConnections connections (0 is no cap). release gives the slot back;
// calling it more than once is harmless.
func (c *Connections) Acquire(u *User) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u.MaxConnections > 0 && c.n[u.Name] >= u.MaxConnections {
		return func() {}, false
	}
	c.n[u.Name]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.n[u.Name]--; c.n[u.Name] <= 0 {
				delete(c.n, u.Name)
			}
		})
	}, true
}

// Count is u's number of live connections.
func (c *Connections) Count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}
