<?php
// Worker mode: the application boots once per process; each request goes
// through the same kernel with that request's globals.
require dirname(__DIR__) . '/autoload.php';
$app = require dirname(__DIR__) . '/bootstrap/app.php';

$kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);
$kernel->bootstrap();
$handler = static function () use ($kernel): void {
    $request = Illuminate\Http\Request::capture();
    $response = $kernel->handle($request);
    $response->send();
    $kernel->terminate($request, $response);
};
while (tqserver_handle_request($handler)) {
    gc_collect_cycles();
}
