// Package jobserver is gearproxy's bundled job server: a gearmand 1.1.20
// compatible server with queues per function and priority, coalescing on
// unique IDs, worker wake-ups, timeouts, epoch and SCHED jobs and the admin
// text commands. It runs standalone (`gearproxy server`) or in process as a
// proxy backend (Server.ServeDirect, which handles a connection's requests
// in the goroutine that writes them), and keeps background jobs durable
// through jobserver/store.
//
// # Design
//
// One reader goroutine per connection parses requests with protocol.Reader
// and handles each under the server's single mutex, which is never held
// across I/O. Replies are appended to the connection's bounded
// protocol.Outbox; the reader writes the replies of a burst of requests
// itself before it reads again (Outbox.Begin and Flush), and output for
// other connections (WORK_* to clients, NOOP to workers) is written by the
// target's writer goroutine. A peer that does not read is cut off when
// its outbox passes Options.OutboxLimit; nobody waits on it.
//
// Jobs are small (the unique ID and data share one string, the handle is
// the job number formatted on demand) and sit in intrusive FIFO lists per
// function and priority. A durable background submit is Store.Add'ed
// without the lock; its JOB_CREATED, and every later reply on the same
// connection, wait in a reply slot until the store answers, so replies keep
// request order while other connections' submits share the store's commit.
//
// # Deliberate differences from gearmand 1.1.20
//
//   - A client without the "exceptions" option gets a clean WORK_FAIL for a
//     WORK_EXCEPTION (gearmand appends a stray NUL that hangs the gearman CLI
//     and kills Perl's client).
//   - An epoch or SCHED job that falls due wakes sleeping workers with NOOP
//     (gearmand sends none, so its workers can sleep through the job). A due
//     job joins the tail of its queue.
//   - SUBMIT_JOB_SCHED works: the job runs once, at the first minute after
//     submission that matches the five cron fields, in the server's time
//     zone. The fields are parsed by package schedule (ParseFields), the
//     parser of the [[schedule]] config entries: "*", N, A-B, */S, N/S and
//     lists, month and weekday names ("jan", "mon-fri"), 7 or 0 for Sunday
//     and wrapping weekday ranges ("fri-sun"); an empty field means "*".
//     Day of month and day of week match either when both are restricted
//     and only the restricted one otherwise, where, as in Vixie cron, a
//     field starting with "*" ("*/2") counts as unrestricted. A step larger
//     than the field's maximum ("*/60" minutes) is refused. Bad fields, or
//     fields no time in the next nine years matches ("0 0 31 2 *"), get
//     ERROR INVALID_ARGUMENT. gearmand answers ERROR INVALID_COMMAND.
//   - "drop function" refuses while the function has jobs ("ERR there are
//     still queued jobs"); gearmand drops it and orphans them.
//   - CAN_DO_TIMEOUT belongs to one assignment of one job: a worker holding
//     several jobs has each timed (gearmand keeps one timer per connection,
//     for the job grabbed last, which may fire on a freed job, gearmand #301).
//   - A 64-byte unique ID is rejected with ERROR ARGUMENT_TOO_LARGE
//     (gearmand truncates it to 63 bytes silently).
//   - "cancel job" ends a queued job at once: it leaves the queue and the
//     counts, GET_STATUS no longer knows it, a second cancel is
//     ERR UNKNOWN_JOB. A cancelled running job's clients get WORK_FAIL, the
//     job leaves the store and the unique index, and the worker's result
//     goes nowhere. gearmand leaves a cancelled job counted and known until
//     a worker would get it.
//   - A new submit that coalesces with a job whose clients all left brings
//     it back to life (gearmand drops it at grab time anyway, so the new
//     client never gets a result).
//   - Admin lines: "\n" ends a line and one "\r" before it is stripped;
//     gearmand drops the last character of the last token of a line that
//     ends in a bare "\n" (so "create function ab\n" creates "a"). Repeated
//     or leading spaces separate tokens (gearmand reads " version" as an
//     empty command).
//   - "status" and "prioritystatus" list functions sorted by name (gearmand:
//     hash order). "verbose" reports the server's log level.
//   - Bad input always gets an answer: framing errors get an ERROR packet
//     naming the cause (then the connection closes unless the frame was
//     intact); GET_STATUS with a long handle answers "unknown" (gearmand
//     drops the connection). A malformed WORK_* packet is logged and dropped
//     instead of answered, because workers die on an unexpected ERROR and
//     Perl's Gearman::Worker sends WORK_STATUS without its denominator.
//   - Bounded resources: Options.MaxConnections, Options.IdleTimeout for
//     connections that never send a packet, Options.OutboxLimit, and a cap on
//     the declared packet size (gearmand allocates whatever a header claims).
//
// # Admin "show jobs"
//
// The fourth column is gearmand's job_queued flag, "handed to the
// persistent queue". With a Store it is 1 once the job is durable (0 while
// its Store.Add is in flight, and for foreground jobs); without one it is 1
// for every background job, as gearmand prints when no persistent queue is
// configured. The column layout is unchanged, so gearadmin's parsing works.
package jobserver
