package test

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// With [admin] auth = true, /metrics and the status page ask for a
// password of a listed [[user]] (checked against its SCRAM verifier);
// /healthz and /readyz stay open for load balancers.
func TestOpsAdminAuth(t *testing.T) {
	t.Parallel()
	p := startOpsProxyAdmin(t, bundledBackends(1), fmt.Sprintf(`[[user]]
name = "ops"
password = %q
[[user]]
name = "other"
password = %q
`, verifier(t, "ops secret"), verifier(t, "other secret")), "auth = true\nusers = [\"ops\"]\n")
	base := "http://" + p.Admin
	for _, tc := range []struct {
		path, user, password string
		want                 int
	}{
		{"/metrics", "", "", http.StatusUnauthorized},
		{"/metrics", "ops", "wrong", http.StatusUnauthorized},
		{"/metrics", "other", "other secret", http.StatusUnauthorized}, // not in users
		{"/metrics", "nobody", "x", http.StatusUnauthorized},
		{"/", "", "", http.StatusUnauthorized},
		{"/metrics", "ops", "ops secret", http.StatusOK},
		{"/", "ops", "ops secret", http.StatusOK},
		{"/healthz", "", "", http.StatusOK},
		{"/readyz", "", "", http.StatusOK},
	} {
		if got := getAs(t, base+tc.path, tc.user, tc.password); got != tc.want {
			t.Errorf("GET %s as %q: %d, want %d", tc.path, tc.user, got, tc.want)
		}
	}
	// The three bad passwords (a request without credentials is only a
	// challenge).
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.SetBasicAuth("ops", "ops secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		if i := strings.LastIndexByte(l, ' '); i > 0 && !strings.HasPrefix(l, "#") {
			v, _ := strconv.ParseFloat(l[i+1:], 64)
			m[l[:i]] = v
		}
	}
	if got := sum(m, "gearproxy_auth_failures_total", `reason="admin_basic_auth"`); got != 3 {
		t.Errorf("admin basic auth failures: %v, want 3", got)
	}
}

func getAs(t testing.TB, url, user, password string) int {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// With tls_cert and tls_key, the admin listener speaks HTTPS with that
// certificate, and plain HTTP gets no page.
func TestOpsAdminTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "ops test CA")
	cert, key, _ := pki.issue(t, "127.0.0.1", true, time.Now().Add(time.Hour))
	p := startOpsProxyAdmin(t, bundledBackends(1), "", fmt.Sprintf("tls_cert = %q\ntls_key = %q\n", cert, key))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	resp, err := hc.Get("https://" + p.Admin + "/readyz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ready") {
		t.Fatalf("/readyz over HTTPS: %d %s", resp.StatusCode, body)
	}
	if code := getAs(t, "http://"+p.Admin+"/readyz", "", ""); code == http.StatusOK {
		t.Errorf("plain HTTP answered 200 on the HTTPS admin listener")
	}
}
