//! What the daemon's benchmarks share: a release `aiosd` child process on its own data
//! directory, killed when dropped.
#![allow(dead_code, reason = "each benchmark uses a part")]

use std::io::BufRead;

/// The daemon binary of this package.
pub const AIOSD: &str = env!("CARGO_BIN_EXE_aiosd");
/// A known admin key, given to every process through `AIOS_ADMIN_KEY`.
pub const ADMIN: &str = "aios_00112233aabb_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZ";

/// A running `aiosd`.
pub struct Aiosd {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Aiosd {
    /// Starts `aiosd` with `config` (TOML) and `env` on a new data directory, listening on a
    /// free port of 127.0.0.1, and returns once it listens. Its output is drained and dropped.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Aiosd {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aiosd.toml");
        std::fs::write(&path, config).expect("config");
        let mut child = std::process::Command::new(AIOSD)
            .args(["--config", path.to_str().expect("path")])
            .args([
                "--data-dir",
                dir.path().join("data").to_str().expect("path"),
            ])
            .args(["--listen", "127.0.0.1:0"])
            .env("AIOS_ADMIN_KEY", ADMIN)
            .env("RUST_LOG", "error")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn aiosd");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(out.read_line(&mut line).expect("read") > 0, "aiosd exited");
            if let Some(url) = line.trim().strip_prefix("aiosd listening on ") {
                break url.to_string();
            }
        };
        // Keep draining its output so it never writes into a closed pipe.
        std::thread::spawn(move || for _ in out.lines().map_while(Result::ok) {});
        Aiosd {
            child,
            url,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

impl Drop for Aiosd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
