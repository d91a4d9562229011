package protocol

import (
	"fmt"
	"strconv"
)

// Magic is the four-byte code that starts every binary packet. Requests
// travel to the server as "\0REQ", responses come back as "\0RES".
type Magic uint32

const (
	// Req marks a packet sent to a job server.
	Req Magic = 0x00524551 // "\0REQ"
	// Res marks a packet sent by a job server.
	Res Magic = 0x00524553 // "\0RES"
)

func (m Magic) String() string {
	switch m {
	case Req:
		return "REQ"
	case Res:
		return "RES"
	}
	return "0x" + strconv.FormatUint(uint64(m), 16)
}

// Type is a packet type, the second word of the header.
type Type uint32

// Packet types, numbered as on the wire. Text is not a wire type: the Reader
// uses it for an admin text line, as gearmand does internally.
const (
	Text                      Type = 0
	CanDo                     Type = 1
	CantDo                    Type = 2
	ResetAbilities            Type = 3
	PreSleep                  Type = 4
	unused5                   Type = 5
	Noop                      Type = 6
	SubmitJob                 Type = 7
	JobCreated                Type = 8
	GrabJob                   Type = 9
	NoJob                     Type = 10
	JobAssign                 Type = 11
	WorkStatus                Type = 12
	WorkComplete              Type = 13
	WorkFail                  Type = 14
	GetStatus                 Type = 15
	EchoReq                   Type = 16
	EchoRes                   Type = 17
	SubmitJobBg               Type = 18
	Error                     Type = 19
	StatusRes                 Type = 20
	SubmitJobHigh             Type = 21
	SetClientID               Type = 22
	CanDoTimeout              Type = 23
	AllYours                  Type = 24
	WorkException             Type = 25
	OptionReq                 Type = 26
	OptionRes                 Type = 27
	WorkData                  Type = 28
	WorkWarning               Type = 29
	GrabJobUniq               Type = 30
	JobAssignUniq             Type = 31
	SubmitJobHighBg           Type = 32
	SubmitJobLow              Type = 33
	SubmitJobLowBg            Type = 34
	SubmitJobSched            Type = 35
	SubmitJobEpoch            Type = 36
	SubmitReduceJob           Type = 37
	SubmitReduceJobBackground Type = 38
	GrabJobAll                Type = 39
	JobAssignAll              Type = 40
	GetStatusUnique           Type = 41
	StatusResUnique           Type = 42

	// The SASL extension (protocol/SPEC.md).
	SASLMechsReq  Type = 100
	SASLMechsRes  Type = 101
	SASLStart     Type = 102
	SASLStep      Type = 103
	SASLChallenge Type = 104
	SASLOK        Type = 105
)

// Direction says which magic a packet type travels with.
type Direction uint8

const (
	// ToServer types are requests (\0REQ).
	ToServer Direction = 1 << iota
	// ToClient types are responses (\0RES).
	ToClient
)

// Spec describes one packet type: its name, how many arguments it has and
// whether the last one is opaque data that may contain NUL bytes.
//
// With Opaque set, Args NUL-terminated arguments are followed by the data, so
// the packet has Args+1 fields. Without it the packet has Args fields, all but
// the last NUL-terminated and the last running to the end of the packet. This
// is exactly libgearman's command table (libgearman/command.cc).
type Spec struct {
	Name      string
	Args      int
	Opaque    bool
	Direction Direction
}

// Fields is the number of fields a well-formed packet of this type carries.
func (s Spec) Fields() int {
	if s.Opaque {
		return s.Args + 1
	}
	return s.Args
}

var specs = [...]Spec{
	Text:                      {"TEXT", 5, false, ToServer},
	CanDo:                     {"CAN_DO", 1, false, ToServer},
	CantDo:                    {"CANT_DO", 1, false, ToServer},
	ResetAbilities:            {"RESET_ABILITIES", 0, false, ToServer},
	PreSleep:                  {"PRE_SLEEP", 0, false, ToServer},
	unused5:                   {"UNUSED", 0, false, 0},
	Noop:                      {"NOOP", 0, false, ToClient},
	SubmitJob:                 {"SUBMIT_JOB", 2, true, ToServer},
	JobCreated:                {"JOB_CREATED", 1, false, ToClient},
	GrabJob:                   {"GRAB_JOB", 0, false, ToServer},
	NoJob:                     {"NO_JOB", 0, false, ToClient},
	JobAssign:                 {"JOB_ASSIGN", 2, true, ToClient},
	WorkStatus:                {"WORK_STATUS", 3, false, ToServer | ToClient},
	WorkComplete:              {"WORK_COMPLETE", 1, true, ToServer | ToClient},
	WorkFail:                  {"WORK_FAIL", 1, false, ToServer | ToClient},
	GetStatus:                 {"GET_STATUS", 1, false, ToServer},
	EchoReq:                   {"ECHO_REQ", 0, true, ToServer},
	EchoRes:                   {"ECHO_RES", 0, true, ToClient},
	SubmitJobBg:               {"SUBMIT_JOB_BG", 2, true, ToServer},
	Error:                     {"ERROR", 2, false, ToClient},
	StatusRes:                 {"STATUS_RES", 5, false, ToClient},
	SubmitJobHigh:             {"SUBMIT_JOB_HIGH", 2, true, ToServer},
	SetClientID:               {"SET_CLIENT_ID", 1, false, ToServer},
	CanDoTimeout:              {"CAN_DO_TIMEOUT", 2, false, ToServer},
	AllYours:                  {"ALL_YOURS", 0, false, ToServer},
	WorkException:             {"WORK_EXCEPTION", 1, true, ToServer | ToClient},
	OptionReq:                 {"OPTION_REQ", 1, false, ToServer},
	OptionRes:                 {"OPTION_RES", 1, false, ToClient},
	WorkData:                  {"WORK_DATA", 1, true, ToServer | ToClient},
	WorkWarning:               {"WORK_WARNING", 1, true, ToServer | ToClient},
	GrabJobUniq:               {"GRAB_JOB_UNIQ", 0, false, ToServer},
	JobAssignUniq:             {"JOB_ASSIGN_UNIQ", 3, true, ToClient},
	SubmitJobHighBg:           {"SUBMIT_JOB_HIGH_BG", 2, true, ToServer},
	SubmitJobLow:              {"SUBMIT_JOB_LOW", 2, true, ToServer},
	SubmitJobLowBg:            {"SUBMIT_JOB_LOW_BG", 2, true, ToServer},
	SubmitJobSched:            {"SUBMIT_JOB_SCHED", 7, true, ToServer},
	SubmitJobEpoch:            {"SUBMIT_JOB_EPOCH", 3, true, ToServer},
	SubmitReduceJob:           {"SUBMIT_REDUCE_JOB", 4, true, ToServer},
	SubmitReduceJobBackground: {"SUBMIT_REDUCE_JOB_BACKGROUND", 4, true, ToServer},
	GrabJobAll:                {"GRAB_JOB_ALL", 0, false, ToServer},
	JobAssignAll:              {"JOB_ASSIGN_ALL", 4, true, ToClient},
	GetStatusUnique:           {"GET_STATUS_UNIQUE", 1, false, ToServer},
	StatusResUnique:           {"STATUS_RES_UNIQUE", 6, false, ToClient},
}

var saslSpecs = [...]Spec{
	SASLMechsReq - SASLMechsReq:  {"SASL_MECHS_REQ", 0, false, ToServer},
	SASLMechsRes - SASLMechsReq:  {"SASL_MECHS_RES", 1, false, ToClient},
	SASLStart - SASLMechsReq:     {"SASL_START", 1, true, ToServer},
	SASLStep - SASLMechsReq:      {"SASL_STEP", 0, true, ToServer},
	SASLChallenge - SASLMechsReq: {"SASL_CHALLENGE", 0, true, ToClient},
	SASLOK - SASLMechsReq:        {"SASL_OK", 1, true, ToClient},
}

// Lookup returns the spec of a packet type, and false for a type that no
// Gearman peer or the SASL extension defines (type 5 is defined, as UNUSED).
func (t Type) Lookup() (Spec, bool) {
	switch {
	case t > Text && int(t) < len(specs):
		return specs[t], true
	case t >= SASLMechsReq && t <= SASLOK:
		return saslSpecs[t-SASLMechsReq], true
	}
	return Spec{}, false
}

// Known reports whether t is a defined wire type.
func (t Type) Known() bool {
	_, ok := t.Lookup()
	return ok
}

func (t Type) String() string {
	if t == Text {
		return "TEXT"
	}
	if s, ok := t.Lookup(); ok {
		return s.Name
	}
	return "TYPE_" + strconv.FormatUint(uint64(t), 10)
}

// IsSubmit reports whether t submits a job.
func (t Type) IsSubmit() bool {
	switch t {
	case SubmitJob, SubmitJobBg, SubmitJobHigh, SubmitJobHighBg, SubmitJobLow,
		SubmitJobLowBg, SubmitJobSched, SubmitJobEpoch, SubmitReduceJob,
		SubmitReduceJobBackground:
		return true
	}
	return false
}

// IsBackground reports whether a submit type creates a background job, one
// whose submitter receives only JOB_CREATED.
func (t Type) IsBackground() bool {
	switch t {
	case SubmitJobBg, SubmitJobHighBg, SubmitJobLowBg, SubmitJobSched,
		SubmitJobEpoch, SubmitReduceJobBackground:
		return true
	}
	return false
}

// Priority is a job's queue within its function.
type Priority uint8

const (
	High Priority = iota
	Normal
	Low
)

func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Normal:
		return "normal"
	case Low:
		return "low"
	}
	return "priority(" + strconv.Itoa(int(p)) + ")"
}

// SubmitPriority is the priority a submit type asks for. Epoch, SCHED and
// reduce jobs run at normal priority, as in gearmand.
func (t Type) SubmitPriority() Priority {
	switch t {
	case SubmitJobHigh, SubmitJobHighBg:
		return High
	case SubmitJobLow, SubmitJobLowBg:
		return Low
	}
	return Normal
}

// Packet is one binary packet, or one admin text line when Type is Text.
//
// Args holds the fields of the packet: for a type with opaque data the last
// field is the data. For a text line Args holds its tokens. A Packet filled by
// Reader.Read points into the Reader's buffer and is valid only until the
// next Read; copy what must outlive it.
type Packet struct {
	Magic Magic
	Type  Type
	Args  [][]byte
}

// Arg returns field i, or nil when the packet has fewer fields.
func (p *Packet) Arg(i int) []byte {
	if i < 0 || i >= len(p.Args) {
		return nil
	}
	return p.Args[i]
}

// Data returns the last field: the opaque data of types that carry it.
func (p *Packet) Data() []byte {
	if len(p.Args) == 0 {
		return nil
	}
	return p.Args[len(p.Args)-1]
}

func (p *Packet) String() string {
	return fmt.Sprintf("%s %s %q", p.Magic, p.Type, p.Args)
}
