<?php
// Burns CPU past max_execution_time (?s seconds).
set_time_limit((int) ($_GET['s'] ?? 1));
$x = 0;
while (true) { $x++; }
