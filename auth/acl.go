package auth

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
)

// Verb is what a user wants to do with a name.
type Verb uint8

const (
	// Submit covers every SUBMIT_JOB* packet's function and, for a reduce
	// job, its reducer: the reducer runs as a job of that function, so
	// naming it must need the same right as submitting to it.
	Submit Verb = iota
	// Work covers CAN_DO and CAN_DO_TIMEOUT.
	Work
	// Admin covers each admin text command, by name (see AdminCommand).
	Admin
	numVerbs
)

func (v Verb) String() string {
	switch v {
	case Submit:
		return "submit"
	case Work:
		return "work"
	case Admin:
		return "admin"
	}
	return "verb(" + strconv.Itoa(int(v)) + ")"
}

// Rules lists patterns per verb, as in a user's or group's [allow] or
// [deny] table. A pattern is an exact name, a prefix ending in "*", or a
// glob where "*" matches any run of bytes and "?" exactly one byte.
type Rules struct {
	Submit []string
	Work   []string
	Admin  []string
}

func (r Rules) forVerb(v Verb) []string {
	switch v {
	case Submit:
		return r.Submit
	case Work:
		return r.Work
	case Admin:
		return r.Admin
	}
	return nil
}

// Decision is the answer to one check, with the rule that produced it so
// that an audit line can say why.
type Decision struct {
	Allowed bool
	Rule    string
}

// Rule labels that are not a configured pattern.
const (
	RuleDefaultDeny = "default deny"
	RuleSuperuser   = "superuser"
)

// ACL is a user's compiled permissions: its own rules and those of its
// groups. It is immutable, so sessions share it without locks; a reload
// builds a new one.
//
// Evaluation follows nats-server and ghostunnel: a matching deny wins over
// everything, superuser then allows what no deny names, then any matching
// allow; anything else is denied, so an empty allow list admits nothing.
type ACL struct {
	superuser string // rule label when the user is a superuser
	allow     [numVerbs]ruleSet
	deny      [numVerbs]ruleSet
}

// ruleSet matches one verb's patterns from one side (allow or deny). Exact
// names go into a map so that a thousand of them cost one lookup; prefixes
// and globs are scanned.
type ruleSet struct {
	exact    map[string]string // name -> rule label
	prefixes []patternRule
	globs    []patternRule
}

type patternRule struct {
	pattern string // for prefixes, without the trailing '*'
	label   string
}

// aclSource is one owner's rules, a user's or a group's.
type aclSource struct {
	owner       string // "user alice" or "group imaging"
	allow, deny Rules
}

func compileACL(superuser bool, userName string, sources []aclSource) (*ACL, error) {
	a := &ACL{}
	if superuser {
		a.superuser = RuleSuperuser + " (user " + userName + ")"
	}
	for _, src := range sources {
		for v := Verb(0); v < numVerbs; v++ {
			if err := a.allow[v].add(src.owner, "allow", v, src.allow.forVerb(v)); err != nil {
				return nil, err
			}
			if err := a.deny[v].add(src.owner, "deny", v, src.deny.forVerb(v)); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

func (s *ruleSet) add(owner, side string, v Verb, patterns []string) error {
	for _, p := range patterns {
		if err := validPattern(p); err != nil {
			return fmt.Errorf("%s: %s %s pattern %q: %w", owner, side, v, p, err)
		}
		label := owner + " " + side + " " + v.String() + " " + strconv.Quote(p)
		switch {
		case !strings.ContainsAny(p, "*?"):
			if s.exact == nil {
				s.exact = make(map[string]string)
			}
			if _, dup := s.exact[p]; !dup {
				s.exact[p] = label
			}
		case strings.IndexAny(p, "*?") == len(p)-1 && p[len(p)-1] == '*':
			s.prefixes = append(s.prefixes, patternRule{pattern: p[:len(p)-1], label: label})
		default:
			s.globs = append(s.globs, patternRule{pattern: p, label: label})
		}
	}
	return nil
}

func validPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("NUL in pattern")
	}
	return nil
}

// match returns the label of the first rule that matches name.
func (s *ruleSet) match(name string) (string, bool) {
	if label, ok := s.exact[name]; ok {
		return label, true
	}
	for i := range s.prefixes {
		if strings.HasPrefix(name, s.prefixes[i].pattern) {
			return s.prefixes[i].label, true
		}
	}
	for i := range s.globs {
		if globMatch(s.globs[i].pattern, name) {
			return s.globs[i].label, true
		}
	}
	return "", false
}

// Check decides whether verb may be applied to name, the name as the user
// sees it (before any namespace is added).
func (a *ACL) Check(v Verb, name string) Decision {
	if a == nil || v >= numVerbs {
		return Decision{Rule: RuleDefaultDeny}
	}
	if label, ok := a.deny[v].match(name); ok {
		return Decision{Rule: label}
	}
	if a.superuser != "" {
		return Decision{Allowed: true, Rule: a.superuser}
	}
	if label, ok := a.allow[v].match(name); ok {
		return Decision{Allowed: true, Rule: label}
	}
	return Decision{Rule: RuleDefaultDeny}
}

// Rules returns how many patterns the ACL holds, for tests and logs.
func (a *ACL) Rules() int {
	n := 0
	for v := Verb(0); v < numVerbs; v++ {
		for _, s := range []*ruleSet{&a.allow[v], &a.deny[v]} {
			n += len(s.exact) + len(s.prefixes) + len(s.globs)
		}
	}
	return n
}

// globMatch matches name against a pattern in which '*' is any run of bytes
// and '?' any single byte. It is the classic linear backtracking matcher
// that remembers only the last star, so a hostile pattern from a config
// file cannot make it exponential.
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// maxCachedDecisions bounds one session's cache per verb. A client that
// submits to endless distinct function names must not grow memory without
// limit; when the map fills it starts over.
const maxCachedDecisions = 4096

// Permissions is one session's view of its user's ACL with a cache of
// decisions, so that a user with a thousand rules pays for evaluating them
// once per function name rather than once per packet (nats-server keeps the
// same kind of per-client cache). It is safe for concurrent use; a session
// normally asks from one goroutine, so the lock is uncontended.
type Permissions struct {
	mu     sync.Mutex
	acl    *ACL
	cache  [numVerbs]map[string]Decision
	user   string
	audit  *Auditor
	source string
}

// NewPermissions returns the permissions of u, or of nobody for a nil user.
func NewPermissions(u *User) *Permissions {
	p := &Permissions{}
	p.Reset(u)
	return p
}

// WithAudit makes Allow record every denial, naming the session's source
// address, and returns p.
func (p *Permissions) WithAudit(a *Auditor, source string) *Permissions {
	p.mu.Lock()
	p.audit, p.source = a, source
	p.mu.Unlock()
	return p
}

// Reset switches to u's current ACL and forgets every cached decision; the
// proxy calls it after a reload so that changed rules apply from the next
// packet on.
func (p *Permissions) Reset(u *User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acl, p.user = nil, ""
	if u != nil {
		p.acl, p.user = u.ACL, u.Name
	}
	for v := range p.cache {
		p.cache[v] = nil
	}
}

// Check is ACL.Check through the cache. The lookup with string(name) does
// not allocate; only a miss stores a copy of the name.
func (p *Permissions) Check(v Verb, name []byte) Decision {
	if v >= numVerbs {
		return Decision{Rule: RuleDefaultDeny}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.cache[v]
	if d, ok := m[string(name)]; ok {
		return d
	}
	key := string(name)
	d := p.acl.Check(v, key)
	if m == nil || len(m) >= maxCachedDecisions {
		m = make(map[string]Decision, 16)
		p.cache[v] = m
	}
	m[key] = d
	return d
}

// CheckString is Check for a name already held as a string.
func (p *Permissions) CheckString(v Verb, name string) Decision {
	return p.Check(v, []byte(name))
}

// Allow is Check reduced to its answer, auditing a denial when WithAudit
// was set: the shape of the proxy's access interface.
func (p *Permissions) Allow(v Verb, name []byte) bool {
	d := p.Check(v, name)
	if !d.Allowed {
		p.mu.Lock()
		a, user, source := p.audit, p.user, p.source
		p.mu.Unlock()
		a.Denied(user, source, v, string(name), d)
	}
	return d.Allowed
}

// Visible reports whether an admin listing may show a function to this
// user: one it may submit to or work on (names as the user sees them).
func (p *Permissions) Visible(function []byte) bool {
	return p.Check(Submit, function).Allowed || p.Check(Work, function).Allowed
}

// AdminCommand is the name an admin text line is checked under: its
// command in lower case, and for the commands gearmand spells in two or
// three words ("show jobs", "show unique jobs", "cancel job", "create
// function", "drop function") those words joined by single spaces.
// Arguments are not part of the name.
func AdminCommand(tokens [][]byte) string {
	if len(tokens) == 0 {
		return ""
	}
	first := strings.ToLower(string(tokens[0]))
	word := func(i int) string {
		if i < len(tokens) {
			return strings.ToLower(string(tokens[i]))
		}
		return ""
	}
	switch first {
	case "show":
		if word(1) == "unique" && word(2) == "jobs" {
			return "show unique jobs"
		}
		if word(1) == "jobs" {
			return "show jobs"
		}
	case "cancel":
		if word(1) == "job" {
			return "cancel job"
		}
	case "create", "drop":
		if word(1) == "function" {
			return first + " function"
		}
	}
	return first
}
