<?php
// A Content-Length longer than the body PHP prints.
header('Content-Length: 10');
echo 'abc';
