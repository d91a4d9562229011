package router

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
)

// MaxHandle is the longest handle a client may be given: libgearman keeps
// handles in a 64-byte buffer with its NUL.
const MaxHandle = 63

// Client-visible handles come in two forms, both derived only from the
// backend's name, the backend's own handle, the user and the optional key,
// so every proxy instance with the same configuration, and the same proxy
// after a restart, gives the same job the same handle:
//
//	P:<tag 6 hex><mac 10 hex>:<backend handle>   embedded, at most 63 bytes
//	P:<tag 6 hex>~<digest 24 hex>                too long to embed: looked up
//
// tag names the backend (the first bytes of SHA-256 of its name); mac is
// the first 5 bytes of SHA-256(key, user, backend name, backend handle). A
// handle therefore cannot be turned into another backend's by editing its
// tag: the mac no longer matches and Decode refuses it. Without a key the
// mac is a checksum anyone can recompute, which still stops accidents (a
// handle from a proxy with another backend list, a gearmand handle such as
// "H:host:1" that every backend issues) and binds a handle to the user it
// was issued to; with handle_key set it is a MAC nobody without the key can
// forge.
const (
	tagLen     = 6
	macLen     = 10
	digestLen  = 24
	embedHead  = 2 + tagLen + macLen + 1 // "P:" tag mac ":"
	maxEmbed   = MaxHandle - embedHead
	lookupSize = 2 + tagLen + 1 + digestLen
)

// Codec turns a backend's job handle into the handle clients see and back.
// It is safe for concurrent use.
type Codec struct {
	key   []byte
	names []string
	tags  []string
	byTag map[string]int
	long  *lru.Cache[string, longHandle]

	fallbacks atomic.Uint64
	// OnFallback, when set before use, is called each time a backend
	// handle too long to embed is first mapped, with the running count:
	// the caller logs it (such handles only work on this proxy).
	OnFallback func(backend int, handle []byte, count uint64)
}

type longHandle struct {
	backend int
	handle  []byte
}

// NewCodec returns a codec for backends named in configuration order; key
// may be empty; cacheSize bounds the map of handles too long to embed.
func NewCodec(names []string, key []byte, cacheSize int) (*Codec, error) {
	if cacheSize <= 0 {
		cacheSize = 1
	}
	long, err := lru.New[string, longHandle](cacheSize)
	if err != nil {
		return nil, err
	}
	c := &Codec{key: append([]byte(nil), key...), names: names, byTag: map[string]int{}, long: long}
	for i, n := range names {
		sum := sha256.Sum256([]byte(n))
		tag := hex.EncodeToString(sum[:])[:tagLen]
		if j, dup := c.byTag[tag]; dup {
			return nil, fmt.Errorf("router: backends %q and %q hash to the same handle tag; rename one", names[j], n)
		}
		c.byTag[tag] = i
		c.tags = append(c.tags, tag)
	}
	return c, nil
}

// Fallbacks counts handles that were too long to embed and went through the
// bounded map (such handles only decode on the proxy that issued them, and
// only while remembered).
func (c *Codec) Fallbacks() uint64 { return c.fallbacks.Load() }

func (c *Codec) sum(user string, backend int, handle []byte) [32]byte {
	// One stack buffer for the common case keeps Encode allocation-free.
	var buf [256]byte
	b := append(buf[:0], c.key...)
	b = append(b, 0)
	b = append(b, user...)
	b = append(b, 0)
	b = append(b, c.names[backend]...)
	b = append(b, 0)
	b = append(b, handle...)
	return sha256.Sum256(b)
}

// Encode appends the client-visible handle of backend's job handle, as
// issued to user.
func (c *Codec) Encode(dst []byte, user string, backend int, handle []byte) []byte {
	sum := c.sum(user, backend, handle)
	dst = append(dst, 'P', ':')
	dst = append(dst, c.tags[backend]...)
	if len(handle) <= maxEmbed {
		dst = hex.AppendEncode(dst, sum[:macLen/2])
		dst = append(dst, ':')
		return append(dst, handle...)
	}
	dst = append(dst, '~')
	start := len(dst)
	dst = hex.AppendEncode(dst, sum[:digestLen/2])
	id := string(dst[start-tagLen-1-2:])
	if _, ok := c.long.Get(id); !ok {
		n := c.fallbacks.Add(1)
		c.long.Add(id, longHandle{backend: backend, handle: append([]byte(nil), handle...)})
		if c.OnFallback != nil {
			c.OnFallback(backend, handle, n)
		}
	}
	return dst
}

// Decode returns the backend and the backend's handle of a client-visible
// handle issued to user. ok is false for anything else: a handle of another
// user, one whose tag was changed, an unknown backend, a forgotten long
// handle, or a string that never was a handle. The returned handle may
// point into h.
func (c *Codec) Decode(user string, h []byte) (backend int, handle []byte, ok bool) {
	if len(h) < 2+tagLen+1 || h[0] != 'P' || h[1] != ':' || len(h) > MaxHandle {
		return -1, nil, false
	}
	backend, ok = c.byTag[string(h[2:2+tagLen])]
	if !ok {
		return -1, nil, false
	}
	if h[2+tagLen] == '~' {
		if len(h) != lookupSize {
			return -1, nil, false
		}
		e, found := c.long.Get(string(h))
		if !found || e.backend != backend {
			return -1, nil, false
		}
		sum := c.sum(user, backend, e.handle)
		if hex.EncodeToString(sum[:digestLen/2]) != string(h[2+tagLen+1:]) {
			return -1, nil, false
		}
		return backend, e.handle, true
	}
	if len(h) < embedHead || h[embedHead-1] != ':' {
		return -1, nil, false
	}
	handle = h[embedHead:]
	sum := c.sum(user, backend, handle)
	var mac [macLen]byte
	hex.Encode(mac[:], sum[:macLen/2])
	if string(mac[:]) != string(h[2+tagLen:2+tagLen+macLen]) {
		return -1, nil, false
	}
	return backend, handle, true
}

// Backend returns the name of backend i.
func (c *Codec) Backend(i int) string { return c.names[i] }
