package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSource is a Source whose answer the test sets.
type fakeSource struct {
	mu    sync.Mutex
	st    Status
	err   error
	calls int
}

func (f *fakeSource) Snapshot(ctx context.Context) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.st, f.err
}

func (f *fakeSource) set(st Status, err error) {
	f.mu.Lock()
	f.st, f.err = st, err
	f.mu.Unlock()
}

// twoBackends is the status the page tests show: two backends (one
// down), two functions and two users.
func twoBackends() Status {
	return Status{
		Backends: []BackendStatus{
			{Name: "gearmand-east", Address: "10.0.0.1:4730", Healthy: true, RTT: 1500 * time.Microsecond},
			{Name: "bundled-west", Address: "in-process", Healthy: false, Error: "connection refused"},
		},
		Functions: []FunctionStatus{
			{Name: "resize_image", Queued: 7, Running: 2, Workers: 3},
			{Name: "send_email", Queued: 0, Running: 1, Workers: 5},
		},
		Users: []UserStatus{{Name: "web", Connections: 4}, {Name: "batch", Connections: 1}},
	}
}

func newTestServer(t *testing.T, src Source, tweak func(*Options)) *Server {
	t.Helper()
	opts := Options{Source: src, Version: "test-1.0"}
	if tweak != nil {
		tweak(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// get serves one request through the handler.
func get(t *testing.T, h http.Handler, method, path string, header http.Header) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.String()
}

func TestHealthz(t *testing.T) {
	src := &fakeSource{err: errors.New("every backend is gone")}
	s := newTestServer(t, src, nil)
	code, hdr, body := get(t, s.Handler(), "GET", "/healthz", nil)
	if code != 200 || body != "ok\n" || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	if src.calls != 0 {
		t.Fatal("/healthz asked the Source: liveness must not depend on backends")
	}
}

func TestReadyz(t *testing.T) {
	down := twoBackends()
	down.Backends[0].Healthy = false
	for _, c := range []struct {
		name     string
		st       Status
		err      error
		draining bool
		code     int
		body     string
	}{
		{"one healthy", twoBackends(), nil, false, 200, "ready: 1 of 2 backends healthy\n"},
		{"none healthy", down, nil, false, 503, "not ready: 0 of 2 backends healthy\n"},
		{"no backends", Status{}, nil, false, 503, "not ready: 0 of 0 backends healthy\n"},
		{"snapshot fails", Status{}, errors.New("proxy closed"), false, 503, "not ready: proxy closed\n"},
		{"draining", twoBackends(), nil, true, 503, "not ready: draining\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := &fakeSource{st: c.st, err: c.err}
			s := newTestServer(t, src, nil)
			s.SetDraining(c.draining)
			code, _, body := get(t, s.Handler(), "GET", "/readyz", nil)
			if code != c.code || body != c.body {
				t.Fatalf("/readyz = %d %q, want %d %q", code, body, c.code, c.body)
			}
		})
	}
}

func TestStatusPage(t *testing.T) {
	st := twoBackends()
	st.Functions = append(st.Functions, FunctionStatus{Name: `<script>alert("x")</script>`, Queued: 1})
	st.Schedules = []ScheduleStatus{{Name: "nightly", Cron: "0 3 * * *", Function: "report",
		Next: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)}}
	s := newTestServer(t, &fakeSource{st: st}, func(o *Options) { o.Refresh = 7 * time.Second })
	code, hdr, body := get(t, s.Handler(), "GET", "/", nil)
	if code != 200 || hdr.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/ = %d %s", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="7">`,
		"gearproxy test-1.0",
		"1 of 2 backends healthy",
		"<td>gearmand-east</td><td>10.0.0.1:4730</td>",
		`<span class="up">healthy</span>`,
		"<td>bundled-west</td>",
		`<span class="down">down</span> (connection refused)`,
		`<td class="num">1.5 ms</td>`,
		`<tr><td>resize_image</td><td class="num">7</td><td class="num">2</td><td class="num">3</td></tr>`,
		`<tr><td>send_email</td><td class="num">0</td><td class="num">1</td><td class="num">5</td></tr>`,
		`<tr><td>batch</td><td class="num">1</td></tr>`, // users sorted by name
		`<tr><td>web</td><td class="num">4</td></tr>`,
		`&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;`,
		`<td>nightly</td><td><code>0 3 * * *</code></td><td>report</td><td>2026-11-29 03:00:00 UTC</td><td>-</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("a function name reached the page unescaped")
	}
	if strings.Index(body, "<td>batch</td>") > strings.Index(body, "<td>web</td>") {
		t.Error("users are not in name order")
	}
	// Nothing external: no scripts, links or images, and a policy that
	// would block them anyway.
	for _, bad := range []string{"src=", "href=", "<link", "@import", "url("} {
		if strings.Contains(body, bad) {
			t.Errorf("the page refers to something external: %s", bad)
		}
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

func TestStatusPageSourceError(t *testing.T) {
	s := newTestServer(t, &fakeSource{err: errors.New("backends <unreachable>")}, nil)
	code, _, body := get(t, s.Handler(), "GET", "/", nil)
	if code != 503 || !strings.Contains(body, "Status unavailable: backends &lt;unreachable&gt;") ||
		!strings.Contains(body, `http-equiv="refresh"`) {
		t.Fatalf("/ = %d\n%s", code, body)
	}
}

func TestRoutes(t *testing.T) {
	s := newTestServer(t, &fakeSource{st: twoBackends()}, nil)
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/", 200},
		{"HEAD", "/", 200},
		{"POST", "/", 405},
		{"DELETE", "/metrics", 405},
		{"GET", "/nothing", 404},
		{"GET", "/metrics", 200},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
	} {
		if code, _, _ := get(t, s.Handler(), c.method, c.path, nil); code != c.code {
			t.Errorf("%s %s = %d, want %d", c.method, c.path, code, c.code)
		}
	}
}

func TestBasicAuth(t *testing.T) {
	m := NewMetrics(MetricsOptions{})
	s := newTestServer(t, &fakeSource{st: twoBackends()}, func(o *Options) {
		o.Metrics = m
		o.Authenticate = func(user, pass string) bool { return user == "ops" && pass == "s3cret" }
	})
	auth := func(user, pass string) http.Header {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(user, pass)
		return r.Header
	}
	for _, c := range []struct {
		path   string
		header http.Header
		code   int
	}{
		{"/", nil, 401},
		{"/metrics", nil, 401},
		{"/", auth("ops", "wrong"), 401},
		{"/metrics", auth("root", "s3cret"), 401},
		{"/", auth("ops", "s3cret"), 200},
		{"/metrics", auth("ops", "s3cret"), 200},
		// Probes need no credentials.
		{"/healthz", nil, 200},
		{"/readyz", nil, 200},
	} {
		code, hdr, _ := get(t, s.Handler(), "GET", c.path, c.header)
		if code != c.code {
			t.Errorf("%s with %v = %d, want %d", c.path, c.header, code, c.code)
		}
		if code == 401 && hdr.Get("WWW-Authenticate") != `Basic realm="gearproxy", charset="UTF-8"` {
			t.Errorf("401 without a basic-auth challenge: %q", hdr.Get("WWW-Authenticate"))
		}
	}
	// Two wrong credentials count; the two requests without any do not.
	_, _, body := get(t, s.Handler(), "GET", "/metrics", auth("ops", "s3cret"))
	if want := `gearproxy_auth_failures_total{listener="admin",reason="admin_basic_auth"} 2`; !strings.Contains(body, want+"\n") {
		t.Errorf("/metrics lacks %s", want)
	}
}

// Start serves over real TCP and TLS; Close stops it and Start's
// goroutine.
func TestStartTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	s := newTestServer(t, &fakeSource{st: twoBackends()}, func(o *Options) {
		o.Address = "127.0.0.1:0"
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	addr, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer c.CloseIdleConnections()
	res, err := c.Get("https://" + addr.String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != "ready: 1 of 2 backends healthy\n" {
		t.Fatalf("GET /readyz over TLS = %d %q", res.StatusCode, body)
	}
	// Plain HTTP on the TLS port is refused.
	if res, err := http.Get("http://" + addr.String() + "/healthz"); err == nil {
		res.Body.Close()
		if res.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS listener")
		}
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("tcp", addr.String()); err == nil {
		t.Fatal("still listening after Shutdown")
	}
}

func TestNewNeedsSource(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without a Source succeeded")
	}
}

// selfSigned makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gearproxy admin test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// Password checks are key derivations: no more than two run at once,
// however many requests arrive.
func TestPasswordChecksBounded(t *testing.T) {
	var mu sync.Mutex
	inside, most := 0, 0
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	s := newTestServer(t, &fakeSource{st: twoBackends()}, func(o *Options) {
		o.Authenticate = func(user, pass string) bool {
			mu.Lock()
			inside++
			most = max(most, inside)
			mu.Unlock()
			entered <- struct{}{}
			<-release
			mu.Lock()
			inside--
			mu.Unlock()
			return true
		}
	})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			r := httptest.NewRequest("GET", "/", nil)
			r.SetBasicAuth("ops", "pw")
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, r)
			if rec.Code != 200 {
				t.Errorf("GET / = %d", rec.Code)
			}
		})
	}
	<-entered
	<-entered
	release <- struct{}{} // one check ends: the third may start
	<-entered
	close(release)
	wg.Wait()
	if most != 2 {
		t.Fatalf("%d password checks ran at once, want 2", most)
	}
}
