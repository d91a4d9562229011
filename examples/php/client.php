<?php
// A php-gearman client behind `gearproxy connect`: a foreground job, a
// background job and its status.
//
//   php client.php [HOST:PORT] [TEXT]
//
// HOST:PORT is the sidecar's -listen address (default 127.0.0.1:4730).

$addr = $argv[1] ?? '127.0.0.1:4730';
$text = $argv[2] ?? 'hello, gearproxy';
$i = strrpos($addr, ':');

$client = new GearmanClient();
$client->setTimeout(10000);
$client->addServer(substr($addr, 0, $i), (int)substr($addr, $i + 1));

$result = $client->doNormal('reverse', $text);
if ($client->returnCode() !== GEARMAN_SUCCESS) {
    // A refused login upstream arrives here, e.g.
    // "AUTH_FAILED:gearproxy connect: authenticate to ... as alice: ..."
    fprintf(STDERR, "doNormal failed: %s\n", $client->error());
    exit(1);
}
printf("reverse(%s) = %s\n", $text, $result);

$handle = $client->doBackground('reverse', "$text (background)");
[$known, $running] = $client->jobStatus($handle);
printf("background job queued: known=%s\n", var_export($known, true));
