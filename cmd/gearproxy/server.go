package main

import (
	"fmt"
	"io"
)

// runServer is a placeholder until its part lands.
func runServer(_ []string, _ io.Writer, stderr io.Writer) int {
	fmt.Fprintln(stderr, "gearproxy: server: not built yet")
	return 1
}
