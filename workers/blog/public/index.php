<?php
// The blog demo's front page: what PHP runs, how its pool is set up, and
// what TQServer passed in for this request. Everything shown is escaped.
function e($v): string { return htmlspecialchars((string)$v, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8'); }
$pool = [
    'worker' => getenv('WORKER_NAME'),
    'route' => getenv('WORKER_ROUTE'),
    'mode' => getenv('WORKER_MODE'),
    'pool' => getenv('WORKER_POOL'),
    'memory_limit' => ini_get('memory_limit'),
    'max_execution_time' => ini_get('max_execution_time'),
    'upload_max_filesize' => ini_get('upload_max_filesize'),
];
$keys = ['REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'PATH_INFO', 'QUERY_STRING',
         'DOCUMENT_ROOT', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_PROTOCOL', 'REMOTE_ADDR', 'HTTP_HOST', 'HTTP_USER_AGENT'];
?><!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>TQServer blog demo</title>
<style>
body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2em; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #ddd; vertical-align: top; }
th { width: 14em; color: #555; font-weight: 500; }
code { font-size: .95em; }
</style>
</head>
<body>
<h1>TQServer blog demo</h1>
<p>PHP <?= e(PHP_VERSION) ?> (<?= e(PHP_SAPI) ?>), process <?= e(getmypid()) ?>.
Try <a href="hello.php">hello.php</a>, <a href="info.php">info.php</a>, <a href="bench.php">bench.php</a>.</p>
<h2>Pool</h2>
<table>
<?php foreach ($pool as $k => $v): ?>
<tr><th><?= e($k) ?></th><td><code><?= e($v === false ? '-' : $v) ?></code></td></tr>
<?php endforeach; ?>
</table>
<h2>This request</h2>
<table>
<?php foreach ($keys as $k): ?>
<tr><th><?= e($k) ?></th><td><code><?= e($_SERVER[$k] ?? '-') ?></code></td></tr>
<?php endforeach; ?>
</table>
</body>
</html>
