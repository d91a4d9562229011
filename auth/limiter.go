package auth

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// failureBudget counts authentication failures per source address. A
// source that spends its budget is refused without its credentials being
// looked at until it has been quiet for the window, so one address cannot
// guess passwords faster than budget/window however many connections it
// opens. The table is an LRU with expiring entries: bounded memory under a
// flood of sources, and old entries cost nothing.
type failureBudget struct {
	budget int
	mu     sync.Mutex // makes read-increment-write of one counter atomic
	table  *expirable.LRU[string, int]
}

func newFailureBudget(budget, size int, window time.Duration) *failureBudget {
	return &failureBudget{budget: budget, table: expirable.NewLRU[string, int](size, nil, window)}
}

// exhausted reports whether key has no failures left.
func (b *failureBudget) exhausted(key string) bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, _ := b.table.Peek(key)
	return n >= b.budget
}

// fail spends one failure of key's budget. Adding again restarts the
// entry's expiry, so the window runs from the last failure.
func (b *failureBudget) fail(key string) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n, _ := b.table.Peek(key)
	b.table.Add(key, n+1)
}

// sourceKey is the budget key for a peer address: the IP without its port,
// and for IPv6 the /64, since one host commonly holds a whole /64 and could
// otherwise rotate through it.
func sourceKey(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	s := addr.String()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil {
			ap = netip.AddrPortFrom(a, 0)
		} else {
			return s // a pipe or unix socket: one key for all
		}
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
