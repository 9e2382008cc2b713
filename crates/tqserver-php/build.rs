//! Compiles the SAPI's C glue (`src/sapi.c`) against the PHP headers that
//! `php-config` names, and links libphp. Without php-config (no
//! `php8.2-dev`) or without libphp (no `libphp8.2-embed`) the crate builds
//! without PHP, and `run` says what to install.

use std::path::Path;
use std::process::Command;

fn php_config(arg: &str) -> Option<String> {
    let program = std::env::var("TQ_PHP_CONFIG").unwrap_or_else(|_| "php-config8.2".into());
    let out = Command::new(&program).arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(tq_php)");
    println!("cargo::rerun-if-env-changed=TQ_PHP_CONFIG");
    println!("cargo::rerun-if-changed=src/sapi.c");
    println!("cargo::rerun-if-changed=/usr/lib/libphp8.2.so");
    println!("cargo::rerun-if-changed=/usr/bin/php-config8.2");
    let Some(includes) = php_config("--includes") else {
        println!(
            "cargo::warning=php-config8.2 not found (Debian: apt-get install php8.2-dev libphp8.2-embed): building TQServer without embedded PHP"
        );
        return;
    };
    let prefix = php_config("--prefix").unwrap_or_else(|| "/usr".into());
    let lib_dir = Path::new(&prefix).join("lib");
    if !lib_dir.join("libphp8.2.so").exists() {
        println!(
            "cargo::warning=libphp8.2.so not found in {} (Debian: apt-get install libphp8.2-embed): building TQServer without embedded PHP",
            lib_dir.display()
        );
        return;
    }
    let mut build = cc::Build::new();
    build
        .file("src/sapi.c")
        .warnings(true)
        .flag_if_supported("-Wno-unused-parameter");
    for inc in includes.split_whitespace() {
        if let Some(dir) = inc.strip_prefix("-I") {
            build.include(dir);
        }
    }
    build.compile("tqsapi");
    println!("cargo::rustc-link-search=native={}", lib_dir.display());
    println!("cargo::rustc-link-lib=dylib=php8.2");
    println!("cargo::rustc-cfg=tq_php");
}
