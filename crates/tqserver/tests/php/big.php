<?php
// Streams ?n= bytes of 'abcdefghijklmnopqrstuvwxyz0123456789' repeated.
$n = (int)($_GET['n'] ?? 0);
$unit = str_repeat('abcdefghijklmnopqrstuvwxyz0123456789', 2048);
$pos = 0;
header('Content-Type: application/octet-stream');
while ($n > 0) {
    $k = min($n, 65536);
    echo substr($unit, $pos % 36, $k);
    $pos += $k;
    $n -= $k;
}
