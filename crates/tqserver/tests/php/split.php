<?php
// Declares a Content-Length shorter than what it prints (as a warning
// printed after header('Content-Length: …') does): what follows the
// declared length is a whole HTTP response, which must never reach a
// client as a response of its own. ?big=1 declares and prints more than
// TQServer gathers before it sends the head, so the body is streamed.
$declared = isset($_GET['big']) ? 100000 : 5;
header('Content-Length: ' . $declared);
header('Content-Type: text/plain');
echo isset($_GET['big']) ? str_repeat('a', $declared) : 'hello';
flush();
usleep(100000);
echo "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Injected: yes\r\n\r\ninjected";
