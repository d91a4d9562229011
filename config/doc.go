// Package config is gearproxy's TOML configuration: the schema, its defaults
// and validation that names file and line for every error.
package config
