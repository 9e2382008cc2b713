<?php
// A worker script for tests/php_worker.rs: boots once per process, then
// handles requests in a loop; each route shows one thing worker mode must
// get right.
$booted = sprintf('%.6f', microtime(true));
$count = 0;
$leak = [];
register_shutdown_function(function () use (&$count) {
    error_log("worker script ends after $count requests");
});
echo "booting worker ", getmypid(), "\n";

$handler = function () use (&$count, &$leak, $booted) {
    $count++;
    $route = basename(parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH));
    switch ($route) {
        case 'count':
            header('Content-Type: application/json');
            echo json_encode(['count' => $count, 'pid' => getmypid(), 'booted' => $booted]);
            break;
        case 'state':
            if (isset($_GET['set'])) {
                header('X-Set: ' . $_GET['set']);
                setcookie('c', $_GET['set']);
                http_response_code(201);
            }
            header('Content-Type: application/json');
            echo json_encode([
                'get' => $_GET,
                'post' => $_POST,
                'cookie' => $_COOKIE,
                'request' => $_REQUEST,
                'files' => array_map(fn ($f) => [$f['name'], $f['size'], hash_file('sha256', $f['tmp_name'])], $_FILES),
                'method' => $_SERVER['REQUEST_METHOD'],
                'uri' => $_SERVER['REQUEST_URI'],
                'script' => $_SERVER['SCRIPT_NAME'],
                'filename' => basename($_SERVER['SCRIPT_FILENAME']),
                'input' => file_get_contents('php://input'),
                'headers' => headers_list(),
                'ob' => ob_get_level(),
                'worker' => getenv('WORKER_NAME'),
            ]);
            break;
        case 'buffer':
            // Left open: flushed at the request's end, never into the next.
            ob_start();
            echo "left in a buffer";
            break;
        case 'fatal':
            // A fatal error proper (the engine bails out), not an Error.
            echo "before ";
            trigger_error('a fatal error in a request', E_USER_ERROR);
            break;
        case 'error':
            // An Error thrown and not caught: that request's 500.
            undefined_function_here();
            break;
        case 'exit':
            echo "bye";
            exit(0);
        case 'throw':
            throw new RuntimeException("thrown in a request");
        case 'leak':
            $leak[] = str_repeat('x', 4 << 20);
            echo count($leak), ' ', $booted;
            break;
        case 'session':
            session_start();
            $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
            echo $_SESSION['n'];
            break;
        case 'sleep':
            sleep((int) ($_GET['s'] ?? 1));
            echo "slept";
            break;
        case 'stream':
            // Streams for 3 s; tells the log whether the client left.
            while (ob_get_level() > 0) {
                ob_end_flush();
            }
            for ($i = 0; $i < 30; $i++) {
                echo str_repeat('.', 100), "\n";
                flush();
                usleep(100000);
            }
            error_log("stream ended: aborted=" . connection_aborted() . " i=$i");
            break;
        case 'sapi':
            echo php_sapi_name(), ' ', ini_get('opcache.enable'), ' ', function_exists('frankenphp_handle_request') ? 'franken' : '-';
            break;
        default:
            http_response_code(404);
            echo "no route for $route";
    }
};

while (tqserver_handle_request($handler)) {
    gc_collect_cycles();
}
