<?php
// Streams ?n= bytes of a repeating pattern: 'abcdefghijklmnopqrstuvwxyz0123456789'.
$n = (int)($_GET['n'] ?? 0);
$unit = str_repeat('abcdefghijklmnopqrstuvwxyz0123456789', 2048); // 73728 bytes
$pos = 0;
header('Content-Type: application/octet-stream');
while ($n > 0) {
    $k = min($n, 65536);
    $start = $pos % 36;
    echo substr($unit, $start, $k);
    $pos += $k;
    $n -= $k;
}
