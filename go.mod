module github.com/gearproxy/gearproxy

go 1.26

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/hashicorp/golang-lru/v2 v2.0.7 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
)
