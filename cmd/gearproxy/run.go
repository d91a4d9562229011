package main

import (
	"fmt"
	"io"
)

// runProxy is a placeholder until its part lands.
func runProxy(_ []string, _ io.Writer, stderr io.Writer) int {
	fmt.Fprintln(stderr, "gearproxy: run: not built yet")
	return 1
}
