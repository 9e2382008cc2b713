<?php
// POST: reads the whole body and answers its length and SHA-256, so the
// test proves every byte arrived in order.
$in = fopen('php://input', 'rb');
$ctx = hash_init('sha256');
$len = 0;
while (!feof($in)) {
    $chunk = fread($in, 1 << 16);
    if ($chunk === false) { break; }
    $len += strlen($chunk);
    hash_update($ctx, $chunk);
}
header('Content-Type: text/plain');
echo $len, ' ', hash_final($ctx), ' ', $_SERVER['CONTENT_LENGTH'] ?? '-';
