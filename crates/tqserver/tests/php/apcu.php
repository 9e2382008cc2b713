<?php
// The process, and a counter in APCu: shared by a pool's processes only
// if they share APCu's memory.
header('Content-Type: text/plain');
echo getmypid(), ' ', function_exists('apcu_inc') ? apcu_inc('tqserver-test') : 'no-apcu';
