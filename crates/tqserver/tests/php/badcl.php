<?php
// A Content-Length that is not a number.
header('Content-Length: ' . ($_GET['v'] ?? 'abc'));
echo 'abc';
