<?php
// Location with PHP's implicit 302, plus cookies.
setcookie('a', 'x');
setcookie('b', 'y');
header('Location: /elsewhere');
