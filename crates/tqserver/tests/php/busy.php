<?php
// Tells the test which process runs it (a file named by ?tag in the temp
// directory), then works for ?ms milliseconds.
$tag = preg_replace('/[^a-z0-9-]/', '', $_GET['tag'] ?? 'x');
file_put_contents(sys_get_temp_dir() . "/tq-busy-$tag", (string) getmypid());
usleep((int) ($_GET['ms'] ?? 0) * 1000);
echo 'done';
