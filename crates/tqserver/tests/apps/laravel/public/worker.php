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
// PHP collects reference cycles by itself when its root buffer fills;
// a gc_collect_cycles() after every request costs about 8% here.
while (tqserver_handle_request($handler)) {
}
