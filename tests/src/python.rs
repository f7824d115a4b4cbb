//! Receivers and clients written with the official libraries (`tests/receivers/*.py`,
//! `tests/clients/*.py`, packages from `tests/requirements.txt`), run as real processes: they check
//! our wire format, not our reading of it.

use std::{path::PathBuf, process::Stdio, sync::OnceLock, time::Duration};

use anyhow::Context;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A Python receiver process; it is killed when dropped.
pub struct PyReceiver {
    _child: Child,
    pub port: u16,
}

impl PyReceiver {
    /// A LINE receiver that verifies every request with line-bot-sdk's `WebhookParser`.
    pub async fn line_sdk(channel_secret: &str) -> anyhow::Result<PyReceiver> {
        PyReceiver::start("line_sdk_receiver.py", &[channel_secret]).await
    }

    /// An event webhook receiver that verifies Standard Webhooks signatures with the
    /// `standardwebhooks` package (`v1a` ones, under a `whpk_` public key, with `cryptography`'s
    /// Ed25519) and MAAC ones with a plain HMAC; give it the share secrets or public keys with
    /// [`PyReceiver::set_secrets`] before anything is sent to it.
    pub async fn standard_webhooks() -> anyhow::Result<PyReceiver> {
        PyReceiver::start("standard_webhooks_receiver.py", &[]).await
    }

    /// Tells an event webhook receiver which share secrets to verify with (each separately).
    pub async fn set_secrets(&self, secrets: &[&str]) -> anyhow::Result<()> {
        let status = reqwest::Client::new()
            .post(self.url("/secrets"))
            .json(secrets)
            .send()
            .await?
            .status();
        anyhow::ensure!(status.is_success(), "setting secrets: {status}");
        Ok(())
    }

    /// Starts `tests/receivers/SCRIPT ARGS` and waits for its `listening on PORT` line.
    pub async fn start(script: &str, args: &[&str]) -> anyhow::Result<PyReceiver> {
        let path = crate::binaries::repo_path("tests/receivers").join(script);
        ensure_requirements();
        let python = python();
        let mut child = Command::new(python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the receiver did not start in time")??
            .context(
                "the receiver exited before listening (are tests/requirements.txt installed?)",
            )?;
        let port = line
            .strip_prefix("listening on ")
            .context("unexpected first line")?
            .trim()
            .parse()?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(PyReceiver {
            _child: child,
            port,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the receiver concluded about each request, in arrival order.
    pub async fn results(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        Ok(reqwest::get(self.url("/results")).await?.json().await?)
    }
}

/// The services `target` (`host:port`) lists through gRPC server reflection over TLS, trusting
/// only the CA in `ca_pem` and naming the server `server_name`: grpcurl's `-cacert ... list`,
/// done by grpcio (`tests/clients/grpc_reflection_list.py`). An error carries what it printed.
pub fn grpc_reflection_list(
    target: &str,
    ca_pem: &std::path::Path,
    server_name: &str,
) -> anyhow::Result<Vec<String>> {
    ensure_requirements();
    let script = crate::binaries::repo_path("tests/clients/grpc_reflection_list.py");
    let output = std::process::Command::new(python())
        .arg(&script)
        .arg(target)
        .arg(ca_pem)
        .arg(server_name)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The interpreter the receivers run on: the tests' own virtual environment under
/// `target/test-venv`, made from `$PYTHON` (default `python3`) on first use, so a system Python
/// that refuses `pip install` (PEP 668) never matters and nothing is installed system-wide.
fn python() -> PathBuf {
    crate::binaries::target_path("test-venv")
        .join("bin")
        .join("python")
}

/// Makes the virtual environment and installs `tests/requirements.txt` into it once per test
/// process when its packages are missing, so `cargo test` alone works on a fresh machine.
fn ensure_requirements() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let venv = crate::binaries::target_path("test-venv");
        if !python().exists() {
            let base = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
            let status = std::process::Command::new(&base)
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .expect("running python -m venv");
            assert!(
                status.success(),
                "{base} -m venv {} failed (Debian: apt-get install python3-venv)",
                venv.display()
            );
        }
        let present = std::process::Command::new(python())
            .args([
                "-c",
                "import linebot.v3, standardwebhooks, aiosmtpd, grpc, grpc_reflection, cryptography",
            ])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !present {
            let requirements = crate::binaries::repo_path("tests/requirements.txt");
            let status = std::process::Command::new(python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(requirements)
                .status()
                .expect("running pip");
            assert!(
                status.success(),
                "pip install -r tests/requirements.txt into {} failed",
                venv.display()
            );
        }
    });
}
