#!/usr/bin/perl
# A Perl Gearman::Client for the differential tests.
#
#   perl perl_client.pl HOST:PORT MODE FUNCTION [ARGS...]
#
# Prints what a Perl user sees. Gearman::Client's handles are
# "HOST:PORT//handle"; they are printed as HOST:PORT//<<handle>>.
# Modes:
#   do FN                 do_task at normal, high and low priority
#   background FN UNIQUE  dispatch_background twice, then get_status of each
#   bg_unique FN UNIQUE   dispatch_background with that unique
#   status FN HANDLE...   get_status
#   taskset FN            three tasks with every callback, then wait
#   exceptions FN on|off  one task, with or without the exceptions option
use strict;
use warnings;
use Gearman::Client;

$| = 1;
my ($addr, $mode, $func, @args) = @ARGV;
my $exceptions = ($mode eq 'exceptions' && $args[0] eq 'on') ? 1 : 0;
my $c = Gearman::Client->new(job_servers => [$addr], exceptions => $exceptions);

sub hd {
    my ($h) = @_;
    return 'undef' unless defined $h;
    my ($js, $handle) = split m!//!, $h, 2;
    return "$js//<<$handle>>";
}

sub show_status {
    my ($what, $st) = @_;
    unless ($st) {
        print "$what: undef\n";
        return;
    }
    printf "%s: known=%d running=%d progress=%s\n", $what, $st->known ? 1 : 0,
        $st->running ? 1 : 0, join('/', map { $_ // '' } @{ $st->progress || [] });
}

sub callbacks {
    my ($label) = @_;
    return (
        on_complete  => sub { my $r = shift; print "$label complete ${$r}\n" },
        on_fail      => sub { print "$label fail\n" },
        on_status    => sub { print "$label status $_[0]/$_[1]\n" },
        on_data      => sub { my $r = shift; print "$label data ${$r}\n" },
        on_warning   => sub { my $m = shift; print "$label warning ", (ref $m ? ${$m} : $m), "\n" },
        on_exception => sub { print "$label exception $_[0]\n" },
        timeout      => 10,
    );
}

if ($mode eq 'do') {
    for my $p ('normal', 'high', 'low') {
        my $r = $c->do_task($func, "arg-$p", { priority => $p, timeout => 10 });
        print "do_task $p: ", (defined $r ? ${$r} : 'undef'), "\n";
    }
} elsif ($mode eq 'background') {
    my $u = $args[0];
    my @h;
    for my $i (1, 2) {
        my $h = $c->dispatch_background($func, "bg$i", { uniq => "$u-$i" });
        push @h, $h;
        print "dispatch_background $i: ", hd($h), "\n";
    }
    show_status("get_status " . hd($_), $c->get_status($_)) for @h;
} elsif ($mode eq 'bg_unique') {
    my $h = $c->dispatch_background($func, 'data', { uniq => $args[0] });
    print "dispatch_background: ", hd($h), "\n";
} elsif ($mode eq 'status') {
    show_status("get_status " . hd($_), $c->get_status($_)) for @args;
} elsif ($mode eq 'taskset') {
    my $ts = $c->new_task_set;
    for my $t ('one', 'two', 'three') {
        $ts->add_task($func, $t, { callbacks($t) });
    }
    $ts->wait(timeout => 10);
    print "taskset done\n";
} elsif ($mode eq 'exceptions') {
    my $ts = $c->new_task_set;
    $ts->add_task($func, 'x', { callbacks('task') });
    $ts->wait(timeout => 10);
    print "taskset done\n";
} else {
    die "unknown mode $mode\n";
}
