<?php
setcookie('first', '1');
setcookie('second', '2');
header('Location: /app/echo.php');
