<?php
// Which process served this request.
echo getmypid();
