<?php
// A small page with a little work in it, for load tests.
$rows = [];
for ($i = 1; $i <= 20; $i++) {
    $rows[] = sprintf('<li>Post %d: %s</li>', $i, htmlspecialchars(str_repeat('lorem ', $i % 5 + 1)));
}
header('Content-Type: text/html; charset=utf-8');
echo '<!doctype html><title>bench</title><ul>', implode('', $rows), '</ul>';
