<?php
error_log('tq-stderr-marker ' . ($_GET['tag'] ?? ''));
echo 'logged';
