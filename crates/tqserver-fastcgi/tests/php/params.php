<?php
// Counts the X-Filler headers and hashes them in name order, so a test can
// send a params block over 64 KiB and check every pair arrived.
$names = [];
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'HTTP_X_FILLER_', 14) === 0) { $names[$k] = $v; }
}
ksort($names, SORT_NATURAL);
$ctx = hash_init('sha256');
foreach ($names as $k => $v) { hash_update($ctx, $k . '=' . $v . "\n"); }
echo count($names), ' ', hash_final($ctx);
