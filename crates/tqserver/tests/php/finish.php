<?php
// fastcgi_finish_request(): the client has the answer, the script goes on
// and leaves a file behind once it is done.
$marker = $_GET['marker'] ?? '';
echo 'answered';
fastcgi_finish_request();
echo 'nobody sees this';
usleep(1500 * 1000);
file_put_contents($marker, 'after ' . getmypid());
