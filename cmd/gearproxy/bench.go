package main

import (
	"fmt"
	"io"
)

// runBench is a placeholder until its part lands.
func runBench(_ []string, _ io.Writer, stderr io.Writer) int {
	fmt.Fprintln(stderr, "gearproxy: bench: not built yet")
	return 1
}
