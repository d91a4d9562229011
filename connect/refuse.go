package connect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// CodeUpstreamUnavailable is the ERROR code a local client gets when the
// upstream could not be reached or its certificate not verified. A refused
// authentication passes the server's own code on (AUTH_FAILED, ...).
const CodeUpstreamUnavailable = "UPSTREAM_UNAVAILABLE"

// maxErrorText keeps the ERROR text well inside libgearman's 2048-byte
// error buffer (an x509 error with its candidate chain can be long).
const maxErrorText = 1024

// refuse ends a local connection whose upstream failed: the cause is
// logged (once per FailureWindow), and the first request that expects a
// reply is answered with it, waiting ErrorGrace for that request if it has
// not arrived yet. A request with no reply of its own (CAN_DO,
// SET_CLIENT_ID, ...) is skipped, so the ERROR is in the reply order
// libgearman relies on.
//
// OPTION_REQ exceptions is answered OPTION_RES, as any gearmand would:
// libgearman turns an ERROR to it into "Failed to set exception option"
// (GEARMAN_INVALID_SERVER_OPTION) and drops the text, whereas an ERROR in
// place of the next request's reply reaches the PHP user as the cause.
func (s *Sidecar) refuse(r *relay, pending []byte, localErr error, cause error) {
	code, text := CodeUpstreamUnavailable, "gearproxy connect: "+cause.Error()
	var ae *client.AuthError
	if errors.As(cause, &ae) {
		code = ae.Code
	}
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	if errors.Is(cause, ErrSidecarClosed) {
		text = "gearproxy connect: shutting down"
	} else {
		s.failures.failed("upstream failed: local connections are refused", cause.Error())
	}
	s.log.Debug("local connection refused", "conn", r.id, "local", r.local.RemoteAddr().String(), "cause", cause)
	if localErr == nil {
		r.local.SetReadDeadline(time.Now().Add(s.cfg.ErrorGrace))
	}
	r.local.SetWriteDeadline(time.Now().Add(s.cfg.ErrorGrace))
	buf := make([]byte, 4096)
	for {
		req := findRequest(pending)
		if !req.complete {
			if localErr != nil || len(pending) >= maxEarly {
				return
			}
			n, err := r.local.Read(buf)
			pending = append(pending, buf[:n]...)
			localErr = err
			continue
		}
		var reply []byte
		switch {
		case req.kind == slotText:
			reply = protocol.AppendTextError(nil, code, text)
		case req.kind == slotBinary && req.typ == protocol.OptionReq && strings.EqualFold(string(req.arg), "exceptions"):
			if _, err := r.local.Write(protocol.AppendPacket(nil, protocol.Res, protocol.OptionRes, req.arg)); err != nil {
				return
			}
			pending = pending[req.end:]
			continue
		case req.kind == slotBinary:
			reply = protocol.AppendError(nil, code, text)
		default:
			return
		}
		if _, err := r.local.Write(reply); err != nil {
			return
		}
		break
	}
	// Half-close and drain what the client still sends: closing with
	// unread input would send a reset that can discard the ERROR before
	// the client reads it.
	closeWrite(r.local)
	r.local.SetReadDeadline(time.Now().Add(s.cfg.ErrorGrace))
	io.Copy(io.Discard, io.LimitReader(r.local, 1<<20))
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

// request is the first request in the local peer's first bytes that
// expects a reply.
type request struct {
	kind     replyKind
	typ      protocol.Type
	arg      []byte // a binary request's data
	end      int    // offset just past it
	complete bool   // false: more bytes are needed to know
}

// findRequest scans b for the first request that expects a reply. Anything
// that is not a request (a bad magic) is complete with kind slotNone: it
// gets no answer.
func findRequest(b []byte) request {
	off := 0
	for off < len(b) {
		rest := b[off:]
		if rest[0] != 0 {
			if i := bytes.IndexByte(rest, '\n'); i >= 0 {
				return request{kind: slotText, end: off + i + 1, complete: true}
			}
			return request{}
		}
		if len(rest) < protocol.HeaderSize {
			return request{}
		}
		if protocol.Magic(binary.BigEndian.Uint32(rest)) != protocol.Req {
			return request{complete: true}
		}
		typ := protocol.Type(binary.BigEndian.Uint32(rest[4:]))
		size := int(binary.BigEndian.Uint32(rest[8:]))
		if size > len(rest)-protocol.HeaderSize {
			if noReply(typ) || typ == protocol.OptionReq {
				// Its end (or its argument) is needed.
				return request{}
			}
			return request{kind: slotBinary, typ: typ, complete: true}
		}
		end := off + protocol.HeaderSize + size
		if !noReply(typ) {
			return request{kind: slotBinary, typ: typ, arg: rest[protocol.HeaderSize : protocol.HeaderSize+size], end: end, complete: true}
		}
		off = end
	}
	return request{}
}
