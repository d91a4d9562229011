module github.com/gearproxy/gearproxy

go 1.26
