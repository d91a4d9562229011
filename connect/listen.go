package connect

import (
	"fmt"
	"net"
)

// Listen opens the local listener. Local clients speak plain Gearman with
// no authentication and act as the sidecar's user, so a non-loopback
// address is refused unless insecure is set: anyone who could reach it
// would borrow the credentials.
func Listen(addr string, insecure bool) (net.Listener, error) {
	if !insecure {
		if err := checkLoopback(addr); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect: listen: %w", err)
	}
	if !insecure {
		// "localhost" could resolve to anything in /etc/hosts: check
		// the address actually bound too.
		if err := checkLoopback(ln.Addr().String()); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return ln, nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("connect: listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("connect: listen address %q is not loopback: local clients are not authenticated "+
		"and would act as the upstream user; use 127.0.0.1 or ::1, or pass -listen-insecure", addr)
}
