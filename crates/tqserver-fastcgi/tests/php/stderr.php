<?php
// error_log() goes to the FastCGI STDERR stream when no error_log file is set.
error_log('tq first message');
error_log('tq second message');
echo 'logged';
