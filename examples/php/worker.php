<?php
// A php-gearman worker behind `gearproxy connect`: plain Gearman to the
// local sidecar, which carries it over TLS + SCRAM to gearproxy.
//
//   php worker.php [HOST:PORT] [JOBS]
//
// HOST:PORT is the sidecar's -listen address (default 127.0.0.1:4730).
// Serves "reverse"; exits after JOBS jobs (default: run forever).
// Nothing here knows about TLS or passwords: that is the point.

$addr = $argv[1] ?? '127.0.0.1:4730';
$jobs = (int)($argv[2] ?? 0);
$i = strrpos($addr, ':');

$worker = new GearmanWorker();
$worker->addServer(substr($addr, 0, $i), (int)substr($addr, $i + 1));
$worker->setId('example-php-worker');
$worker->addFunction('reverse', function (GearmanJob $job) {
    $out = strrev($job->workload());
    printf("reverse %s -> %s\n", $job->workload(), $out);
    return $out;
});

printf("serving reverse on %s\n", $addr);
for ($done = 0; $jobs === 0 || $done < $jobs; $done++) {
    if (!$worker->work()) {
        // When the sidecar cannot log in upstream, its log names the cause
        // and the worker gets GEARMAN_UNEXPECTED_PACKET here.
        fprintf(STDERR, "work failed: %s\n", $worker->error());
        exit(1);
    }
}
