<?php
session_start();
$_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
echo 'n=', $_SESSION['n'];
if (isset($_GET['fatal'])) { undefined_function(); }
exit(3);
