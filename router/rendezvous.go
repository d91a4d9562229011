package router

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
)

// Member is one backend as the router sees it: a stable name (the key of
// every hash, so the same name list gives the same decisions on every proxy
// instance and across restarts) and a relative weight.
type Member struct {
	Name   string
	Weight float64
}

// MaxMembers is the most backends a Router takes; Set is a bitmask of them.
const MaxMembers = 64

// Set is a set of backend indexes, bit i for backend i: the healthy ones.
type Set uint64

// Has reports whether backend i is in the set.
func (s Set) Has(i int) bool { return s&(1<<uint(i)) != 0 }

// With returns the set plus backend i.
func (s Set) With(i int) Set { return s | 1<<uint(i) }

// Without returns the set minus backend i.
func (s Set) Without(i int) Set { return s &^ (1 << uint(i)) }

// Len is the number of backends in the set.
func (s Set) Len() int { return bits.OnesCount64(uint64(s)) }

// Router picks the backend of a job by rendezvous (highest random weight)
// hashing: every backend scores the key and the highest healthy score wins.
// Removing a backend moves only its own keys; adding one takes about 1/N of
// everyone's. It is immutable and safe for concurrent use.
type Router struct {
	seeds    []uint64
	weights  []float64
	weighted bool
}

// New returns a router over members, in configuration order; the index of
// a member is how Pick names it.
func New(members []Member) (*Router, error) {
	if len(members) == 0 || len(members) > MaxMembers {
		return nil, fmt.Errorf("router: %d backends, want 1 to %d", len(members), MaxMembers)
	}
	r := &Router{seeds: make([]uint64, len(members)), weights: make([]float64, len(members))}
	seen := map[string]bool{}
	for i, m := range members {
		if m.Name == "" {
			return nil, errors.New("router: backend without a name")
		}
		if seen[m.Name] {
			return nil, fmt.Errorf("router: duplicate backend %q", m.Name)
		}
		seen[m.Name] = true
		w := m.Weight
		if w == 0 {
			w = 1
		}
		if w < 0 || math.IsNaN(w) || math.IsInf(w, 0) {
			return nil, fmt.Errorf("router: backend %q weight %v", m.Name, m.Weight)
		}
		if w != 1 {
			r.weighted = true
		}
		sum := sha256.Sum256([]byte(m.Name))
		r.seeds[i] = binary.BigEndian.Uint64(sum[:8])
		r.weights[i] = w
	}
	return r, nil
}

// Len is the number of backends.
func (r *Router) Len() int { return len(r.seeds) }

// All is the set of every backend.
func (r *Router) All() Set {
	if len(r.seeds) == 64 {
		return ^Set(0)
	}
	return Set(1)<<uint(len(r.seeds)) - 1
}

// Key hashes what identifies a job for coalescing: the function and the
// unique ID, or for the Perl legacy unique "-" the data (gearmand coalesces
// those on identical data). The NUL separators keep ("ab","c") and
// ("a","bc") apart; NUL cannot occur inside a function or unique.
func Key(function, unique, data []byte) uint64 {
	h := uint64(fnvOffset)
	h = fnv(h, function)
	h = fnv(h, []byte{0})
	h = fnv(h, unique)
	if len(unique) == 1 && unique[0] == '-' {
		h = fnv(h, []byte{0})
		h = fnv(h, data)
	}
	return h
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

// mix is splitmix64's finalizer: FNV alone spreads short keys poorly over
// the high bits that decide a rendezvous.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Pick returns the backend in up with the highest score for key, or -1 when
// up is empty.
func (r *Router) Pick(key uint64, up Set) int {
	best, bestScore, bestWeighted := -1, uint64(0), math.Inf(-1)
	for i, seed := range r.seeds {
		if !up.Has(i) {
			continue
		}
		h := mix(key ^ seed)
		if !r.weighted {
			if best < 0 || h > bestScore {
				best, bestScore = i, h
			}
			continue
		}
		// Weighted rendezvous: score = -w / ln(u) with u uniform in
		// (0,1) keeps each backend's share proportional to its weight
		// and still moves the minimum of keys on a change.
		u := (float64(h>>11) + 0.5) / (1 << 53)
		s := -r.weights[i] / math.Log(u)
		if best < 0 || s > bestWeighted {
			best, bestWeighted = i, s
		}
	}
	return best
}

// PickJob routes a job: an empty unique never coalesces, so it goes to the
// least loaded healthy backend (load(i) is backend i's outstanding work,
// divided by its weight). Among equally loaded backends the function's own
// rendezvous order decides, so that jobs of one function without a unique
// stay on one backend, in their order, until it is busier than another.
// Any other unique is hashed.
func (r *Router) PickJob(function, unique, data []byte, up Set, load func(int) int64) int {
	if len(unique) > 0 {
		return r.Pick(Key(function, unique, data), up)
	}
	var least Set
	bestLoad := 0.0
	for i := range r.seeds {
		if !up.Has(i) {
			continue
		}
		l := float64(load(i)) / r.weights[i]
		switch {
		case least == 0 || l < bestLoad:
			least, bestLoad = Set(0).With(i), l
		case l == bestLoad:
			least = least.With(i)
		}
	}
	if least == 0 {
		return -1
	}
	return r.Pick(Key(function, nil, nil), least)
}
