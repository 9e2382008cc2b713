<?php
http_response_code(404);
header('X-After-Status: kept');
echo 'custom not found';
