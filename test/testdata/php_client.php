<?php
// A php-gearman client for the differential tests.
//
//   php php_client.php HOST:PORT MODE FUNCTION [ARGS...]
//
// Prints what a PHP user would see: results, return codes, task callbacks
// in the order they fire. Job handles are printed as <<handle>>. Modes:
//   do FN                  doNormal, doHigh, doLow
//   do_loop FN             doNormal until done, printing every WORK_* step
//   background FN UNIQUE   doBackground, doHighBackground, doLowBackground
//                          (uniques UNIQUE-1..3), then jobStatus and
//                          jobStatusByUniqueKey of each
//   status FN h:HANDLE|u:UNIQUE...   jobStatus / jobStatusByUniqueKey
//   tasks FN               addTask, addTaskHigh, addTaskLow and the three
//                          background variants, runTasks with every callback
//   bg_unique FN UNIQUE    doBackground with that unique
//   do_unique FN UNIQUE DATA     doNormal with that unique
//   task1 FN               one task, every callback
//   do1 FN                 doNormal of one job
//   echo FN                ping
// php-gearman always asks for the exceptions option when it connects, so
// there is no mode without it (the gearman CLI and Perl have none).
require __DIR__ . '/php_common.php';

[, $addr, $mode, $fn] = $argv;
$args = array_slice($argv, 4);
[$host, $port] = server_from($addr);

$c = new GearmanClient();
$c->addServer($host, $port);
$c->setTimeout(10000);

function callbacks(GearmanClient $c): void
{
    $c->setCreatedCallback(function (GearmanTask $t) {
        printf("created %s\n", h($t->jobHandle()));
    });
    $c->setDataCallback(function (GearmanTask $t) {
        printf("data %s %s\n", h($t->jobHandle()), $t->data());
    });
    $c->setWarningCallback(function (GearmanTask $t) {
        printf("warning %s %s\n", h($t->jobHandle()), $t->data());
    });
    $c->setStatusCallback(function (GearmanTask $t) {
        printf("status %s %d/%d\n", h($t->jobHandle()), $t->taskNumerator(), $t->taskDenominator());
    });
    $c->setCompleteCallback(function (GearmanTask $t) {
        printf("complete %s %s %s\n", h($t->jobHandle()), $t->data(), rc($t->returnCode()));
    });
    $c->setExceptionCallback(function (GearmanTask $t) {
        printf("exception %s %s\n", h($t->jobHandle()), $t->data());
    });
    $c->setFailCallback(function (GearmanTask $t) {
        printf("fail %s %s\n", h($t->jobHandle()), rc($t->returnCode()));
    });
}

function show_status(string $what, $st): void
{
    if (!is_array($st)) {
        printf("%s: %s\n", $what, var_export($st, true));
        return;
    }
    printf("%s: known=%s running=%s %d/%d\n", $what, var_export($st[0], true), var_export($st[1], true), $st[2], $st[3]);
}

switch ($mode) {
    case 'do':
        foreach (['doNormal', 'doHigh', 'doLow'] as $m) {
            $r = $c->$m($fn, "payload-$m");
            printf("%s: %s rc=%s\n", $m, var_export($r, true), rc($c->returnCode()));
        }
        break;

    case 'do_loop':
        do {
            $r = $c->doNormal($fn, 'loop');
            $rc = $c->returnCode();
            switch ($rc) {
                case GEARMAN_WORK_DATA:
                case GEARMAN_WORK_WARNING:
                    printf("%s %s\n", rc($rc), $r);
                    break;
                case GEARMAN_WORK_STATUS:
                    [$num, $den] = $c->doStatus();
                    printf("%s %d/%d\n", rc($rc), $num, $den);
                    break;
                default:
                    printf("%s %s handle=%s\n", rc($rc), var_export($r, true), h($c->doJobHandle()));
            }
        } while (in_array($rc, [GEARMAN_WORK_DATA, GEARMAN_WORK_WARNING, GEARMAN_WORK_STATUS], true));
        break;

    case 'background':
        $u = $args[0];
        $hs = [];
        foreach (['doBackground', 'doHighBackground', 'doLowBackground'] as $i => $m) {
            $hs[$i] = $c->$m($fn, "bg-$m", "$u-" . ($i + 1));
            printf("%s: %s rc=%s\n", $m, h($hs[$i]), rc($c->returnCode()));
        }
        foreach ($hs as $i => $hd) {
            show_status('jobStatus ' . h($hd), $c->jobStatus($hd));
            show_status("jobStatusByUniqueKey $u-" . ($i + 1), $c->jobStatusByUniqueKey("$u-" . ($i + 1)));
        }
        break;

    case 'do_unique':
        $r = $c->doNormal($fn, $args[1], $args[0]);
        printf("doNormal: %s rc=%s\n", var_export($r, true), rc($c->returnCode()));
        break;

    case 'bg_unique':
        $hd = $c->doBackground($fn, 'data', $args[0]);
        printf("doBackground: %s rc=%s\n", h($hd), rc($c->returnCode()));
        if ($c->returnCode() !== GEARMAN_SUCCESS) {
            printf("error: %s\n", $c->error());
        }
        break;

    case 'status':
        foreach ($args as $a) {
            if (str_starts_with($a, 'h:')) {
                show_status('jobStatus ' . h(substr($a, 2)), $c->jobStatus(substr($a, 2)));
            } else {
                show_status("jobStatusByUniqueKey " . substr($a, 2), $c->jobStatusByUniqueKey(substr($a, 2)));
            }
        }
        break;

    case 'tasks':
        callbacks($c);
        $c->addTask($fn, 'normal');
        $c->addTaskHigh($fn, 'high');
        $c->addTaskLow($fn, 'low');
        $c->addTaskBackground($fn, 'normal-bg');
        $c->addTaskHighBackground($fn, 'high-bg');
        $c->addTaskLowBackground($fn, 'low-bg');
        $ok = $c->runTasks();
        printf("runTasks: %s rc=%s\n", var_export($ok, true), rc($c->returnCode()));
        break;

    case 'task1':
        callbacks($c);
        $c->addTask($fn, 'x');
        $ok = $c->runTasks();
        printf("runTasks: %s rc=%s\n", var_export($ok, true), rc($c->returnCode()));
        break;

    case 'do1':
        $r = $c->doNormal($fn, 'x');
        printf("doNormal: %s rc=%s\n", var_export($r, true), rc($c->returnCode()));
        break;

    case 'echo':
        printf("ping: %s\n", var_export($c->ping('hello'), true));
        break;

    default:
        fwrite(STDERR, "unknown mode $mode\n");
        exit(2);
}
