<?php
// The front controller: says that it ran, and for which URI.
header('Content-Type: text/plain');
echo 'front controller for ', $_SERVER['REQUEST_URI'], ' script ', $_SERVER['SCRIPT_NAME'];
