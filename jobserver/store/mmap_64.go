//go:build (amd64 || arm64 || ppc64 || ppc64le || riscv64 || s390x || loong64 || mips64 || mips64le) && !windows

package store

// initialMmapSize is 1 GiB where address space is plentiful. (On Windows
// bbolt would grow the file itself to this size.)
const initialMmapSize = 1 << 30
