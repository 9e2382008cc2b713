<?php
// Classic front controller: the application is built for every request.
require dirname(__DIR__) . '/autoload.php';
$app = require dirname(__DIR__) . '/bootstrap/app.php';

$kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);
$response = $kernel->handle($request = Illuminate\Http\Request::capture());
$response->send();
$kernel->terminate($request, $response);
