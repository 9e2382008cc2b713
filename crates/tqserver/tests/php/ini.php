<?php
// The value PHP runs with for the php.ini key ?k.
header('Content-Type: text/plain');
echo ini_get($_GET['k'] ?? '');
