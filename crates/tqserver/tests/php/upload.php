<?php
header('Content-Type: application/json');
$out = [];
foreach ($_FILES as $k => $f) {
    $out[$k] = ['name' => $f['name'], 'size' => $f['size'], 'error' => $f['error'],
                'sha256' => is_uploaded_file($f['tmp_name']) ? hash_file('sha256', $f['tmp_name']) : null];
}
echo json_encode(['files' => $out, 'post' => $_POST]);
