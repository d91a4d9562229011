package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration file. Every field maps to one key; the
// TOML names are the contract with operators (config.toml.example documents
// each one) and never change meaning.
type Config struct {
	// DataDir holds everything gearproxy stores: bundled backends keep
	// their jobs under DataDir/<backend name>.
	DataDir string `toml:"data_dir"`
	// HandleKey, when set, keys the checksum inside every client-visible
	// job handle, so that nobody without the key can forge a handle for
	// another backend or user. Every proxy in front of the same backends
	// must use the same key for their handles to agree.
	HandleKey string `toml:"handle_key"`

	Listeners []Listener `toml:"listener"`
	Backends  []Backend  `toml:"backend"`
	Users     []User     `toml:"user"`
	Groups    []Group    `toml:"group"`
	Limits    Limits     `toml:"limits"`
	Health    Health     `toml:"health"`
	Admin     Admin      `toml:"admin"`
	Log       Log        `toml:"log"`
	Schedules []Schedule `toml:"schedule"`

	// DrainTimeout bounds a graceful shutdown.
	DrainTimeout Duration `toml:"drain_timeout"`

	// File is the path the configuration was read from, "" for defaults.
	File string `toml:"-"`
}

// Listener is one address clients and workers connect to.
type Listener struct {
	Address string `toml:"address"`
	// User, when set, means the listener does not authenticate: every
	// connection acts as this user. Only for trusted networks (loopback).
	User string `toml:"user"`
	// SASL lists the mechanisms offered, in order of preference.
	SASL []string `toml:"sasl"`
	// AuthTimeout bounds the TLS handshake and authentication.
	AuthTimeout Duration `toml:"auth_timeout"`
	// InsecurePlain allows SASL PLAIN without TLS.
	InsecurePlain bool `toml:"insecure_plain"`
	// AnonymousUser is the user of SASL ANONYMOUS; empty disables it.
	AnonymousUser string `toml:"anonymous_user"`
	// MaxConnections caps concurrent connections on this listener; zero
	// means the global limit only.
	MaxConnections int `toml:"max_connections"`
	// MaxAuthFailures closes a connection after that many failed
	// authentications; zero means 3.
	MaxAuthFailures int `toml:"max_auth_failures"`

	TLS  *TLS  `toml:"tls"`
	ACME *ACME `toml:"acme"`
}

// TLS is a listener's certificate and client certificate policy.
type TLS struct {
	Cert       string `toml:"cert"`
	Key        string `toml:"key"`
	ClientCA   string `toml:"client_ca"`
	ClientAuth string `toml:"client_auth"` // none | request | require
	// CertMapping names the certificate fields that map a verified
	// client certificate to a user, tried in order: cn, dns, uri.
	CertMapping []string `toml:"cert_mapping"`
}

// ACME obtains a listener's certificate automatically (config/acme.go).
type ACME struct {
	Domains []string `toml:"domains"`
	Email   string   `toml:"email"`
	// CA is the ACME directory URL; empty means Let's Encrypt.
	CA string `toml:"ca"`
	// CARoot is a PEM file trusted for the CA's own HTTPS.
	CARoot string `toml:"ca_root"`
}

// Backend is one job server behind the proxy: bundled in process, or an
// existing gearmand (or standalone `gearproxy server`) at Address.
type Backend struct {
	Name    string `toml:"name"`
	Bundled bool   `toml:"bundled"`
	Address string `toml:"address"`
	// Weight scales the share of unique IDs this backend receives; zero
	// means 1.
	Weight float64 `toml:"weight"`
	// Links is the number of shared client connections to the backend
	// that all client sessions multiplex over; zero means the default.
	Links int `toml:"links"`
}

// User is one identity, with what it may do.
type User struct {
	Name           string   `toml:"name"`
	Superuser      bool     `toml:"superuser"`
	Password       string   `toml:"password"`
	Certificates   []string `toml:"certificates"`
	Groups         []string `toml:"groups"`
	Namespace      string   `toml:"namespace"`
	MaxConnections int      `toml:"max_connections"`
	MaxPayload     int      `toml:"max_payload"`
	// Disabled keeps the user in the file but lets it in nowhere; a
	// reload that disables a user closes its sessions.
	Disabled bool  `toml:"disabled"`
	Allow    Rules `toml:"allow"`
	Deny     Rules `toml:"deny"`
}

// Group gives its members rules and a namespace.
type Group struct {
	Name      string `toml:"name"`
	Namespace string `toml:"namespace"`
	Allow     Rules  `toml:"allow"`
	Deny      Rules  `toml:"deny"`
}

// Rules are ACL patterns per verb.
type Rules struct {
	Submit []string `toml:"submit"`
	Work   []string `toml:"work"`
	Admin  []string `toml:"admin"`
}

// Limits protect the proxy from its peers.
type Limits struct {
	// MaxConnections caps concurrent client and worker connections.
	MaxConnections int `toml:"max_connections"`
	// MaxPacketSize caps the declared size of one packet.
	MaxPacketSize int `toml:"max_packet_size"`
	// MaxOutput is the most unsent bytes queued to one connection; a peer
	// that does not read its replies is cut off past it.
	MaxOutput int `toml:"max_output"`
	// IdleTimeout closes a connection that sent nothing for this long and
	// has nothing in progress (zero: never).
	IdleTimeout Duration `toml:"idle_timeout"`
	// HandleCache bounds the map of job handles too long to embed.
	HandleCache int `toml:"handle_cache"`
}

// Health tunes backend health checks and reconnects.
type Health struct {
	Interval    Duration `toml:"interval"`
	Timeout     Duration `toml:"timeout"`
	DialTimeout Duration `toml:"dial_timeout"`
	MaxBackoff  Duration `toml:"max_backoff"`
}

// Admin is the HTTP listener for metrics, health and the status page.
type Admin struct {
	// Address to listen on; "" turns the listener off. Absent: the
	// default 127.0.0.1:4780.
	Address string `toml:"address"`
	// TLSCert and TLSKey, both set, serve HTTPS (reloaded on SIGHUP).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Auth guards /metrics and the status page with HTTP basic auth
	// against the [[user]] passwords; /healthz and /readyz stay open.
	Auth bool `toml:"auth"`
	// Users may log in when Auth is on; empty: superusers only.
	Users []string `toml:"users"`
	// Refresh is how often the status page reloads itself.
	Refresh Duration `toml:"refresh"`
	// MaxFunctionLabels caps the function label values of metrics;
	// later functions count as "_other".
	MaxFunctionLabels int `toml:"max_function_labels"`
}

// Log selects the log format and level.
type Log struct {
	Format string `toml:"format"` // text | json
	Level  string `toml:"level"`  // debug | info | warn | error
}

// Duration is a time.Duration written as "10s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: want e.g. \"10s\" or \"500ms\"", b)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: negative", b)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as Go prints it.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults equal to config.toml.example, the configuration `gearproxy` runs
// with when given none.
const (
	DefaultListen        = "127.0.0.1:4730"
	DefaultUser          = "local"
	DefaultDataDir       = "./data"
	DefaultMaxConns      = 100000
	DefaultMaxPacketSize = 64 << 20
	DefaultMaxOutput     = 16 << 20
	DefaultHandleCache   = 100000
	DefaultLinks         = 4
	DefaultAuthTimeout   = 10 * time.Second
	DefaultInterval      = time.Second
	DefaultTimeout       = time.Second
	DefaultDialTimeout   = 2 * time.Second
	DefaultMaxBackoff    = 5 * time.Second
	DefaultDrainTimeout  = 30 * time.Second
)

// Default returns the configuration of config.toml.example: one local
// listener whose connections act as the superuser "local", two bundled
// backends, data under ./data.
func Default() *Config {
	c := &Config{
		DataDir:   DefaultDataDir,
		Listeners: []Listener{{Address: DefaultListen, User: DefaultUser}},
		Backends:  []Backend{{Name: "shard1", Bundled: true}, {Name: "shard2", Bundled: true}},
		Users:     []User{{Name: DefaultUser, Superuser: true}},
		Admin:     Admin{Address: DefaultAdminAddress},
	}
	c.fill()
	return c
}

// fill sets every zero field that has a default.
func (c *Config) fill() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	for i := range c.Listeners {
		if c.Listeners[i].AuthTimeout.Duration == 0 {
			c.Listeners[i].AuthTimeout.Duration = DefaultAuthTimeout
		}
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		if b.Weight == 0 {
			b.Weight = 1
		}
		if b.Links == 0 {
			b.Links = DefaultLinks
		}
	}
	l := &c.Limits
	if l.MaxConnections == 0 {
		l.MaxConnections = DefaultMaxConns
	}
	if l.MaxPacketSize == 0 {
		l.MaxPacketSize = DefaultMaxPacketSize
	}
	if l.MaxOutput == 0 {
		l.MaxOutput = DefaultMaxOutput
	}
	if l.HandleCache == 0 {
		l.HandleCache = DefaultHandleCache
	}
	h := &c.Health
	if h.Interval.Duration == 0 {
		h.Interval.Duration = DefaultInterval
	}
	if h.Timeout.Duration == 0 {
		h.Timeout.Duration = DefaultTimeout
	}
	if h.DialTimeout.Duration == 0 {
		h.DialTimeout.Duration = DefaultDialTimeout
	}
	if h.MaxBackoff.Duration == 0 {
		h.MaxBackoff.Duration = DefaultMaxBackoff
	}
	if c.DrainTimeout.Duration == 0 {
		c.DrainTimeout.Duration = DefaultDrainTimeout
	}
	c.fillOps()
}

// Error is one problem in a configuration file, with the line it is on
// when known.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	name := e.File
	if name == "" {
		name = "config"
	}
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", name, e.Line, e.Msg)
	}
	return name + ": " + e.Msg
}

// Errors is every problem found in one file; Load reports them all at once
// so that an operator fixes a file in one pass.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a configuration; file names it in errors.
func Parse(file string, data []byte) (*Config, error) {
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: file, Line: pe.Position.Line, Msg: pe.Message}}
		}
		return nil, Errors{{File: file, Line: lineOf(err.Error()), Msg: stripLine(err.Error())}}
	}
	var errs Errors
	for _, e := range unknownKeys(file, data, md.Undecoded()) {
		errs = append(errs, e)
	}
	c.File = file
	c.defaultAdmin(md)
	c.fill()
	errs = append(errs, c.validate(file, data)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return &c, nil
}

var lineRe = regexp.MustCompile(`line (\d+)`)

func lineOf(msg string) int {
	m := lineRe.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n := 0
	fmt.Sscan(m[1], &n)
	return n
}

func stripLine(msg string) string {
	msg = strings.TrimPrefix(msg, "toml: ")
	if i := strings.Index(msg, "): "); i >= 0 && strings.HasPrefix(msg, "line ") {
		return msg[i+3:]
	}
	return msg
}

// unknownKeys turns keys that no field decoded into errors. The toml
// package does not export key positions, so each key is found in the text:
// the next line, after the previous hit of the same key, that sets its last
// component inside a table whose header matches the key's parents.
func unknownKeys(file string, data []byte, keys []toml.Key) Errors {
	lines := bytes.Split(data, []byte("\n"))
	after := map[string]int{}
	var errs Errors
	for _, k := range keys {
		// A table that no field takes also lists its own keys: name the
		// table once.
		parentUnknown := false
		for _, e := range errs {
			if strings.HasPrefix(k.String(), strings.TrimPrefix(e.Msg, "unknown key ")+".") {
				parentUnknown = true
			}
		}
		if parentUnknown {
			continue
		}
		ks := k.String()
		line := findKey(lines, k, after[ks])
		if line > 0 {
			after[ks] = line
		}
		errs = append(errs, &Error{File: file, Line: line, Msg: "unknown key " + ks})
	}
	return errs
}

func findKey(lines [][]byte, k toml.Key, from int) int {
	table := ""
	want := strings.Join(k[:len(k)-1], ".")
	last := k[len(k)-1]
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(string(lines[i]))
		if i < from && !strings.HasPrefix(l, "[") {
			continue
		}
		if strings.HasPrefix(l, "[") {
			h := strings.Trim(l, "[] \t")
			if j := strings.Index(h, "]"); j >= 0 {
				h = h[:j]
			}
			h = strings.Trim(h, "[] \t")
			table = h
			if i >= from && table == strings.Join(k, ".") {
				return i + 1
			}
			continue
		}
		eq := strings.IndexByte(l, '=')
		if eq < 0 {
			continue
		}
		name := strings.Trim(strings.TrimSpace(l[:eq]), `"'`)
		full := name
		if table != "" {
			full = table + "." + name
		}
		if (table == want && name == last) || full == k.String() {
			return i + 1
		}
	}
	return 0
}

var backendName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// validate checks what decoding cannot: required keys, conflicts and
// references. Lines are found the same way as for unknown keys.
func (c *Config) validate(file string, data []byte) Errors {
	lines := bytes.Split(data, []byte("\n"))
	var errs Errors
	add := func(key toml.Key, nth int, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: nthKey(lines, key, nth), Msg: fmt.Sprintf(format, args...)})
	}
	if len(c.Listeners) == 0 {
		add(nil, 0, "no [[listener]]: gearproxy needs at least one address to listen on")
	}
	users := map[string]bool{}
	for i, u := range c.Users {
		if u.Name == "" {
			add(toml.Key{"user", "name"}, i, "user %d has no name", i+1)
		}
		if users[u.Name] {
			add(toml.Key{"user", "name"}, i, "duplicate user %q", u.Name)
		}
		users[u.Name] = true
	}
	for i, l := range c.Listeners {
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			add(toml.Key{"listener", "address"}, i, "listener address %q: %v", l.Address, err)
		}
		if l.User != "" && !users[l.User] {
			add(toml.Key{"listener", "user"}, i, "listener user %q is not a [[user]]", l.User)
		}
		if l.TLS != nil {
			switch l.TLS.ClientAuth {
			case "", "none", "request", "require":
			default:
				add(toml.Key{"listener", "tls", "client_auth"}, i, "client_auth %q: want none, request or require", l.TLS.ClientAuth)
			}
		}
	}
	if len(c.Backends) == 0 {
		add(nil, 0, "no [[backend]]: gearproxy needs at least one job server")
	}
	names := map[string]bool{}
	for i, b := range c.Backends {
		switch {
		case !backendName.MatchString(b.Name):
			add(toml.Key{"backend", "name"}, i, "backend name %q: want 1-63 letters, digits, '.', '_' or '-'", b.Name)
		case names[b.Name]:
			add(toml.Key{"backend", "name"}, i, "duplicate backend name %q", b.Name)
		}
		names[b.Name] = true
		switch {
		case b.Bundled && b.Address != "":
			add(toml.Key{"backend", "address"}, i, "backend %q is bundled and has an address: choose one", b.Name)
		case !b.Bundled && b.Address == "":
			add(toml.Key{"backend", "name"}, i, "backend %q needs an address or bundled = true", b.Name)
		case b.Address != "":
			if _, _, err := net.SplitHostPort(b.Address); err != nil {
				add(toml.Key{"backend", "address"}, i, "backend %q address %q: %v", b.Name, b.Address, err)
			}
		}
		if b.Weight < 0 {
			add(toml.Key{"backend", "weight"}, i, "backend %q weight %v: must be positive", b.Name, b.Weight)
		}
		if b.Links < 0 || b.Links > 64 {
			add(toml.Key{"backend", "links"}, i, "backend %q links %d: want 1-64", b.Name, b.Links)
		}
	}
	if c.Limits.MaxPacketSize < 1024 {
		add(toml.Key{"limits", "max_packet_size"}, 0, "max_packet_size %d: at least 1024", c.Limits.MaxPacketSize)
	}
	if c.Limits.MaxOutput < 64<<10 {
		add(toml.Key{"limits", "max_output"}, 0, "max_output %d: at least 65536", c.Limits.MaxOutput)
	}
	errs = append(errs, c.validateSecurity(file, lines)...)
	errs = append(errs, c.validateOps(file, lines)...)
	return errs
}

// nthKey finds the line of the nth occurrence of key (0 when absent).
func nthKey(lines [][]byte, key toml.Key, nth int) int {
	if len(key) == 0 {
		return 0
	}
	line := 0
	for i := 0; i <= nth; i++ {
		l := findKey(lines, key, line)
		if l == 0 {
			// The key is absent in this element (a default): point
			// at the element's table header instead.
			return nthKey(lines, key[:len(key)-1], nth)
		}
		line = l
	}
	return line
}

// BackendDir is where a bundled backend keeps its data.
func (c *Config) BackendDir(b Backend) string {
	return filepath.Join(c.DataDir, b.Name)
}

// User returns the named user.
func (c *Config) User(name string) (User, bool) {
	for _, u := range c.Users {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}
