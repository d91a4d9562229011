<?php
// A php-gearman worker for the differential tests.
//
//   php php_worker.php HOST:PORT FUNCTION MODE COUNT [TIMEOUT_S]
//
// Runs COUNT jobs of FUNCTION, each as MODE says, printing one line per
// job, then exits 0. Exits 3 when work() fails (for instance no job within
// 10 s). Modes:
//   reverse   return the reversed workload
//   chatty    sendData, sendWarning, sendStatus, sendData, sendStatus, return
//   complete  sendComplete explicitly, return nothing
//   fail      sendFail
//   exception sendException
//   status    sendStatus(1, 4), then return
//   unique    return "unique:workload"
//   sleep3    sleep 3 s, then return "slept:workload"
// TIMEOUT_S registers the function with that timeout (CAN_DO_TIMEOUT).
require __DIR__ . '/php_common.php';

[, $addr, $fn, $mode, $count] = $argv;
[$host, $port] = server_from($addr);
$timeout = (int)($argv[5] ?? 0);

$w = new GearmanWorker();
$w->addServer($host, $port);
$w->setTimeout(10000);
$w->setId('php-' . $fn);

$w->addFunction($fn, function (GearmanJob $job) use ($mode) {
    $wl = $job->workload();
    printf("job %s %s %s\n", $job->functionName(), $wl, $mode);
    switch ($mode) {
        case 'reverse':
            return strrev($wl);
        case 'chatty':
            $job->sendData("data1:$wl");
            $job->sendWarning("warning1:$wl");
            $job->sendStatus(1, 2);
            $job->sendData("data2:$wl");
            $job->sendStatus(2, 2);
            return "done:$wl";
        case 'complete':
            $job->sendComplete("explicit:$wl");
            return null;
        case 'fail':
            $job->sendFail();
            return null;
        case 'exception':
            $job->sendException("boom:$wl");
            return null;
        case 'status':
            $job->sendStatus(1, 4);
            return "ok:$wl";
        case 'unique':
            return $job->unique() . ":$wl";
        case 'sleep3':
            sleep(3);
            return "slept:$wl";
    }
    fwrite(STDERR, "unknown mode $mode\n");
    exit(2);
}, null, $timeout);

for ($i = 0; $i < (int)$count; $i++) {
    if (!$w->work()) {
        printf("work: %s\n", rc($w->returnCode()));
        exit(3);
    }
}
printf("worker done: ping %s\n", var_export($w->ping("worker-ping"), true));
