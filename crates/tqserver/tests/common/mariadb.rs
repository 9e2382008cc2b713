//! A MariaDB of the test's own (Debian's mariadb-server): a data folder
//! in a temporary directory, a Unix socket there, no network; stopped
//! and removed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    child: Child,
    dir: tempfile::TempDir,
}

fn mariadbd() -> PathBuf {
    ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("MariaDB is not installed (Debian: apt-get install mariadb-server); scripts/test installs it")
}

impl MariaDb {
    /// Initialises a data folder and starts the server on it.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let root = nix::unistd::geteuid().is_root();
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=root");
        }
        let out = install.output().expect("mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(mariadbd());
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .args([
                "--skip-networking",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=8M",
            ]);
        if root {
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let db = Self { child, dir };
        let until = Instant::now() + Duration::from_secs(60);
        while !db.sql("SELECT 1").0 {
            assert!(
                Instant::now() < until,
                "MariaDB did not start: {}",
                std::fs::read_to_string(db.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    /// Its socket (`DB_HOST` is `localhost:` followed by it).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Runs `sql` as root; whether it succeeded, and its output.
    pub fn sql(&self, sql: &str) -> (bool, String) {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .expect("the mariadb client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// A database and a user with a password who owns it.
    pub fn database(&self, name: &str, user: &str, password: &str) {
        let (ok, out) = self.sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4; CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}'; GRANT ALL ON `{name}`.* TO '{user}'@'localhost';"
        ));
        assert!(ok, "{out}");
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
