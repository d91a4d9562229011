// Package auth decides who is connecting and what they may do: TLS
// configuration, SASL mechanisms, the user store and ACL evaluation.
package auth
