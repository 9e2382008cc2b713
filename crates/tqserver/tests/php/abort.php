<?php
// Streams a line every 100 ms for 3 s; how the script ended (aborted or
// not, how far it got) goes to a file named by ?tag, for php_embed.rs.
$file = sys_get_temp_dir() . '/tq-abort-' . preg_replace('/[^\w-]/', '', $_GET['tag'] ?? 'x');
if (!empty($_GET['ignore'])) {
    ignore_user_abort(true);
}
$i = 0;
register_shutdown_function(function () use ($file, &$i) {
    file_put_contents($file, "aborted=" . connection_aborted() . " i=$i\n");
});
header('Content-Type: text/plain');
// Each line leaves at once (php.ini's output_buffering holds 4 KiB).
while (ob_get_level() > 0) {
    ob_end_flush();
}
for (; $i < 30; $i++) {
    echo str_repeat('.', 100), "\n";
    flush();
    usleep(100000);
}
