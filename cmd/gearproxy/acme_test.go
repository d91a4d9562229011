package main

import (
	"testing"

	"github.com/gearproxy/gearproxy/config"
)

// TestSameACME: SIGHUP applies users and certificate files, but the
// certificate manager is built once, so any change to [listener.acme]
// is refused until a restart.
func TestSameACME(t *testing.T) {
	running := &config.ACME{Domains: []string{"a.example.org"}, Email: "ops@example.org", CA: "https://ca.example.org/dir"}
	same := *running
	same.Domains = []string{"a.example.org"}
	moreDomains := *running
	moreDomains.Domains = []string{"a.example.org", "b.example.org"}
	otherCA := *running
	otherCA.CA = "https://other.example.org/dir"
	for _, tt := range []struct {
		name        string
		now, before *config.ACME
		ok          bool
	}{
		{"neither", nil, nil, true},
		{"unchanged", &same, running, true},
		{"added", running, nil, false},
		{"removed", nil, running, false},
		{"domains", &moreDomains, running, false},
		{"ca", &otherCA, running, false},
	} {
		if err := sameACME(tt.now, tt.before); (err == nil) != tt.ok {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
}
