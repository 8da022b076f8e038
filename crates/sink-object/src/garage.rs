//! A single-node Garage (S3-compatible object store) on loopback, for tests.
//!
//! Started with a temporary layout, key and bucket; stopped on drop. Needs the
//! `garage` binary (`cargo install garage --locked`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Garage server.
pub struct Garage {
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
    /// The S3 endpoint, `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The S3 region.
    pub region: String,
    /// The bucket created for the tests.
    pub bucket: String,
    /// The access key ID.
    pub key_id: String,
    /// The secret key.
    pub secret: String,
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The garage binary: `$AUDIT_GARAGE_BIN`, `garage` on PATH, or `~/.cargo/bin/garage`.
pub fn find_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("AUDIT_GARAGE_BIN") {
        return Some(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("garage"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let p = Path::new(&home).join(".cargo/bin/garage");
        p.is_file().then_some(p)
    })
}

impl Garage {
    /// Starts Garage in `dir` (created), lays out one node, creates a bucket
    /// and a key with read/write on it.
    ///
    /// Its ports are picked free and released before Garage binds them, so a
    /// server started in parallel (another test's) can take one first. Start
    /// then fails to see this server answer on its S3 port with its own key,
    /// and tries again on new ports, three times in all.
    pub fn start(bin: &Path, dir: &Path) -> Result<Self, String> {
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            let attempt_dir = dir.join(format!("attempt-{attempt}"));
            match Self::start_once(bin, &attempt_dir) {
                Ok(g) => return Ok(g),
                Err(e) => failures.push(format!("attempt {attempt}: {e}")),
            }
        }
        Err(failures.join("; "))
    }

    fn start_once(bin: &Path, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let (rpc, s3, admin) = match (rpc, s3, admin) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => return Err("no free loopback port".into()),
        };
        let mut secret = [0u8; 32];
        {
            use std::io::Read;
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut secret))
                .map_err(|e| format!("/dev/urandom: {e}"))?;
        }
        let rpc_secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let config = dir.join("garage.toml");
        let text = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{rpc_secret}\"\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            meta = dir.join("meta").display(),
            data = dir.join("data").display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
        let mut g = Self {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            config,
            child: None,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "audit".into(),
            key_id: String::new(),
            secret: String::new(),
        };
        g.spawn()?;
        let id_out = g.cli(&["node", "id", "-q"])?;
        let id = id_out.trim().split('@').next().unwrap_or("").to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id])?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        g.cli(&["bucket", "create", &g.bucket.clone()])?;
        let key = g.cli(&["key", "create", "audit-key"])?;
        for line in key.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("Key ID:") {
                g.key_id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Secret key:") {
                g.secret = v.trim().to_string();
            }
        }
        if g.key_id.is_empty() || g.secret.is_empty() {
            return Err(format!(
                "could not read the key from garage's output:\n{key}"
            ));
        }
        g.cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            &g.bucket.clone(),
            "--key",
            "audit-key",
        ])?;
        // The bucket is usable once the layout is live; wait until S3 answers.
        g.wait_ready()?;
        Ok(g)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.join("garage.log"))
            .map_err(|e| format!("garage.log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("garage.log: {e}"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        // Wait until the node answers on its RPC port (bounded).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.cli(&["status"]).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "garage exited at start-up ({status}); see {}",
                        self.dir.join("garage.log").display()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err("garage did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the S3 endpoint is this server's, ready for the tests: an
    /// object written there with this server's key reads back. An open port
    /// alone could be another server's.
    fn wait_ready(&self) -> Result<(), String> {
        let addr = self.endpoint.trim_start_matches("http://").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            if Instant::now() > deadline {
                return Err(format!("S3 endpoint {addr} did not open"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let b = opendal::services::S3::default()
            .bucket(&self.bucket)
            .endpoint(&self.endpoint)
            .region(&self.region)
            .access_key_id(&self.key_id)
            .secret_access_key(&self.secret)
            .disable_ec2_metadata();
        let op = opendal::Operator::new(b).map_err(|e| format!("S3 client: {e}"))?;
        let endpoint = self.endpoint.clone();
        // Its own thread and runtime: callers may be sync or inside a runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("runtime for the S3 probe: {e}"))?;
            rt.block_on(probe(op, endpoint, deadline))
        })
        .join()
        .map_err(|_| "the S3 probe panicked".to_string())?
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .map_err(|e| format!("garage {args:?}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Kills the server (an outage). Its data stays for [`Garage::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same data, ports and key.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()?;
        self.wait_ready()
    }

    /// Environment variables that point the S3 tests at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AUDIT_S3_ENDPOINT", self.endpoint.clone()),
            ("AUDIT_S3_BUCKET", self.bucket.clone()),
            ("AUDIT_S3_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }
}

/// Writes, reads back and deletes one object until that works or `deadline`.
async fn probe(op: opendal::Operator, endpoint: String, deadline: Instant) -> Result<(), String> {
    let name = format!("readiness-probe-{}", std::process::id());
    let nonce = format!("{:?}", Instant::now()).into_bytes();
    loop {
        let attempt = async {
            op.write(&name, nonce.clone()).await?;
            let back = op.read(&name).await?.to_vec();
            op.delete(&name).await?;
            Ok::<_, opendal::Error>(back)
        };
        match attempt.await {
            Ok(back) if back == nonce => return Ok(()),
            Ok(_) => return Err(format!("{endpoint} returned another object than written")),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "{endpoint} did not take this server's key within 30 s: {e}"
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
