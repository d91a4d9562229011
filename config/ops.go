package config

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gearproxy/gearproxy/schedule"
)

// The operations keys of issue 7: [admin], [log], drain_timeout and
// [[schedule]]. Decoding puts them in the structs of config.go; this file
// holds their types, defaults and the checks that name a line.

// Defaults of the operations keys, equal to config.toml.example.
const (
	// DefaultAdminAddress is loopback: the status page shows every
	// function and user.
	DefaultAdminAddress   = "127.0.0.1:4780"
	DefaultAdminRefresh   = 5 * time.Second
	DefaultFunctionLabels = 1000
	DefaultLogFormat      = "text"
	DefaultLogLevel       = "info"
)

// Schedule is a recurring background job (package schedule): at each
// firing of Cron every gearproxy instance with this file submits the job
// with the same unique, so the backend coalesces them into one.
type Schedule struct {
	// Name identifies the schedule in the job's unique; the same on
	// every instance, at most 45 bytes, no white space.
	Name string `toml:"name"`
	// Cron has 5 fields (minute hour day-of-month month day-of-week) or
	// 6 with seconds first, or @hourly, @daily, @weekly, @monthly,
	// @yearly.
	Cron     string `toml:"cron"`
	Function string `toml:"function"`
	Payload  string `toml:"payload"`
	// Priority is high, normal (the default) or low.
	Priority string `toml:"priority"`
	// Timezone is the IANA zone the fields are read in; empty: the
	// host's local zone (instances must agree).
	Timezone string `toml:"timezone"`
	// User, if set, submits in that user's namespace and with its ACL;
	// otherwise the job is submitted as the built-in superuser
	// "schedule".
	User string `toml:"user"`
}

// Location returns the schedule's time zone (nil: the local one).
func (s *Schedule) Location() (*time.Location, error) {
	if s.Timezone == "" {
		return nil, nil
	}
	return time.LoadLocation(s.Timezone)
}

// AdminEnabled reports whether the admin HTTP listener runs.
func (a *Admin) AdminEnabled() bool { return a.Address != "" }

// fillOps sets the operations defaults that a zero value does not mean
// otherwise; [admin] address is set by Parse and Default, since an empty
// one turns the listener off.
func (c *Config) fillOps() {
	if c.Admin.Refresh.Duration == 0 {
		c.Admin.Refresh.Duration = DefaultAdminRefresh
	}
	if c.Admin.MaxFunctionLabels == 0 {
		c.Admin.MaxFunctionLabels = DefaultFunctionLabels
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
}

// defaultAdmin turns the admin listener on at its default address unless
// the file says where, or says "" (off).
func (c *Config) defaultAdmin(md toml.MetaData) {
	if !md.IsDefined("admin", "address") {
		c.Admin.Address = DefaultAdminAddress
	}
}

func (c *Config) validateOps(file string, lines [][]byte) Errors {
	var errs Errors
	add := func(key toml.Key, nth int, format string, args ...any) {
		errs = append(errs, &Error{File: file, Line: nthKey(lines, key, nth), Msg: fmt.Sprintf(format, args...)})
	}
	a := c.Admin
	if a.Address != "" {
		if _, _, err := net.SplitHostPort(a.Address); err != nil {
			add(toml.Key{"admin", "address"}, 0, "admin address %q: %v", a.Address, err)
		}
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		add(toml.Key{"admin", "tls_cert"}, 0, "[admin] needs both tls_cert and tls_key for HTTPS, or neither")
	}
	for _, f := range []struct{ key, path string }{{"tls_cert", a.TLSCert}, {"tls_key", a.TLSKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			add(toml.Key{"admin", f.key}, 0, "admin %s: %v", f.key, err)
		}
	}
	users := map[string]User{}
	for _, u := range c.Users {
		users[u.Name] = u
	}
	for _, name := range a.Users {
		if _, ok := users[name]; !ok {
			add(toml.Key{"admin", "users"}, 0, "admin user %q is not a [[user]]", name)
		}
	}
	if len(a.Users) > 0 && !a.Auth {
		add(toml.Key{"admin", "users"}, 0, "admin users are listed but auth = false: set auth = true or remove users")
	}
	if a.Auth && a.Address != "" && a.TLSCert == "" && !isLoopbackAddress(a.Address) {
		add(toml.Key{"admin", "auth"}, 0, "admin auth on %s without tls_cert would send passwords in clear text", a.Address)
	}
	if a.MaxFunctionLabels < 0 {
		add(toml.Key{"admin", "max_function_labels"}, 0, "max_function_labels %d is negative", a.MaxFunctionLabels)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add(toml.Key{"log", "format"}, 0, "log format %q: want text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add(toml.Key{"log", "level"}, 0, "log level %q: want debug, info, warn or error", c.Log.Level)
	}
	names := map[string]bool{}
	for i, s := range c.Schedules {
		key := func(k string) toml.Key { return toml.Key{"schedule", k} }
		switch {
		case s.Name == "":
			add(key("name"), i, "schedule %d has no name", i+1)
		case names[s.Name]:
			add(key("name"), i, "duplicate schedule %q", s.Name)
		}
		names[s.Name] = true
		if s.Function == "" {
			add(key("function"), i, "schedule %q has no function", s.Name)
		}
		if _, err := schedule.Parse(s.Cron); err != nil {
			add(key("cron"), i, "schedule %q: %v", s.Name, err)
			continue
		}
		prio, err := schedule.ParsePriority(s.Priority)
		if err != nil {
			add(key("priority"), i, "schedule %q: %v", s.Name, err)
			continue
		}
		loc, err := s.Location()
		if err != nil {
			add(key("timezone"), i, "schedule %q: timezone %q: %v", s.Name, s.Timezone, err)
			continue
		}
		if s.User != "" {
			u, ok := users[s.User]
			if !ok {
				add(key("user"), i, "schedule %q: user %q is not a [[user]]", s.Name, s.User)
				continue
			}
			// The unique is namespaced like a client's: it must
			// still fit the 63 bytes a job server keeps.
			ns := strings.ReplaceAll(c.namespaceOf(u), "{user}", u.Name)
			if n := len(ns) + len(schedule.Unique(s.Name, time.Unix(1e10, 0))); n > schedule.MaxUnique {
				add(key("name"), i, "schedule %q: in namespace %q its unique would be %d bytes (at most %d): shorten the name", s.Name, ns, n, schedule.MaxUnique)
			}
		}
		// The scheduler's own checks (name length and characters, a
		// cron that never fires such as 30 February).
		one := schedule.Schedule{Name: s.Name, Cron: s.Cron, Function: s.Function, Priority: prio, Location: loc}
		if s.Name != "" && s.Function != "" {
			if _, err := schedule.New([]schedule.Schedule{one}, noSubmit, schedule.Options{}); err != nil {
				add(key("name"), i, "%v", err)
			}
		}
	}
	return errs
}

// noSubmit lets schedule.New check a schedule that will never run here.
var noSubmit = schedule.SubmitterFunc(func(context.Context, schedule.Job) error { return nil })

// namespaceOf is a user's namespace as configured: its own, else its first
// group's.
func (c *Config) namespaceOf(u User) string {
	if u.Namespace != "" {
		return u.Namespace
	}
	for _, g := range u.Groups {
		for _, cg := range c.Groups {
			if cg.Name == g {
				return cg.Namespace
			}
		}
	}
	return ""
}

func isLoopbackAddress(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
