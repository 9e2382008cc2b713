<?php
// What the embedded runtime tells a script about itself.
header('Content-Type: application/json');
$op = function_exists('opcache_get_status') ? opcache_get_status(false) : false;
echo json_encode([
    'sapi' => php_sapi_name(),
    'pid' => getmypid(),
    'opcache' => $op ? $op['opcache_enabled'] : false,
    'opcache_hits' => $op ? $op['opcache_statistics']['hits'] : 0,
    'finish_request' => function_exists('fastcgi_finish_request'),
    'memory_limit' => ini_get('memory_limit'),
    'worker' => getenv('WORKER_NAME'),
]);
