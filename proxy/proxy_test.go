package proxy

import (
	"fmt"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

func TestRoundTrip(t *testing.T) {
	srv, _, _ := startBundled(t, 2, nil)
	addr := listen(t, srv, "local")
	work(t, addr, "rev")
	c := dial(t, addr)
	for i := range 20 {
		data := fmt.Sprintf("hello%d", i)
		c.send(protocol.SubmitJob, "rev", fmt.Sprintf("u%d", i), data)
		h := c.expect(protocol.JobCreated)[0]
		got := c.expect(protocol.WorkComplete)
		if got[0] != h || got[1] != reverse(data) {
			t.Fatalf("job %d: WORK_COMPLETE %q, want %q %q", i, got, h, reverse(data))
		}
	}
}
