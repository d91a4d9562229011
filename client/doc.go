// Package client is a Go Gearman client and worker library that speaks TLS
// and the SASL extension.
package client
