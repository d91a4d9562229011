package jobserver

// jobTable finds a job by its number. Numbers are handed out in order,
// so jobs live in pages of consecutive numbers: 8 bytes per slot instead
// of a hash map entry per job, and a page is freed once its last job
// ends (a single old job keeps only its own page alive).
type jobTable struct {
	pages map[uint64]*jobPage
	n     int
}

const pageBits = 10

type jobPage struct {
	slots [1 << pageBits]*job
	used  int
}

func (t *jobTable) get(id uint64) *job {
	p := t.pages[id>>pageBits]
	if p == nil {
		return nil
	}
	return p.slots[id&(1<<pageBits-1)]
}

func (t *jobTable) put(j *job) {
	if t.pages == nil {
		t.pages = make(map[uint64]*jobPage)
	}
	p := t.pages[j.id>>pageBits]
	if p == nil {
		p = new(jobPage)
		t.pages[j.id>>pageBits] = p
	}
	slot := &p.slots[j.id&(1<<pageBits-1)]
	if *slot == nil {
		p.used++
		t.n++
	}
	*slot = j
}

func (t *jobTable) del(id uint64) {
	p := t.pages[id>>pageBits]
	if p == nil {
		return
	}
	slot := &p.slots[id&(1<<pageBits-1)]
	if *slot == nil {
		return
	}
	*slot = nil
	t.n--
	if p.used--; p.used == 0 {
		delete(t.pages, id>>pageBits)
	}
}

func (t *jobTable) len() int { return t.n }

// each calls fn for every job, in no particular order.
func (t *jobTable) each(fn func(*job)) {
	for _, p := range t.pages {
		for _, j := range p.slots {
			if j != nil {
				fn(j)
			}
		}
	}
}
