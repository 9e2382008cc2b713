<?php
// GET: the smallest real response.
echo "Hello from PHP ", PHP_VERSION, " (", PHP_SAPI, ")";
