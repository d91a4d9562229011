package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The write-ahead log. Every change is appended here, and only here, before
// it is acknowledged: one write and one fdatasync per group of changes.
// bbolt needs two syncs per commit (data pages, then the meta page) and
// rewrites a path of pages per change; the log needs one sync and writes
// the bytes of the jobs themselves. A checkpoint later applies a whole log
// to bbolt in one transaction, where a job that ended within the same log
// never touches bbolt at all, and then deletes the log.
//
// A log file, DIR/jobs.wal.<generation>:
//
//	header   "GPWAL" 0 0 <version 1>                         8 bytes
//	frame    length u32 | CRC-32C u32 | payload                (one per group)
//
// The CRC covers the log's generation (8 bytes, from its name) and then the
// payload. Logs are recycled: after a checkpoint the applied file is
// renamed to the next generation and written over from the start, because
// overwriting allocated blocks makes a sync flush only data, where an
// append must also journal the new size and blocks (half the time or less
// here). The frames of the previous generation that are left behind fail
// the CRC, and so read as the end of the log.
//
// A payload is a sequence of records:
//
//	1 add      id u64 | uvarint len | value (codec.go)
//	2 remove   uvarint n | n ids u64
//	3 retries  id u64 | retries u32
//
// All integers are big-endian. A crash can leave the last frame partly
// written; it was never acknowledged, so replay stops at the first frame
// that is short, zero or fails its checksum.
const (
	walPrefix     = "jobs.wal."
	walVersion    = 1
	walHeaderSize = 8
	frameHeader   = 8

	recAdd     = 1
	recRemove  = 2
	recRetries = 3
)

var walMagic = [walHeaderSize]byte{'G', 'P', 'W', 'A', 'L', 0, 0, walVersion}

// walPath names the log of generation gen in dir.
func walPath(dir string, gen uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%s%016x", walPrefix, gen))
}

// listWAL returns the generations of the logs in dir, oldest first.
func listWAL(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var gens []uint64
	for _, e := range entries {
		name, ok := strings.CutPrefix(e.Name(), walPrefix)
		if !ok {
			continue
		}
		gen, err := strconv.ParseUint(name, 16, 64)
		if err != nil || len(name) != 16 {
			return nil, fmt.Errorf("unexpected file %s in the store directory", e.Name())
		}
		gens = append(gens, gen)
	}
	slices.Sort(gens)
	return gens, nil
}

// genSeed is the CRC-32C of a generation number: the starting value of the
// CRC of every frame of that generation's log.
func genSeed(gen uint64) uint32 {
	return crc32.Checksum(binary.BigEndian.AppendUint64(nil, gen), castagnoli)
}

// appendFrame appends one frame of log generation gen holding ops to dst.
func appendFrame(dst []byte, gen uint64, ops []op) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	for i := range ops {
		o := &ops[i]
		switch o.kind {
		case opAdd:
			dst = append(dst, recAdd)
			dst = binary.BigEndian.AppendUint64(dst, o.id)
			dst = binary.AppendUvarint(dst, uint64(len(o.val)))
			dst = append(dst, o.val...)
		case opRemove:
			dst = append(dst, recRemove)
			dst = binary.AppendUvarint(dst, uint64(len(o.ids)))
			for _, id := range o.ids {
				dst = binary.BigEndian.AppendUint64(dst, id)
			}
		case opRetries:
			dst = append(dst, recRetries)
			dst = binary.BigEndian.AppendUint64(dst, o.id)
			dst = binary.BigEndian.AppendUint32(dst, o.retries)
		}
	}
	payload := dst[start+frameHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Update(genSeed(gen), castagnoli, payload))
	return dst
}

var errBadRecord = errors.New("malformed record")

// decodeFrame appends the ops of one payload to ops. Values are copied out
// of payload.
func decodeFrame(ops []op, p []byte) ([]op, error) {
	for len(p) > 0 {
		kind := p[0]
		p = p[1:]
		switch kind {
		case recAdd:
			if len(p) < 8 {
				return ops, errBadRecord
			}
			id := binary.BigEndian.Uint64(p)
			l, n := binary.Uvarint(p[8:])
			if n <= 0 || uint64(len(p)-8-n) < l {
				return ops, errBadRecord
			}
			v := p[8+n : 8+n+int(l)]
			ops = append(ops, op{kind: opAdd, id: id, val: bytes.Clone(v)})
			p = p[8+n+int(l):]
		case recRemove:
			cnt, n := binary.Uvarint(p)
			if n <= 0 || uint64(len(p)-n)/8 < cnt {
				return ops, errBadRecord
			}
			ids := make([]uint64, cnt)
			for i := range ids {
				ids[i] = binary.BigEndian.Uint64(p[n+8*i:])
			}
			ops = append(ops, op{kind: opRemove, ids: ids})
			p = p[n+8*int(cnt):]
		case recRetries:
			if len(p) < 12 {
				return ops, errBadRecord
			}
			ops = append(ops, op{kind: opRetries, id: binary.BigEndian.Uint64(p), retries: binary.BigEndian.Uint32(p[8:])})
			p = p[12:]
		default:
			return ops, fmt.Errorf("%w: type %d", errBadRecord, kind)
		}
	}
	return ops, nil
}

// readWAL returns the ops of the log of generation gen, and the offset
// where they end: a torn frame, zeros, or a frame of an older generation
// of a recycled file. A log whose header is not ours, or a frame that
// passes its checksum but does not decode, is an error: that is not a
// crash but another program or version.
func readWAL(path string, gen uint64) (ops []op, end int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, 0, err
	}
	if len(data) < walHeaderSize {
		// Created but its header never reached the disk: nothing in it
		// was acknowledged.
		return nil, 0, nil
	}
	if !bytes.Equal(data[:walHeaderSize-1], walMagic[:walHeaderSize-1]) {
		return nil, 0, errors.New("not a gearproxy write-ahead log")
	}
	if v := data[walHeaderSize-1]; v != walVersion {
		return nil, 0, fmt.Errorf("write-ahead log version %d, this build reads version %d", v, walVersion)
	}
	seed := genSeed(gen)
	p := data[walHeaderSize:]
	for len(p) >= frameHeader {
		l := binary.BigEndian.Uint32(p)
		if l == 0 || uint64(l) > uint64(len(p)-frameHeader) {
			break
		}
		payload := p[frameHeader : frameHeader+int(l)]
		if crc32.Update(seed, castagnoli, payload) != binary.BigEndian.Uint32(p[4:]) {
			break
		}
		if ops, err = decodeFrame(ops, payload); err != nil {
			return nil, 0, fmt.Errorf("frame at offset %d: %w", len(data)-len(p), err)
		}
		p = p[frameHeader+int(l):]
	}
	return ops, int64(len(data) - len(p)), nil
}

// syncDir makes the creation or removal of a file in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// createWAL creates the log of generation gen, its header durable and its
// directory entry too, so that what is written to it can be trusted to be
// found after a crash. The file is filled with zeros to size bytes: a sync
// after overwriting blocks that exist flushes only them, where a sync after
// an append must also journal the new size and blocks (measured here: half
// the time or less). Replay reads the zeros as the end of the log.
func createWAL(dir string, gen uint64, size int64) (*os.File, error) {
	path := walPath(dir, gen)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	_, err = f.Write(walMagic[:])
	zeros := make([]byte, 1<<20)
	for off := int64(walHeaderSize); err == nil && off < size; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros[:min(int64(len(zeros)), size-off)], off)
	}
	if err == nil {
		err = fdatasync(f)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// recycleWAL renames the applied log of generation old to generation gen
// and opens it for writing over.
func recycleWAL(dir string, old, gen uint64) (*os.File, error) {
	path := walPath(dir, gen)
	if err := os.Rename(walPath(dir, old), path); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		if f != nil {
			f.Close()
		}
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// logFile is an open log that nothing is written to yet.
type logFile struct {
	f   *os.File
	gen uint64
}
