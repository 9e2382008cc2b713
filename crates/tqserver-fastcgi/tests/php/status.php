<?php
// A 404 with headers set after the status and two cookies.
http_response_code(404);
header('X-After-Status: kept');
setcookie('first', '1');
setcookie('second', '2');
echo 'not here';
