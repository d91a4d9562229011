package test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// With [log] format = "json", each connection logs one line when it opens
// and one when it closes, with its user, listener and the close reason.
func TestOpsLogLines(t *testing.T) {
	t.Parallel()
	p := startOpsProxy(t, bundledBackends(1), "[log]\nformat = \"json\"\nlevel = \"info\"\n")
	c := dialRaw(t, p.Work)
	c.Send(protocol.EchoReq, "hi")
	c.Expect(protocol.EchoRes, "hi")
	c.Close()
	type line struct {
		Msg, User, Listener, Reason string
	}
	var open, closed []line
	for len(closed) == 0 {
		open, closed = nil, nil
		for _, l := range strings.Split(strings.TrimSpace(p.Log()), "\n") {
			var x line
			if err := json.Unmarshal([]byte(l), &x); err != nil {
				t.Fatalf("not a JSON log line: %q: %v", l, err)
			}
			if x.Listener != p.Work {
				continue
			}
			switch x.Msg {
			case "connection open":
				open = append(open, x)
			case "connection closed":
				closed = append(closed, x)
			}
		}
		select {
		case <-p.Exited():
			t.Fatalf("exited:\n%s", p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if len(open) != 1 || len(closed) != 1 {
		t.Fatalf("open %v, closed %v", open, closed)
	}
	if open[0].User != "local" || closed[0].User != "local" || closed[0].Reason != "peer closed" {
		t.Errorf("open %+v, closed %+v", open[0], closed[0])
	}
}
