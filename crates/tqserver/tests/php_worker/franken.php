<?php
// FrankenPHP's worker loop as its documentation writes it: runs unchanged
// on TQServer (frankenphp_handle_request is tqserver_handle_request).
ignore_user_abort(true);
$boot = getmypid();
$handler = static function () use ($boot) {
    echo "franken ", $_GET['n'] ?? '', ' ', $boot;
};
$maxRequests = (int) ($_SERVER['MAX_REQUESTS'] ?? 0);
for ($nbRequests = 0; !$maxRequests || $nbRequests < $maxRequests; ++$nbRequests) {
    $keepRunning = \frankenphp_handle_request($handler);
    gc_collect_cycles();
    if (!$keepRunning) {
        break;
    }
}
