package proxy

import (
	"fmt"
	"slices"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/router"
)

// topology is the backends as one value: their pools, the router that
// spreads jobs over them and the codec of client handles. A reload that
// adds backends replaces it whole. It only grows: an index, once given to
// a backend, means that backend for the life of the process, so a handle
// or a routing decision taken on an older topology stays valid on a newer
// one.
type topology struct {
	pools    []*pool
	router   *router.Router
	codec    *router.Codec
	backends []Backend
}

func (s *Server) pools() []*pool         { return s.topo.Load().pools }
func (s *Server) router() *router.Router { return s.topo.Load().router }
func (s *Server) codec() *router.Codec   { return s.topo.Load().codec }

// maxBackends is what the healthy set (a router.Set bitmask) can hold.
const maxBackends = 64

// AddBackends adds job servers while the proxy runs. Rendezvous hashing
// moves only the keys that now prefer a new backend (about n/(N+n) of
// them); jobs already queued or running stay where they are and finish
// there, since workers keep their links to every backend. Handles issued
// before stay valid. Backends cannot be removed or changed live.
func (s *Server) AddBackends(add []Backend) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	old := s.topo.Load()
	backends := append(slices.Clip(old.backends), add...)
	if len(backends) > maxBackends {
		return fmt.Errorf("proxy: %d backends: at most %d", len(backends), maxBackends)
	}
	members := make([]router.Member, len(backends))
	names := make([]string, len(backends))
	for i, b := range backends {
		members[i] = router.Member{Name: b.Name, Weight: b.Weight}
		names[i] = b.Name
	}
	r, err := router.New(members)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	codec, err := router.NewCodec(names, s.opts.HandleKey, s.opts.HandleCache)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	// The long-handle map of the old codec is not carried over: handles
	// too long to embed that were issued before stop decoding, as after
	// a restart. Bundled backends and gearmand use short handles.
	codec.OnFallback = old.codec.OnFallback
	pools := slices.Clip(old.pools)
	var started []*pool
	for k, bc := range add {
		p := &pool{srv: s, index: len(old.pools) + k, jobs: map[string]*job{}, pending: map[string]*job{}}
		b, err := backend.New(backend.Options{
			Name: bc.Name, Dial: bc.Dial, Links: bc.Links,
			HealthInterval: s.opts.HealthInterval, HealthTimeout: s.opts.HealthTimeout,
			DialTimeout: s.opts.DialTimeout, MaxBackoff: s.opts.MaxBackoff,
			MaxData: s.opts.MaxData, Logger: s.opts.Logger,
			OnWork: p.work, OnState: p.state,
		})
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		p.b = b
		pools = append(pools, p)
		started = append(started, p)
	}
	s.topo.Store(&topology{pools: pools, router: r, codec: codec, backends: backends})
	for _, p := range started {
		p.b.Start()
	}
	return nil
}

// grow makes room in the worker's per-backend arrays for backend i (under
// the session lock).
func (w *worker) grow(i int) {
	for len(w.links) <= i {
		w.links = append(w.links, nil)
		w.echoes = append(w.echoes, nil)
		w.held = append(w.held, nil)
	}
}
