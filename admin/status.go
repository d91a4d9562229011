package admin

import (
	"cmp"
	"context"
	"fmt"
	"html/template"
	"slices"
	"time"
)

// Source tells the admin listener what the proxy looks like now. The
// status page, /readyz and the gauges of /metrics all read it.
type Source interface {
	// Snapshot returns the current state. It may ask the backends
	// (the admin "status" command) and should return within ctx's
	// deadline; an error means no status at all, so a backend that does
	// not answer is better reported as unhealthy than as an error.
	Snapshot(ctx context.Context) (Status, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (Status, error)

// Snapshot calls f.
func (f SourceFunc) Snapshot(ctx context.Context) (Status, error) { return f(ctx) }

// Status is a snapshot of the proxy.
type Status struct {
	Backends  []BackendStatus
	Functions []FunctionStatus
	Users     []UserStatus
	// Schedules is optional: the recurring jobs this instance submits.
	Schedules []ScheduleStatus
}

// BackendStatus is one job server behind the proxy.
type BackendStatus struct {
	Name, Address string
	Healthy       bool
	// RTT is the round-trip time of the last health check (ECHO).
	RTT time.Duration
	// Error says why it is unhealthy, if known.
	Error string
}

// FunctionStatus is one function over all backends, one row per
// function: queued and running add up over backends; workers is the
// largest count any backend reports, since every worker session of the
// proxy registers on every backend (the proxy's merged "status" does
// both). Gearman's "status" gives total (queued + running), running and
// workers: Queued = total - running.
type FunctionStatus struct {
	Name                     string
	Queued, Running, Workers int
}

// UserStatus is one authenticated user with open connections.
type UserStatus struct {
	Name        string
	Connections int
}

// ScheduleStatus is one recurring job (see package schedule).
type ScheduleStatus struct {
	Name, Cron, Function string
	Next, Last           time.Time
	LastError            string
}

// Healthy counts the healthy backends.
func (s Status) Healthy() int {
	n := 0
	for _, b := range s.Backends {
		if b.Healthy {
			n++
		}
	}
	return n
}

// page is what the status template renders.
type page struct {
	Version string
	Refresh int // seconds
	Now     time.Time
	Err     string
	Status
	HealthyBackends int
}

// sorted returns a copy of st with functions and users in name order, so
// the page does not reshuffle between refreshes.
func sorted(st Status) Status {
	st.Functions = slices.SortedFunc(slices.Values(st.Functions), func(a, b FunctionStatus) int { return cmp.Compare(a.Name, b.Name) })
	st.Users = slices.SortedFunc(slices.Values(st.Users), func(a, b UserStatus) int { return cmp.Compare(a.Name, b.Name) })
	return st
}

func formatRTT(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// statusTemplate is the status page: plain HTML with inline styles and
// no scripts or external assets, so it works offline, passes a strict
// Content-Security-Policy and refreshes itself with a meta tag.
// html/template escapes every name that comes from clients.
var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"rtt": formatRTT, "time": formatTime,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{.Refresh}}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gearproxy status</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.1em; margin: 1.5em 0 .4em; }
.meta { color: #666; }
table { border-collapse: collapse; min-width: 30em; background: #fff; }
th, td { border: 1px solid #ddd; padding: .3em .8em; text-align: left; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #11772d; font-weight: bold; }
.down { color: #b00020; font-weight: bold; }
.error { background: #fde7ea; border: 1px solid #b00020; padding: .5em 1em; }
.none { color: #666; font-style: italic; }
</style>
</head>
<body>
<h1>gearproxy {{.Version}}</h1>
<p class="meta">{{time .Now}} &middot; refreshes every {{.Refresh}} s &middot;
{{.HealthyBackends}} of {{len .Backends}} backends healthy</p>
{{if .Err}}<p class="error" id="error">Status unavailable: {{.Err}}</p>{{end}}

<h2>Backends</h2>
{{if .Backends}}<table id="backends">
<tr><th>Name</th><th>Address</th><th>Health</th><th>Round trip</th></tr>
{{range .Backends}}<tr><td>{{.Name}}</td><td>{{.Address}}</td>
<td>{{if .Healthy}}<span class="up">healthy</span>{{else}}<span class="down">down</span>{{if .Error}} ({{.Error}}){{end}}{{end}}</td>
<td class="num">{{rtt .RTT}}</td></tr>
{{end}}</table>{{else}}<p class="none">No backends.</p>{{end}}

<h2>Functions</h2>
{{if .Functions}}<table id="functions">
<tr><th>Function</th><th>Queued</th><th>Running</th><th>Workers</th></tr>
{{range .Functions}}<tr><td>{{.Name}}</td><td class="num">{{.Queued}}</td><td class="num">{{.Running}}</td><td class="num">{{.Workers}}</td></tr>
{{end}}</table>{{else}}<p class="none">No functions.</p>{{end}}

<h2>Connected users</h2>
{{if .Users}}<table id="users">
<tr><th>User</th><th>Connections</th></tr>
{{range .Users}}<tr><td>{{.Name}}</td><td class="num">{{.Connections}}</td></tr>
{{end}}</table>{{else}}<p class="none">Nobody is connected.</p>{{end}}
{{if .Schedules}}
<h2>Schedules</h2>
<table id="schedules">
<tr><th>Name</th><th>Cron</th><th>Function</th><th>Next</th><th>Last</th><th>Last error</th></tr>
{{range .Schedules}}<tr><td>{{.Name}}</td><td><code>{{.Cron}}</code></td><td>{{.Function}}</td><td>{{time .Next}}</td><td>{{time .Last}}</td><td>{{.LastError}}</td></tr>
{{end}}</table>{{end}}
</body>
</html>
`))
