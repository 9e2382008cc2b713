//! What the tests that drive real web applications share: form bodies,
//! fields scraped from a page, curl with its response head, and a file a
//! test writes where a package reads its settings.

use std::path::PathBuf;

use super::Tq;

/// `application/x-www-form-urlencoded` for `pairs`.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC),
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The value of `<input … name="NAME" value="…">` in `html`.
pub fn input(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in the page:\n{html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Status, lower-cased head and body of curl `args` on `path` (the path
/// as it is: `--path-as-is`).
pub fn curl_get(tq: &Tq, path: &str, args: &[&str]) -> (String, String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-D",
            "/dev/stderr",
            "--path-as-is",
        ])
        .args(args)
        .arg(tq.url(path))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    assert!(out.status.success(), "{path}: {head}");
    let status = head.split_whitespace().nth(1).unwrap_or("").to_string();
    (status, head, out.stdout)
}

/// Every value of header `name` (lower case) in a head from [`curl_get`].
pub fn header<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::trim)
        .collect()
}

/// A file written where a Debian package reads its settings
/// (`/etc/wordpress/…`, `/etc/phpmyadmin/conf.d/…`), removed on drop.
pub struct SettingsFile(PathBuf);

impl SettingsFile {
    pub fn write(path: impl Into<PathBuf>, text: &str) -> Self {
        let path = path.into();
        std::fs::write(&path, text).unwrap_or_else(|e| {
            panic!(
                "cannot write {} ({e}): the package reads its settings there; run the tests as root (scripts/test does)",
                path.display()
            )
        });
        Self(path)
    }
}

impl Drop for SettingsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
