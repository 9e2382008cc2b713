<?php
// Worker mode: the kernel boots once per process; each request is handled
// by the same kernel, with that request's globals.
use App\Kernel;
use Symfony\Component\HttpFoundation\Request;

require dirname(__DIR__) . '/autoload.php';

$kernel = new Kernel('prod', false);
$kernel->boot();
$handler = static function () use ($kernel): void {
    $request = Request::createFromGlobals();
    $response = $kernel->handle($request);
    $response->send();
    $kernel->terminate($request, $response);
};
// PHP collects reference cycles by itself when its root buffer fills;
// a gc_collect_cycles() after every request costs about 8% here.
while (tqserver_handle_request($handler)) {
}
