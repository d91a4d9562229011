// Package schedule makes Gearman a cron replacement: it submits a
// background job at every firing of a cron expression (the `[[schedule]]`
// tables of the config).
//
// Several gearproxy instances usually run the same config. Each one
// submits every firing, with the unique "sched:<name>:<firing time>";
// the proxy routes by unique, so all those submissions reach one backend,
// which coalesces them into a single job as long as it is still queued or
// running when the others arrive. Instances whose clocks agree submit
// within milliseconds of each other, long before a typical job ends. A
// job that finishes faster than the clocks of the instances differ can
// run more than once: keep clocks in sync (NTP), or make such jobs
// idempotent.
//
// The package imports only the standard library, so that config/ can
// check cron expressions and priorities with Parse and ParsePriority and
// report them with the file and line, and so that jobserver/ can import
// it without a cycle.
//
// This is gearproxy's one cron parser. The job server parses the five
// fields of SUBMIT_JOB_SCHED with ParseFields, which takes them
// separately, as the packet carries them, and shares Parse's syntax and
// matching.
package schedule
