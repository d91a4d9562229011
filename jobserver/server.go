package jobserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// Options configure a Server. The zero value is a working in-memory server.
type Options struct {
	// HandlePrefix starts every job handle; handles are
	// "<prefix>:<counter>" like gearmand's. Default "H:<hostname>".
	HandlePrefix string
	// JobRetries drops a job, with WORK_FAIL to its clients, after this
	// many workers disconnected or timed out while holding it. 0 means
	// unlimited, gearmand's default (-j N).
	JobRetries int
	// MaxPacket caps a packet's declared size. 0 means
	// protocol.DefaultMaxData.
	MaxPacket int
	// MaxConnections refuses connections beyond this many at once. 0 means
	// unlimited.
	MaxConnections int
	// IdleTimeout closes a connection that sends no packet at all within
	// this time after connecting. 0 disables it.
	IdleTimeout time.Duration
	// OutboxLimit is how many unsent bytes a connection may have queued
	// before the server cuts it off as not reading. 0 means 32 MiB.
	OutboxLimit int
	// AllowShutdown enables the admin command "shutdown [graceful]".
	AllowShutdown bool
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// Store keeps background jobs durable; nil keeps them in memory only.
	Store store.Store
	// Now is the clock for epoch and SCHED jobs; nil means time.Now.
	Now func() time.Time
}

const defaultOutboxLimit = 32 << 20

// maxUnique is the longest unique ID accepted. libgearman's buffer is 64
// bytes with its NUL; gearmand truncates a 64-byte unique silently, we
// reject it.
const maxUnique = 63

// maxReducer is the longest reducer name gearmand accepts.
const maxReducer = 64

// maxPersistInFlight bounds how many durable submits one connection may
// have waiting on the store; its reader pauses beyond that.
const maxPersistInFlight = 512

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("jobserver: server closed")

// Server is the bundled job server. Its state lives behind one mutex that
// is never held across I/O: replies are appended to each connection's
// bounded Outbox, whose own goroutine writes them.
type Server struct {
	opts Options
	// feeds lends direct connections their packet readers.
	feeds  *protocol.FeedReaders
	log    *slog.Logger
	prefix string
	store  store.Store
	now    func() time.Time

	mu        sync.Mutex
	nextID    uint64
	jobs      jobTable
	funcs     map[string]*function
	conns     *conn // newest first
	nconns    int
	connSeq   uint64
	delayed   delayHeap
	delayT    *time.Timer
	listeners map[net.Listener]struct{}
	closing   bool
	graceful  bool // "shutdown graceful": exit once no job is left
	scratch   []byte

	connWG    sync.WaitGroup
	persistWG sync.WaitGroup
	closeOnce sync.Once
	done      chan struct{} // closed when Close starts
	finished  chan struct{} // closed when Close has finished
	noJobs    chan struct{} // signalled when graceful and the last job ends
	closeErr  error
}

// New returns a Server; with a Store it loads every stored job first.
func New(opts Options) (*Server, error) {
	if opts.JobRetries < 0 {
		return nil, fmt.Errorf("jobserver: JobRetries %d is negative", opts.JobRetries)
	}
	if opts.MaxPacket <= 0 {
		opts.MaxPacket = protocol.DefaultMaxData
	}
	if opts.OutboxLimit <= 0 {
		opts.OutboxLimit = defaultOutboxLimit
	}
	// A handle must fit libgearman's 64-byte buffer with a 20-digit
	// counter, ':' and NUL.
	const maxPrefix = 63 - 21
	if opts.HandlePrefix == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
		opts.HandlePrefix = "H:" + host
		if len(opts.HandlePrefix) > maxPrefix {
			opts.HandlePrefix = opts.HandlePrefix[:maxPrefix]
		}
	}
	if len(opts.HandlePrefix) > maxPrefix {
		return nil, fmt.Errorf("jobserver: handle prefix %q is over %d bytes", opts.HandlePrefix, maxPrefix)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:      opts,
		feeds:     protocol.NewFeedReaders(protocol.ReaderOptions{Expect: protocol.Req, MaxData: opts.MaxPacket, Text: true}),
		log:       opts.Logger,
		prefix:    opts.HandlePrefix,
		store:     opts.Store,
		now:       opts.Now,
		nextID:    1,
		funcs:     make(map[string]*function),
		listeners: make(map[net.Listener]struct{}),
		done:      make(chan struct{}),
		finished:  make(chan struct{}),
		noJobs:    make(chan struct{}, 1),
	}
	if s.store != nil {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Serve accepts connections on l until Shutdown or Close and serves each
// in its own goroutine. It always returns a non-nil error; after Shutdown
// or Close, ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing || s.graceful {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			// Accept fails temporarily when the process runs out of file
			// descriptors; keep serving the connections we have.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "delay", backoff)
				select {
				case <-time.After(backoff):
				case <-s.done:
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		backoff = 0
		s.connWG.Add(1)
		go func() {
			defer s.connWG.Done()
			s.serveConn(nc)
		}()
	}
}

// ServeConn serves one connection until it closes and returns then. The
// proxy uses it with backend.Pipe for in-process backends, whose buffered
// writes let the reader write its replies itself as on a socket (see
// protocol.InlineSafe); over net.Pipe they go through the writer goroutine,
// so a peer that writes before it reads cannot hold the reader.
func (s *Server) ServeConn(nc net.Conn) {
	s.connWG.Add(1)
	defer s.connWG.Done()
	s.serveConn(nc)
}

// isClosing reports whether Close or Shutdown has begun: listeners are
// closed on purpose then.
func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing || s.graceful
}

// Shutdown stops accepting connections and waits until the server holds
// no job at all (gearmand's "shutdown graceful"), or until ctx ends; then
// it closes every connection as Close does.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.graceful = true
	for l := range s.listeners {
		l.Close()
	}
	empty := s.jobs.len() == 0
	s.mu.Unlock()
	if !empty {
		select {
		case <-s.noJobs:
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-s.done:
		}
	}
	return s.Close()
}

// Close closes listeners and connections at once, waits for every
// connection goroutine and pending store write, and closes the Store.
// Jobs still queued in memory are lost; stored ones stay in the Store.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		for l := range s.listeners {
			l.Close()
		}
		// Wake every reader; each connection then flushes what is queued
		// for it (such as the OK of an admin "shutdown") and closes.
		for c := s.conns; c != nil; c = c.next {
			if c.direct != nil {
				// No reader to wake: end it as its reader would
				// (it takes s.mu, held here).
				go c.direct.Close()
				continue
			}
			c.nc.SetReadDeadline(time.Unix(1, 0))
		}
		if s.delayT != nil {
			s.delayT.Stop()
		}
		s.mu.Unlock()
		close(s.done)
		s.connWG.Wait()
		s.persistWG.Wait()
		s.mu.Lock()
		s.jobs.each(func(j *job) {
			if j.ext != nil && j.ext.timer != nil {
				j.ext.timer.Stop()
			}
		})
		s.mu.Unlock()
		if s.store != nil {
			s.closeErr = s.store.Close()
		}
		close(s.finished)
	})
	<-s.finished
	return s.closeErr
}

// Done is closed once the server has closed, by Close, Shutdown or the
// admin command "shutdown".
func (s *Server) Done() <-chan struct{} { return s.finished }

// Handle returns the handle the server gives job number id.
func (s *Server) Handle(id uint64) string { return string(appendHandle(nil, s.prefix, id)) }
