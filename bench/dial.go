package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	gpclient "github.com/gearproxy/gearproxy/client"
)

// DialSecure returns a Dialer for a gearproxy that wants TLS, SASL or
// both: with tlsConfig it does the TLS handshake (an empty ServerName is
// taken from the address, as tls.Dial does), and with creds it then logs
// in with client.Authenticate. Both nil is DialTCP. The handshake and the
// login happen inside the dial, so the load logic times only jobs; the
// connection it returns is the *tls.Conn (or TCP conn) itself, with
// nothing read past SASL_OK.
func DialSecure(tlsConfig *tls.Config, creds *gpclient.Credentials) Dialer {
	if tlsConfig == nil && creds == nil {
		return DialTCP
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var nc net.Conn
		var err error
		if tlsConfig != nil {
			d := tls.Dialer{Config: tlsConfig}
			nc, err = d.DialContext(ctx, "tcp", addr)
		} else {
			nc, err = DialTCP(ctx, addr)
		}
		if err != nil {
			return nil, err
		}
		if creds != nil {
			if _, err := gpclient.Authenticate(ctx, nc, *creds); err != nil {
				nc.Close()
				return nil, fmt.Errorf("log in: %w", err)
			}
		}
		return nc, nil
	}
}
