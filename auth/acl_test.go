package auth

import (
	"fmt"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "anything", true},
		{"img.*", "img.resize", true},
		{"img.*", "img.", true},
		{"img.*", "img", false},
		{"img.?", "img.x", true},
		{"img.?", "img.xy", false},
		{"*.resize", "img.resize", true},
		{"*.resize", "img.resize.big", false},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"a*b?c", "abbxc", true},
		{"??", "ab", true},
		{"??", "a", false},
		{"a**", "a", true},
		{"*a*a*a*a*a*b", strings.Repeat("a", 100), false}, // stays linear
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func aclUsers() ([]UserConfig, []GroupConfig) {
	users := []UserConfig{
		{
			Name:   "alice",
			Groups: []string{"imaging"},
			Allow:  Rules{Submit: []string{"img.*"}, Work: []string{"img.resize"}, Admin: []string{"status", "workers"}},
			Deny:   Rules{Submit: []string{"img.internal.*"}},
		},
		{Name: "empty"},
		{Name: "root", Superuser: true, Deny: Rules{Admin: []string{"shutdown"}}},
		{Name: "globber", Allow: Rules{Submit: []string{"report.??.*", "exact"}}},
		{Name: "member", Groups: []string{"imaging", "blocked"}},
	}
	groups := []GroupConfig{
		{Name: "imaging", Allow: Rules{Work: []string{"img.*"}}},
		{Name: "blocked", Deny: Rules{Work: []string{"img.secret"}}},
	}
	return users, groups
}

func TestACL(t *testing.T) {
	users, groups := aclUsers()
	us, err := NewUsers(users, groups)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user     string
		verb     Verb
		name     string
		allowed  bool
		ruleHint string
	}{
		{"alice", Submit, "img.resize", true, `user alice allow submit "img.*"`},
		{"alice", Submit, "img.internal.keys", false, `user alice deny submit "img.internal.*"`},
		{"alice", Submit, "video.encode", false, RuleDefaultDeny},
		{"alice", Work, "img.resize", true, `user alice allow work "img.resize"`},
		{"alice", Work, "img.crop", true, `group imaging allow work "img.*"`},
		{"alice", Admin, "status", true, `user alice allow admin "status"`},
		{"alice", Admin, "show jobs", false, RuleDefaultDeny},
		{"empty", Submit, "anything", false, RuleDefaultDeny},
		{"empty", Work, "", false, RuleDefaultDeny},
		{"root", Submit, "anything", true, RuleSuperuser},
		{"root", Admin, "shutdown", false, `user root deny admin "shutdown"`},
		{"globber", Submit, "report.de.daily", true, `user globber allow submit "report.??.*"`},
		{"globber", Submit, "report.deu.daily", false, RuleDefaultDeny},
		{"globber", Submit, "exact", true, `"exact"`},
		{"globber", Submit, "exactly", false, RuleDefaultDeny},
		{"member", Work, "img.crop", true, `group imaging allow work "img.*"`},
		{"member", Work, "img.secret", false, `group blocked deny work "img.secret"`},
		{"member", Submit, "img.crop", false, RuleDefaultDeny},
	}
	for _, tt := range tests {
		u, _ := us.Lookup(tt.user)
		d := u.ACL.Check(tt.verb, tt.name)
		if d.Allowed != tt.allowed || !strings.Contains(d.Rule, tt.ruleHint) {
			t.Errorf("%s %s %q = %+v, want allowed=%v rule containing %q", tt.user, tt.verb, tt.name, d, tt.allowed, tt.ruleHint)
		}
		p := NewPermissions(u)
		for i := 0; i < 2; i++ { // miss, then hit
			if pd := p.Check(tt.verb, []byte(tt.name)); pd != d {
				t.Errorf("cached %s %s %q = %+v, want %+v", tt.user, tt.verb, tt.name, pd, d)
			}
		}
		if pd := p.CheckString(tt.verb, tt.name); pd != d {
			t.Errorf("CheckString differs")
		}
	}
}

func TestPermissionsReset(t *testing.T) {
	users, groups := aclUsers()
	us, _ := NewUsers(users, groups)
	alice, _ := us.Lookup("alice")
	p := NewPermissions(alice)
	if !p.Check(Submit, []byte("img.resize")).Allowed {
		t.Fatal("not allowed before reload")
	}
	users[0].Deny.Submit = append(users[0].Deny.Submit, "img.resize")
	us2, _ := NewUsers(users, groups)
	alice2, _ := us2.Lookup("alice")
	p.Reset(alice2)
	if p.Check(Submit, []byte("img.resize")).Allowed {
		t.Fatal("cached decision survived a reload")
	}
	p.Reset(nil)
	if p.Check(Submit, []byte("img.crop")).Allowed {
		t.Fatal("nobody may do anything")
	}
	if NewPermissions(alice).Check(numVerbs, []byte("x")).Allowed {
		t.Fatal("unknown verb allowed")
	}
}

func TestPermissionsCacheBounded(t *testing.T) {
	users, groups := aclUsers()
	us, _ := NewUsers(users, groups)
	alice, _ := us.Lookup("alice")
	p := NewPermissions(alice)
	for i := 0; i < 3*maxCachedDecisions; i++ {
		p.Check(Submit, []byte(fmt.Sprintf("img.%d", i)))
	}
	if n := len(p.cache[Submit]); n > maxCachedDecisions {
		t.Fatalf("cache grew to %d", n)
	}
}

func TestACLConfigErrors(t *testing.T) {
	for _, r := range []Rules{{Submit: []string{""}}, {Work: []string{"a\x00b"}}} {
		if _, err := NewUsers([]UserConfig{{Name: "u", Allow: r}}, nil); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}

func TestAdminCommand(t *testing.T) {
	tests := map[string]string{
		"status":                "status",
		"STATUS":                "status",
		"show jobs":             "show jobs",
		"Show Unique Jobs":      "show unique jobs",
		"show":                  "show",
		"cancel job H:x:1":      "cancel job",
		"create function f":     "create function",
		"drop function f":       "drop function",
		"maxqueue f 10":         "maxqueue",
		"workers":               "workers",
		"":                      "",
		"show something else x": "show",
	}
	for line, want := range tests {
		var toks [][]byte
		for _, f := range strings.Fields(line) {
			toks = append(toks, []byte(f))
		}
		if got := AdminCommand(toks); got != want {
			t.Errorf("AdminCommand(%q) = %q, want %q", line, got, want)
		}
	}
}

// bigACLUser has 1,000 rules in a realistic mix: exact names, prefixes and
// globs, allow and deny, none of which matches the benchmarked function
// until the last glob, the worst case for an uncached check.
func bigACLUser(b testing.TB) *User {
	var allow, deny Rules
	for i := 0; i < 400; i++ {
		allow.Submit = append(allow.Submit, fmt.Sprintf("svc%d.exact", i))
	}
	for i := 0; i < 300; i++ {
		allow.Submit = append(allow.Submit, fmt.Sprintf("svc%d.*", i))
	}
	for i := 0; i < 200; i++ {
		allow.Submit = append(allow.Submit, fmt.Sprintf("svc%d.*.v?", i))
	}
	for i := 0; i < 99; i++ {
		deny.Submit = append(deny.Submit, fmt.Sprintf("svc%d.internal.*", i))
	}
	allow.Submit = append(allow.Submit, "bench.*.f?")
	us, err := NewUsers([]UserConfig{{Name: "big", Allow: allow, Deny: deny}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	u, _ := us.Lookup("big")
	if n := u.ACL.Rules(); n != 1000 {
		b.Fatalf("%d rules", n)
	}
	return u
}

// BenchmarkACLCheck compares a check of a 1,000-rule ACL with and without
// the session cache; the proxy pays the cached figure per submitted job.
func BenchmarkACLCheck(b *testing.B) {
	u := bigACLUser(b)
	name := []byte("bench.load.f1")
	if !u.ACL.Check(Submit, string(name)).Allowed {
		b.Fatal("benchmark name not allowed")
	}
	b.Run("uncached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !u.ACL.Check(Submit, string(name)).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		p := NewPermissions(u)
		b.ReportAllocs()
		for b.Loop() {
			if !p.Check(Submit, name).Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("cached-8-functions", func(b *testing.B) {
		p := NewPermissions(u)
		names := make([][]byte, 8)
		for i := range names {
			names[i] = []byte(fmt.Sprintf("bench.load.f%d", i))
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p.Check(Submit, names[i&7])
			i++
		}
	})
}
