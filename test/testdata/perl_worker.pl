#!/usr/bin/perl
# A Perl Gearman::Worker for the differential tests.
#
#   perl perl_worker.pl HOST:PORT FUNCTION MODE COUNT
#
# Runs COUNT jobs of FUNCTION, printing one line per job, then exits 0.
# Modes: reverse (return the reversed argument), chatty (data, warning,
# then return), status (set_status, then return), send_status (the
# worker's send_work_status, which drops the denominator: a WORK_STATUS with
# two arguments), fail (return undef), die (the handler dies).
use strict;
use warnings;
use Gearman::Worker;

$| = 1;
my ($addr, $func, $mode, $count) = @ARGV;
my $w = Gearman::Worker->new(job_servers => [$addr]);
my $done = 0;
$w->register_function($func => sub {
    my $job = shift;
    my $arg = $job->arg;
    print "job $func $arg $mode\n";
    if ($mode eq 'reverse') {
        return scalar reverse $arg;
    } elsif ($mode eq 'chatty') {
        $w->send_work_data($job, "data1:$arg");
        $w->send_work_warning($job, "warning1:$arg");
        return "done:$arg";
    } elsif ($mode eq 'send_status') {
        $w->send_work_status($job, 1, 2);
        return "done:$arg";
    } elsif ($mode eq 'status') {
        $job->set_status(1, 4);
        return "ok:$arg";
    } elsif ($mode eq 'fail') {
        return undef;
    } elsif ($mode eq 'die') {
        die "boom:$arg\n";
    }
    die "unknown mode $mode\n";
});
$w->work(
    on_complete => sub { $done++ },
    on_fail     => sub { $done++ },
    stop_if     => sub { $done >= $count },
);
print "worker done\n";
