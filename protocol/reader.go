package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

const (
	// HeaderSize is the size of a binary packet header: magic, type, size.
	HeaderSize = 12
	// DefaultMaxData is the default cap on a packet's declared size.
	DefaultMaxData = 64 << 20
	// MaxArg caps every NUL-terminated argument and every admin text line.
	// gearmand drops the connection past it; we say why first.
	MaxArg = 8 << 10
	// MaxTextTokens is the most tokens an admin line may have (gearmand's
	// TEXT command takes 5 arguments and closes the connection on more).
	MaxTextTokens = 5
	// readBufferSize is the bufio size for a connection: large enough to
	// batch many small packets per read syscall.
	readBufferSize = 64 << 10
	// keepBody is the largest body buffer a Reader keeps between packets;
	// a larger one is dropped so that one big job does not pin memory for
	// the life of an idle connection.
	keepBody = 1 << 20
)

// Error kinds a Reader returns, wrapped in a *FrameError; test with
// errors.Is.
var (
	ErrInvalidMagic   = errors.New("invalid magic")
	ErrUnknownType    = errors.New("unknown packet type")
	ErrTooLarge       = errors.New("packet too large")
	ErrArgTooLarge    = errors.New("argument too large")
	ErrMalformed      = errors.New("malformed packet")
	ErrLineTooLong    = errors.New("text line too long")
	ErrTooManyTokens  = errors.New("too many tokens in text line")
	ErrTextNotAllowed = errors.New("text line where a binary packet was expected")
)

// FrameError is a framing or validation failure. Code is the ERROR code a
// server sends back for it (as gearmand names them). When Synced is true the
// whole offending frame was consumed and the stream may continue; otherwise
// the connection cannot be trusted to be at a packet boundary and must close.
type FrameError struct {
	Kind   error
	Code   string
	Type   Type
	Detail string
	Synced bool
}

func (e *FrameError) Error() string {
	if e.Detail == "" {
		return e.Kind.Error()
	}
	return e.Kind.Error() + ": " + e.Detail
}

func (e *FrameError) Unwrap() error { return e.Kind }

// ReaderOptions configure a Reader.
type ReaderOptions struct {
	// Expect is the magic every packet must carry: Req on a server, Res on
	// a client.
	Expect Magic
	// MaxData caps a packet's declared size. Zero means DefaultMaxData.
	MaxData int
	// Text accepts admin text lines between binary packets (a server).
	Text bool
	// BufferSize is the read buffer's size; zero means 64 KiB, which
	// batches many small packets per read from a socket. A source that
	// never waits (a Feed) needs no more than the longest admin line:
	// MinBufferSize.
	BufferSize int
}

// MinBufferSize is the smallest ReaderOptions.BufferSize: an admin text
// line must fit in the buffer whole.
const MinBufferSize = 16 << 10

// Reader reads Gearman packets and admin text lines from a stream and
// validates their framing before anything else looks at them.
type Reader struct {
	br   *bufio.Reader
	opts ReaderOptions
	hdr  [HeaderSize]byte
	body []byte
	args [][]byte
}

// NewReader returns a Reader with a 64 KiB buffer over r.
func NewReader(r io.Reader, opts ReaderOptions) *Reader {
	if opts.MaxData <= 0 {
		opts.MaxData = DefaultMaxData
	}
	if opts.Expect == 0 {
		opts.Expect = Req
	}
	size := opts.BufferSize
	if size == 0 {
		size = readBufferSize
	}
	size = max(size, MinBufferSize)
	return &Reader{br: bufio.NewReaderSize(r, size), opts: opts, args: make([][]byte, 0, 8)}
}

// Feed is a Reader's source for bytes that arrive in whole packets, as
// from an in-process connection: set B, then Read while B is not empty or
// the Reader has something buffered; a Read never waits on it, and it
// reports io.EOF when empty.
type Feed struct{ B []byte }

func (f *Feed) Read(p []byte) (int, error) {
	if len(f.B) == 0 {
		return 0, io.EOF
	}
	n := copy(p, f.B)
	f.B = f.B[n:]
	return n, nil
}

// FeedReaders lends Readers over Feeds to connections that are handed
// whole packets (in-process ones). A connection holds one only while it
// reads what it was handed, so an idle connection holds no read buffer:
// a proxy's worker sessions have two such connections per bundled
// backend.
type FeedReaders struct {
	opts ReaderOptions
	pool sync.Pool
}

// NewFeedReaders returns FeedReaders whose Readers take opts, with a
// MinBufferSize buffer unless opts says otherwise.
func NewFeedReaders(opts ReaderOptions) *FeedReaders {
	if opts.BufferSize == 0 {
		opts.BufferSize = MinBufferSize
	}
	return &FeedReaders{opts: opts}
}

// FeedReader reads the packets of the bytes it was lent for.
type FeedReader struct {
	feed Feed
	r    *Reader
}

// Get lends a FeedReader over b, which holds whole packets.
func (f *FeedReaders) Get(b []byte) *FeedReader {
	fr, _ := f.pool.Get().(*FeedReader)
	if fr == nil {
		fr = &FeedReader{}
		fr.r = NewReader(&fr.feed, f.opts)
	}
	fr.feed.B = b
	return fr
}

// Put takes a FeedReader back; one with bytes left (it stopped at an
// error) is dropped rather than lent again.
func (f *FeedReaders) Put(fr *FeedReader) {
	if fr.More() {
		return
	}
	fr.feed.B = nil
	f.pool.Put(fr)
}

// More reports whether packets are left to Read.
func (fr *FeedReader) More() bool { return len(fr.feed.B) > 0 || fr.r.Buffered() > 0 }

// Read reads the next packet (see Reader.Read).
func (fr *FeedReader) Read(p *Packet) error { return fr.r.Read(p) }

// Buffered returns how many bytes are already read from the stream but not
// yet returned, so a caller can tell whether more packets are pending before
// it flushes its replies.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Read reads the next packet or text line into p. The slices in p stay valid
// until the next call to Read. io.EOF is returned only at a packet boundary;
// a stream cut inside a packet gives io.ErrUnexpectedEOF.
func (r *Reader) Read(p *Packet) error {
	first, err := r.br.Peek(1)
	if err != nil {
		return err
	}
	if first[0] != 0 {
		if !r.opts.Text {
			return &FrameError{Kind: ErrTextNotAllowed, Code: "INVALID_MAGIC", Detail: fmt.Sprintf("first byte 0x%02x", first[0])}
		}
		return r.readText(p)
	}
	if _, err := io.ReadFull(r.br, r.hdr[:]); err != nil {
		return unexpected(err)
	}
	magic := Magic(binary.BigEndian.Uint32(r.hdr[0:4]))
	typ := Type(binary.BigEndian.Uint32(r.hdr[4:8]))
	size := binary.BigEndian.Uint32(r.hdr[8:12])
	if magic != r.opts.Expect {
		return &FrameError{Kind: ErrInvalidMagic, Code: "INVALID_MAGIC", Type: typ,
			Detail: fmt.Sprintf("got %s, want %s", magic, r.opts.Expect)}
	}
	spec, ok := typ.Lookup()
	if !ok {
		return &FrameError{Kind: ErrUnknownType, Code: "INVALID_COMMAND", Type: typ,
			Detail: fmt.Sprintf("type %d", uint32(typ))}
	}
	if uint64(size) > uint64(r.opts.MaxData) {
		return &FrameError{Kind: ErrTooLarge, Code: "ARGUMENT_TOO_LARGE", Type: typ,
			Detail: fmt.Sprintf("%s declares %d bytes, limit %d", typ, size, r.opts.MaxData)}
	}
	body, err := r.readBody(int(size))
	if err != nil {
		return unexpected(err)
	}
	p.Magic, p.Type = magic, typ
	p.Args, err = splitArgs(r.args[:0], body, spec)
	if p.Args != nil {
		r.args = p.Args
	}
	if err != nil {
		p.Args = p.Args[:0]
		var fe *FrameError
		if errors.As(err, &fe) {
			fe.Type = typ
		}
		return err
	}
	return nil
}

func (r *Reader) readBody(n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	if cap(r.body) > keepBody {
		r.body = nil
	}
	if cap(r.body) < n {
		// Grow with the data we actually receive, not with what the
		// header claims: a peer that declares 64 MiB and sends nothing
		// must not make us allocate 64 MiB up front.
		if n > readBufferSize*4 {
			return readGrowing(r.br, n)
		}
		r.body = make([]byte, n)
	}
	b := r.body[:n]
	_, err := io.ReadFull(r.br, b)
	return b, err
}

// readGrowing reads n bytes into a buffer that grows as data arrives.
func readGrowing(br *bufio.Reader, n int) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(readBufferSize * 4)
	if _, err := io.CopyN(&buf, br, int64(n)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// splitArgs cuts body into the fields spec describes, checking that every
// NUL terminator lies inside the declared size.
func splitArgs(dst [][]byte, body []byte, spec Spec) ([][]byte, error) {
	nul := spec.Args
	if !spec.Opaque && nul > 0 {
		nul-- // the last field runs to the end
	}
	rest := body
	for i := 0; i < nul; i++ {
		j := bytes.IndexByte(rest, 0)
		if j < 0 {
			if len(rest) > MaxArg {
				return dst, &FrameError{Kind: ErrArgTooLarge, Code: "ARGUMENT_TOO_LARGE", Synced: true,
					Detail: fmt.Sprintf("argument %d is over %d bytes", i+1, MaxArg)}
			}
			return dst, &FrameError{Kind: ErrMalformed, Code: "INVALID_PACKET", Synced: true,
				Detail: fmt.Sprintf("%s needs %d arguments, argument %d has no terminating NUL", spec.Name, spec.Fields(), i+1)}
		}
		if j > MaxArg {
			return dst, &FrameError{Kind: ErrArgTooLarge, Code: "ARGUMENT_TOO_LARGE", Synced: true,
				Detail: fmt.Sprintf("argument %d is %d bytes, limit %d", i+1, j, MaxArg)}
		}
		dst = append(dst, rest[:j:j])
		rest = rest[j+1:]
	}
	switch {
	case spec.Opaque:
		dst = append(dst, rest)
	case spec.Args > 0:
		// gearmand sends WORK_FAIL as "handle\0" to clients without the
		// exceptions option, and some clients NUL-terminate every
		// argument: one trailing NUL is dropped. Any other NUL in a field
		// that is not opaque data is a framing error.
		if n := len(rest); n > 0 && rest[n-1] == 0 {
			rest = rest[:n-1]
		}
		if bytes.IndexByte(rest, 0) >= 0 {
			return dst, &FrameError{Kind: ErrMalformed, Code: "INVALID_PACKET", Synced: true,
				Detail: fmt.Sprintf("%s has more arguments than %d", spec.Name, spec.Args)}
		}
		if len(rest) > MaxArg {
			return dst, &FrameError{Kind: ErrArgTooLarge, Code: "ARGUMENT_TOO_LARGE", Synced: true,
				Detail: fmt.Sprintf("argument %d is %d bytes, limit %d", spec.Args, len(rest), MaxArg)}
		}
		dst = append(dst, rest)
	default:
		// Types without arguments: gearmand ignores a body; so do we,
		// since the frame is intact.
	}
	return dst, nil
}

func (r *Reader) readText(p *Packet) error {
	line, err := r.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull || len(line) > MaxArg+1 {
		return &FrameError{Kind: ErrLineTooLong, Code: "ARGUMENT_TOO_LARGE",
			Detail: fmt.Sprintf("over %d bytes", MaxArg)}
	}
	if err != nil {
		return unexpected(err)
	}
	toks, err := SplitLine(r.args[:0], line)
	if toks != nil {
		r.args = toks
	}
	if err != nil {
		return err
	}
	p.Magic, p.Type, p.Args = 0, Text, toks
	return nil
}

// SplitLine splits an admin text line into its tokens the way gearmand does:
// the line ends at "\n" with one "\r" before it removed, tokens are
// separated by spaces, and more than MaxTextTokens closes the connection.
// The tokens point into line.
func SplitLine(dst [][]byte, line []byte) ([][]byte, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if len(line) > MaxArg {
		return dst, &FrameError{Kind: ErrLineTooLong, Code: "ARGUMENT_TOO_LARGE", Detail: fmt.Sprintf("over %d bytes", MaxArg)}
	}
	for len(line) > 0 {
		i := bytes.IndexByte(line, ' ')
		var tok []byte
		if i < 0 {
			tok, line = line, nil
		} else {
			tok, line = line[:i], line[i+1:]
		}
		if len(tok) == 0 {
			continue
		}
		if len(dst) == MaxTextTokens {
			return dst, &FrameError{Kind: ErrTooManyTokens, Code: "ARGUMENT_TOO_LARGE",
				Detail: fmt.Sprintf("more than %d tokens", MaxTextTokens)}
		}
		dst = append(dst, tok)
	}
	return dst, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
