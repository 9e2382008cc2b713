<?php
// The request's headers as php-fpm and php-cgi give them to applications.
header('Content-Type: application/json');
echo json_encode([
    'getallheaders' => function_exists('getallheaders') ? getallheaders() : null,
    'apache' => function_exists('apache_request_headers') ? apache_request_headers() : null,
]);
