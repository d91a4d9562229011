package bench

import (
	"encoding/binary"
	"strconv"
)

// A job's payload is a 16-byte header followed by a pattern:
//
//	0..3   the run's nonce, so jobs left queued by another run are told apart
//	4..11  the job's key
//	12..15 a check word over both, so a corrupted header is not read as
//	       another job's
//	16..   byte(key) + 7*i, so corruption anywhere in the body shows
//
// Workers return the payload with every byte XORed with resultXOR: a server
// that hands the request back as the result, or a result from the wrong
// job, fails the check.
const (
	headerSize = 16
	resultXOR  = 0x5a
	// maxUnique is the longest unique we generate, well under gearmand's
	// limit of 63 bytes.
	maxUnique = 40
	// laneShift splits a key into lane (the client that submitted it) and
	// sequence number within that client.
	laneShift = 40
	seqMask   = 1<<laneShift - 1
)

func checkWord(run uint32, key uint64) uint32 {
	return ^run ^ uint32(key) ^ uint32(key>>32)*0x9e3779b1
}

// fillPayload writes the payload of job key of run into b.
func fillPayload(b []byte, run uint32, key uint64) {
	binary.BigEndian.PutUint32(b[0:4], run)
	binary.BigEndian.PutUint64(b[4:12], key)
	binary.BigEndian.PutUint32(b[12:16], checkWord(run, key))
	base := byte(key)
	for i := headerSize; i < len(b); i++ {
		b[i] = base + byte(i)*7
	}
}

// readHeader decodes the header of a payload whose bytes were XORed with x.
// ok is false when b is too short or its check word is wrong.
func readHeader(b []byte, x byte) (run uint32, key uint64, ok bool) {
	if len(b) < headerSize {
		return 0, 0, false
	}
	var h [headerSize]byte
	for i := range h {
		h[i] = b[i] ^ x
	}
	run = binary.BigEndian.Uint32(h[0:4])
	key = binary.BigEndian.Uint64(h[4:12])
	return run, key, binary.BigEndian.Uint32(h[12:16]) == checkWord(run, key)
}

// isPayload reports whether b is exactly the payload of job key of run, of
// size bytes, with every byte XORed with x.
func isPayload(b []byte, run uint32, key uint64, size int, x byte) bool {
	if len(b) != size {
		return false
	}
	r, k, ok := readHeader(b, x)
	if !ok || r != run || k != key {
		return false
	}
	base := byte(key)
	for i := headerSize; i < len(b); i++ {
		if b[i]^x != base+byte(i)*7 {
			return false
		}
	}
	return true
}

// transform writes the result a worker returns for payload in into out.
func transform(out, in []byte) []byte {
	out = out[:0]
	for _, c := range in {
		out = append(out, c^resultXOR)
	}
	return out
}

// appendUnique appends the unique ID of job key of run. Both random and
// duplicated uniques start with the run's nonce so that a second run never
// coalesces with jobs a first run left queued.
func appendUnique(dst []byte, mode UniqueMode, run uint32, key uint64) []byte {
	switch mode {
	case UniqueNone:
		return dst
	case UniqueDuplicated:
		dst = append(dst, "bd-"...)
	default:
		dst = append(dst, "br-"...)
	}
	dst = strconv.AppendUint(dst, uint64(run), 16)
	dst = append(dst, '-')
	return strconv.AppendUint(dst, key, 10)
}

// jobKey is the key of a client's seq-th job. Keys are unique per client
// (the lane is the client's index) except in duplicated mode, where every
// client submits the same keys so that their uniques and payloads coincide.
func jobKey(mode UniqueMode, lane int, seq uint64) uint64 {
	if mode == UniqueDuplicated {
		return seq
	}
	return uint64(lane)<<laneShift | seq
}
