<?php
// Written by TQServer for a PHP worker whose document root is WordPress,
// and given to PHP as auto_prepend_file (docs/php.md, "WordPress").
//
// TQServer's front controller sends a path with no file to index.php, as
// nginx's `try_files $uri $uri/ /index.php?$args` does, so WordPress's
// pretty permalinks work with no .htaccess. WordPress knows that only of
// nginx, Apache and IIS, by SERVER_SOFTWARE. Rather than claim to be nginx
// there (which every application would read), this tells WordPress alone,
// through its own hooks: first thing once its plugins are loaded (its
// variables, vars.php, are set just before), its `$is_nginx` ("rewriting
// is the server's; no .htaccess to write") is set.
// SERVER_SOFTWARE stays TQServer's. A script that is not WordPress never
// runs a WordPress hook, so for it this only defines an array.
$GLOBALS['wp_filter']['plugins_loaded'][PHP_INT_MIN][] = [
    'function' => static function () {
        $GLOBALS['is_nginx'] = true;
    },
    'accepted_args' => 0,
];
