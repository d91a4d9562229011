<?php
// Shared by php_client.php and php_worker.php: connection set-up and
// readable names for libgearman return codes.

function server_from(string $addr): array
{
    $i = strrpos($addr, ':');
    return [substr($addr, 0, $i), (int)substr($addr, $i + 1)];
}

// rc names a gearman_return_t the way the PHP constants do.
function rc(int $code): string
{
    static $names = null;
    if ($names === null) {
        $names = [];
        $on = false;
        foreach (get_defined_constants(true)['gearman'] as $name => $value) {
            if ($name === 'GEARMAN_SUCCESS') {
                $on = true;
            }
            if ($on && !isset($names[$value])) {
                $names[$value] = substr($name, strlen('GEARMAN_'));
            }
            if ($name === 'GEARMAN_MAX_RETURN') {
                break;
            }
        }
    }
    return $names[$code] ?? "RC_$code";
}

// h marks a job handle so that the test can normalise it.
function h(?string $handle): string
{
    return '<<' . $handle . '>>';
}
