package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/gearproxy/gearproxy/protocol"
)

// The on-disk encoding of one job. The key is the job ID as 8 big-endian
// bytes, so that a cursor walks jobs in ID order, which is submit order.
// The value, version 1:
//
//	[0]      version (1)
//	[1]      priority (protocol.Priority)
//	[2:6]    CRC-32C of everything else in the value: bbolt checksums
//	         only its meta pages, and a job silently changed on disk
//	         must stop recovery rather than run with other data
//	[6:10]   retries, uint32 big-endian: fixed width so that SetRetries
//	         patches it in place without decoding the rest
//	varint   When (zig-zag)
//	uvarint  len(Function), Function
//	uvarint  len(Unique), Unique
//	uvarint  len(Reducer), Reducer
//	uvarint  len(Sched), Sched
//	rest     Data, to the end of the value (no length: it is the rest)
//
// A new field goes into a new version; decode keeps reading every older one.
const (
	valueVersion = 1
	crcAt        = 2
	retriesAt    = 6
	headerSize   = 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// valueCRC is the checksum stored at crcAt: it covers every byte but its own.
func valueCRC(val []byte) uint32 {
	return crc32.Update(crc32.Update(0, castagnoli, val[:crcAt]), castagnoli, val[retriesAt:])
}

// setRetries patches the retry count of an encoded value and its checksum.
func setRetries(val []byte, retries uint32) {
	binary.BigEndian.PutUint32(val[retriesAt:], retries)
	binary.BigEndian.PutUint32(val[crcAt:], valueCRC(val))
}

var errShortValue = errors.New("value ends early")

// appendKey appends the key of job id.
func appendKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, id)
}

// appendValue appends the encoded job, without its ID (the key holds it).
func appendValue(dst []byte, j *Job) []byte {
	start := len(dst)
	dst = append(dst, valueVersion, byte(j.Priority), 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, j.Retries)
	dst = binary.AppendVarint(dst, j.When)
	for _, s := range [...]string{j.Function, j.Unique, j.Reducer, j.Sched} {
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	}
	dst = append(dst, j.Data...)
	val := dst[start:]
	binary.BigEndian.PutUint32(val[crcAt:], valueCRC(val))
	return dst
}

// valueSize is the exact length appendValue produces, so a caller can size
// one buffer for a whole batch.
func valueSize(j *Job) int {
	n := headerSize + varintLen(j.When) + len(j.Data)
	for _, s := range [...]string{j.Function, j.Unique, j.Reducer, j.Sched} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

func varintLen(x int64) int {
	ux := uint64(x) << 1
	if x < 0 {
		ux = ^ux
	}
	return uvarintLen(ux)
}

// interner shares the string of a function name between the jobs Load
// returns: a queue holds many jobs of few functions, so this saves one
// allocation per job during recovery.
type interner map[string]string

func (in interner) get(b []byte) string {
	if s, ok := in[string(b)]; ok { // no allocation: the compiler special-cases this lookup
		return s
	}
	if len(in) >= 4096 { // a queue of mostly distinct functions gains nothing
		return string(b)
	}
	s := string(b)
	in[s] = s
	return s
}

// decodeJob fills j from a key and value read from the store. Everything
// is copied: bbolt's memory is valid only inside its transaction.
func decodeJob(j *Job, key, val []byte, in interner) error {
	if len(key) != 8 {
		return fmt.Errorf("key %x: want 8 bytes, have %d", key, len(key))
	}
	j.ID = binary.BigEndian.Uint64(key)
	if len(val) < headerSize {
		return fmt.Errorf("job %d: %w (%d bytes)", j.ID, errShortValue, len(val))
	}
	if val[0] != valueVersion {
		return fmt.Errorf("job %d: value version %d, this build reads %d", j.ID, val[0], valueVersion)
	}
	if want, have := binary.BigEndian.Uint32(val[crcAt:]), valueCRC(val); want != have {
		return fmt.Errorf("job %d: checksum mismatch (stored %08x, computed %08x): the file was changed outside the store", j.ID, want, have)
	}
	j.Priority = protocol.Priority(val[1])
	if j.Priority > protocol.Low {
		return fmt.Errorf("job %d: invalid priority %d", j.ID, val[1])
	}
	j.Retries = binary.BigEndian.Uint32(val[retriesAt:])
	rest := val[headerSize:]
	when, n := binary.Varint(rest)
	if n <= 0 {
		return fmt.Errorf("job %d: time: %w", j.ID, errShortValue)
	}
	j.When = when
	rest = rest[n:]
	var fields [4][]byte
	for i := range fields {
		l, n := binary.Uvarint(rest)
		if n <= 0 || uint64(len(rest)-n) < l {
			return fmt.Errorf("job %d: field %d: %w", j.ID, i, errShortValue)
		}
		fields[i] = rest[n : n+int(l)]
		rest = rest[n+int(l):]
	}
	j.Function = in.get(fields[0])
	j.Unique = string(fields[1])
	j.Reducer = in.get(fields[2])
	j.Sched = string(fields[3])
	j.Data = nil
	if len(rest) > 0 {
		j.Data = append([]byte(nil), rest...)
	}
	return nil
}
