<?php
// Echoes what a test needs to see: CGI variables as JSON, and the body's
// length and SHA-256.
$in = fopen('php://input', 'rb');
$ctx = hash_init('sha256');
$len = 0;
while (!feof($in)) {
    $chunk = fread($in, 1 << 16);
    if ($chunk === false) { break; }
    $len += strlen($chunk);
    hash_update($ctx, $chunk);
}
$keys = ['REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO', 'PATH_TRANSLATED',
         'QUERY_STRING', 'DOCUMENT_ROOT', 'DOCUMENT_URI', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_ADDR',
         'SERVER_PROTOCOL', 'REMOTE_ADDR', 'REMOTE_PORT', 'HTTP_HOST', 'HTTP_X_FORWARDED_FOR', 'HTTP_PROXY',
         'CONTENT_LENGTH', 'CONTENT_TYPE', 'REQUEST_SCHEME', 'REDIRECT_STATUS', 'GATEWAY_INTERFACE',
         'HTTP_X_REQUEST_ID', 'HTTPS', 'HTTP_X_FORWARDED_PROTO', 'HTTP_X_FORWARDED_HOST',
         'HTTP_FORWARDED'];
$out = [];
foreach ($keys as $k) { $out[$k] = $_SERVER[$k] ?? null; }
$out['WORKER_NAME'] = getenv('WORKER_NAME');
$out['body_length'] = $len;
$out['body_sha256'] = hash_final($ctx);
header('Content-Type: application/json');
echo json_encode($out);
