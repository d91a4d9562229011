package connect

import (
	"encoding/binary"
	"errors"
	"io"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// CodeUpstreamUnavailable is the ERROR code a local client gets when the
// upstream could not be reached or its certificate not verified. A refused
// authentication passes the server's own code on (AUTH_FAILED, ...).
const CodeUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"

// refuse ends a local connection whose upstream failed: the cause is
// logged (once per FailureWindow), and the first request that expects a
// reply is answered with it, waiting ErrorGrace for that request if it has
// not arrived yet. A request with no reply of its own (CAN_DO,
// SET_CLIENT_ID, ...) is skipped, so the ERROR is in the reply order
// libgearman relies on: PHP's addServer, whose OPTION_REQ exceptions gets
// it, throws with the text.
func (s *Sidecar) refuse(r *relay, pending []byte, localErr error, cause error) {
	code, text := CodeUpstreamUnavailable, "gearproxy connect: "+cause.Error()
	var ae *client.AuthError
	if errors.As(cause, &ae) {
		code = ae.Code
	}
	if errors.Is(cause, ErrSidecarClosed) {
		text = "gearproxy connect: shutting down"
	} else {
		s.failures.failed(cause.Error())
	}
	s.log.Debug("local connection refused", "conn", r.id, "local", r.local.RemoteAddr().String(), "cause", cause)
	slot, complete := replySlot(pending)
	if localErr == nil && !complete {
		pending, slot = s.awaitRequest(r, pending)
	}
	var reply []byte
	switch slot {
	case slotBinary:
		reply = protocol.AppendError(nil, code, text)
	case slotText:
		reply = protocol.AppendTextError(nil, code, text)
	default:
		return
	}
	r.local.SetWriteDeadline(time.Now().Add(s.cfg.ErrorGrace))
	if _, err := r.local.Write(reply); err != nil {
		return
	}
	// Half-close and drain what the client still sends: closing with
	// unread input would send a reset that can discard the ERROR before
	// the client reads it.
	closeWrite(r.local)
	r.local.SetReadDeadline(time.Now().Add(s.cfg.ErrorGrace))
	io.Copy(io.Discard, io.LimitReader(r.local, 1<<20))
}

// awaitRequest reads on until the first request that expects a reply has
// arrived, the peer closes, ErrorGrace passes or maxEarly bytes are held.
func (s *Sidecar) awaitRequest(r *relay, pending []byte) ([]byte, replyKind) {
	r.local.SetReadDeadline(time.Now().Add(s.cfg.ErrorGrace))
	defer r.local.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for len(pending) < maxEarly {
		n, err := r.local.Read(buf)
		pending = append(pending, buf[:n]...)
		if slot, complete := replySlot(pending); complete {
			return pending, slot
		}
		if err != nil {
			break
		}
	}
	return pending, slotNone
}

type replyKind int

const (
	slotNone   replyKind = iota // nothing to answer: just close
	slotBinary                  // a binary request: answer an ERROR packet
	slotText                    // an admin line: answer an ERR line
)

// noReply reports the requests gearmand never answers by themselves; an
// ERROR after them still pairs with the next request.
func noReply(t protocol.Type) bool {
	switch t {
	case protocol.CanDo, protocol.CantDo, protocol.ResetAbilities, protocol.CanDoTimeout,
		protocol.SetClientID, protocol.PreSleep,
		protocol.WorkStatus, protocol.WorkComplete, protocol.WorkFail, protocol.WorkException,
		protocol.WorkData, protocol.WorkWarning:
		return true
	}
	return false
}

// replySlot scans the local peer's first bytes for the first request that
// expects a reply. complete is false when more bytes are needed to know.
// Anything that is not a request (a bad magic) gets no answer.
func replySlot(b []byte) (replyKind, bool) {
	for len(b) > 0 {
		if b[0] != 0 {
			for _, c := range b {
				if c == '\n' {
					return slotText, true
				}
			}
			return slotNone, false
		}
		if len(b) < protocol.HeaderSize {
			return slotNone, false
		}
		if protocol.Magic(binary.BigEndian.Uint32(b)) != protocol.Req {
			return slotNone, true
		}
		typ := protocol.Type(binary.BigEndian.Uint32(b[4:]))
		if !noReply(typ) {
			return slotBinary, true
		}
		size := int(binary.BigEndian.Uint32(b[8:]))
		if size > len(b)-protocol.HeaderSize {
			return slotNone, false
		}
		b = b[protocol.HeaderSize+size:]
	}
	return slotNone, false
}
