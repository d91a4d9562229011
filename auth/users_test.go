package auth

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestNewUsersErrors(t *testing.T) {
	good := verifierFor(t, "pw")
	tests := []struct {
		name   string
		users  []UserConfig
		groups []GroupConfig
		want   string
	}{
		{"empty name", []UserConfig{{Name: ""}}, nil, "empty name"},
		{"space in name", []UserConfig{{Name: "a b"}}, nil, "space"},
		{"NUL in name", []UserConfig{{Name: "a\x00b"}}, nil, "control"},
		{"name SASLprep changes", []UserConfig{{Name: "\u2168"}}, nil, "SASLprep"}, // ROMAN NUMERAL NINE maps to "IX"
		{"duplicate user", []UserConfig{{Name: "a"}, {Name: "a"}}, nil, "defined twice"},
		{"clear-text password", []UserConfig{{Name: "a", Password: "s3cret"}}, nil, "SCRAM-SHA-256 verifier"},
		{"unknown group", []UserConfig{{Name: "a", Groups: []string{"g"}}}, nil, `unknown group "g"`},
		{"duplicate group", nil, []GroupConfig{{Name: "g"}, {Name: "g"}}, "defined twice"},
		{"bad certificate kind", []UserConfig{{Name: "a", Certificates: []string{"EMAIL=a@b"}}}, nil, "not CN, DNS or URI"},
		{"certificate without kind", []UserConfig{{Name: "a", Certificates: []string{"alice"}}}, nil, "want CN="},
		{"certificate for two users", []UserConfig{{Name: "a", Certificates: []string{"CN=x"}}, {Name: "b", Certificates: []string{"cn=x"}}}, nil, "already maps"},
		{"negative limit", []UserConfig{{Name: "a", MaxConnections: -1}}, nil, "negative"},
		{"long namespace", []UserConfig{{Name: "a", Namespace: strings.Repeat("n", 40)}}, nil, "namespace"},
		{"namespace with space", []UserConfig{{Name: "a", Namespace: "a b."}}, nil, "namespace"},
		{"bad pattern", []UserConfig{{Name: "a", Deny: Rules{Admin: []string{""}}}}, nil, "empty pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			us, err := NewUsers(tt.users, tt.groups)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, %v; want an error containing %q", us, err, tt.want)
			}
		})
	}
	// Every problem is reported, not just the first.
	_, err := NewUsers([]UserConfig{{Name: "a", Password: "x"}, {Name: "b", Password: good, Groups: []string{"nope"}}}, nil)
	if err == nil || !strings.Contains(err.Error(), `user "a"`) || !strings.Contains(err.Error(), `user "b"`) {
		t.Fatalf("got %v", err)
	}
}

func TestUserFields(t *testing.T) {
	us, err := NewUsers([]UserConfig{
		{Name: "alice", Password: verifierFor(t, "pw"), Namespace: "{user}.", MaxConnections: 5, MaxPayload: 1 << 20, Groups: []string{"g"}},
		{Name: "bob", Groups: []string{"plain", "g"}},
		{Name: "carol", Groups: []string{"fixed"}, Certificates: []string{"uri=spiffe://x/carol"}},
	}, []GroupConfig{{Name: "g", Namespace: "{group}-{user}."}, {Name: "plain"}, {Name: "fixed", Namespace: "shared."}})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := us.Lookup("alice")
	bob, _ := us.Lookup("bob")
	carol, _ := us.Lookup("carol")
	if alice.Namespace != "alice." || bob.Namespace != "g-bob." || carol.Namespace != "shared." {
		t.Fatalf("namespaces %q %q %q", alice.Namespace, bob.Namespace, carol.Namespace)
	}
	if !alice.HasPassword() || bob.HasPassword() || alice.MaxConnections != 5 || alice.MaxPayload != 1<<20 {
		t.Fatalf("alice %+v", alice)
	}
	if u, ok := us.lookupCert("URI=spiffe://x/carol"); !ok || u != carol {
		t.Fatal("certificate kind not normalized")
	}
	if _, ok := us.Lookup("mallory"); ok || us.Len() != 3 {
		t.Fatal("Lookup")
	}
}

// TestFakeParameters: an unknown user is offered the iteration count and
// salt size most real users have.
func TestFakeParameters(t *testing.T) {
	v1, _ := NewVerifier("a", 8192)
	v2, _ := NewVerifier("b", 8192)
	v3, _ := NewVerifier("c", 4096)
	us, err := NewUsers([]UserConfig{{Name: "a", Password: v1.String()}, {Name: "b", Password: v2.String()}, {Name: "c", Password: v3.String()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &Authenticator{secret: []byte("s")}
	fake := a.fakeVerifier(us, "mallory")
	if fake.Iterations != 8192 || len(fake.Salt) != 16 {
		t.Fatalf("fake %+v", fake)
	}
	if again := a.fakeVerifier(us, "mallory"); !bytes.Equal(again.Salt, fake.Salt) {
		t.Fatal("fake salt not stable")
	}
}

func TestUserStoreSwap(t *testing.T) {
	us1, _ := NewUsers([]UserConfig{{Name: "a"}}, nil)
	s := NewUserStore(us1)
	us2, _ := NewUsers([]UserConfig{{Name: "b"}}, nil)
	if old := s.Swap(us2); old != us1 {
		t.Fatal("Swap returned the wrong old set")
	}
	if _, ok := s.Users().Lookup("b"); !ok {
		t.Fatal("new set not installed")
	}
	// A failed reload yields nil and an error; swapping in nil is refused.
	bad, err := NewUsers([]UserConfig{{Name: "c", Password: "x"}}, nil)
	if err == nil || bad != nil {
		t.Fatal("bad set built")
	}
	s.Swap(bad)
	if _, ok := s.Users().Lookup("b"); !ok {
		t.Fatal("nil swap lost the users")
	}
	if errors.Is(err, ErrBadVerifier) == false {
		t.Fatalf("error %v does not wrap ErrBadVerifier", err)
	}
}

func TestNamespace(t *testing.T) {
	ns := Namespace("alice.")
	if got := string(ns.AppendFunction(nil, []byte("resize"))); got != "alice.resize" {
		t.Fatalf("function %q", got)
	}
	tests := []struct {
		in, want string
		err      bool
	}{
		{"", "", false},
		{"-", "-", false},
		{"job-1", "alice.job-1", false},
		{strings.Repeat("u", MaxUnique-6), "alice." + strings.Repeat("u", MaxUnique-6), false},
		{strings.Repeat("u", MaxUnique-5), "", true},
	}
	for _, tt := range tests {
		got, err := ns.AppendUnique(nil, []byte(tt.in))
		if (err != nil) != tt.err || (!tt.err && string(got) != tt.want) {
			t.Errorf("AppendUnique(%q) = %q, %v", tt.in, got, err)
		}
		if !tt.err {
			if back := ns.StripUnique(got); string(back) != tt.in {
				t.Errorf("StripUnique(%q) = %q, want %q", got, back, tt.in)
			}
		}
	}
	if name, ok := ns.StripFunction([]byte("alice.resize")); !ok || string(name) != "resize" {
		t.Fatalf("StripFunction %q %v", name, ok)
	}
	if _, ok := ns.StripFunction([]byte("bob.resize")); ok {
		t.Fatal("another tenant's function visible")
	}
	var none Namespace
	if name, ok := none.StripFunction([]byte("x")); !ok || string(name) != "x" {
		t.Fatal("empty namespace")
	}
	if u, _ := none.AppendUnique(nil, []byte(strings.Repeat("u", 100))); len(u) != 100 {
		t.Fatal("empty namespace changed a unique")
	}
}

func TestRecheckAndConnections(t *testing.T) {
	users := []UserConfig{{Name: "a", MaxConnections: 2}, {Name: "b"}, {Name: "c"}}
	us1, _ := NewUsers(users, nil)
	a, _ := us1.Lookup("a")
	b, _ := us1.Lookup("b")
	c, _ := us1.Lookup("c")
	users[1].Disabled = true
	us2, _ := NewUsers(users[:2], nil)
	if a2, ok := us2.Recheck(a); !ok || a2 == a || a2.Name != "a" {
		t.Fatal("a should survive the reload as a new value")
	}
	if _, ok := us2.Recheck(b); ok {
		t.Fatal("disabled user survived")
	}
	if _, ok := us2.Recheck(c); ok {
		t.Fatal("removed user survived")
	}

	conns := NewConnections()
	r1, ok1 := conns.Acquire(a)
	_, ok2 := conns.Acquire(a)
	_, ok3 := conns.Acquire(a)
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("acquire: %v %v %v", ok1, ok2, ok3)
	}
	r1()
	r1() // a second release does not free another slot
	if conns.Count("a") != 1 {
		t.Fatalf("count %d", conns.Count("a"))
	}
	if _, ok := conns.Acquire(a); !ok {
		t.Fatal("released slot not reusable")
	}
	for i := 0; i < 100; i++ {
		if _, ok := conns.Acquire(b); !ok {
			t.Fatal("uncapped user refused")
		}
	}
}

func TestPermissionsAllowAudits(t *testing.T) {
	var buf bytes.Buffer
	us, _ := NewUsers([]UserConfig{{Name: "a", Allow: Rules{Submit: []string{"ok"}, Work: []string{"w"}}}}, nil)
	a, _ := us.Lookup("a")
	p := NewPermissions(a).WithAudit(NewAuditor(slog.New(slog.NewJSONHandler(&buf, nil)), AuditOptions{}), "192.0.2.1:5")
	if !p.Allow(Submit, []byte("ok")) || p.Allow(Submit, []byte("nope")) {
		t.Fatal("Allow")
	}
	if s := buf.String(); strings.Count(s, "acl.deny") != 1 || !strings.Contains(s, `"function":"nope"`) || !strings.Contains(s, `"source":"192.0.2.1:5"`) {
		t.Fatalf("audit %s", s)
	}
	if !p.Visible([]byte("ok")) || !p.Visible([]byte("w")) || p.Visible([]byte("x")) {
		t.Fatal("Visible")
	}
}
