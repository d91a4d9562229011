//go:build !((amd64 || arm64 || ppc64 || ppc64le || riscv64 || s390x || loong64 || mips64 || mips64le) && !windows)

package store

// initialMmapSize leaves mapping to bbolt's own growth.
const initialMmapSize = 0
