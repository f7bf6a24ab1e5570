//! A Tansu broker (a Kafka-compatible broker, Apache-2.0, from crates.io) for the real-broker
//! suite and the Kafka bench: started on a free loopback port in its own temporary directory,
//! killed (SIGKILL) and restarted on the same port on demand, stopped on drop.
//!
//! The binary is `$TANSU` or `tansu` on the PATH; `scripts/broker-suite` installs it.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Tansu {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    storage: String,
    /// A directory of schemas (`<topic>.json`) the broker validates records against: the
    /// `schemas` folder of its own directory.
    schemas: Option<PathBuf>,
}

impl Tansu {
    /// Keeps everything in memory (gone when the broker stops).
    pub fn memory() -> Tansu {
        Self::start("memory://tansu/")
    }

    /// Keeps everything in SQLite in its directory: survives a kill and restart.
    pub fn sqlite() -> Tansu {
        Self::start("sqlite://broker.db")
    }

    /// In memory, validating each topic's records against `<topic>.json` (a JSON schema with
    /// `key` and `value` properties) in `schemas`: a record that does not match is refused
    /// with INVALID_RECORD.
    pub fn with_schemas(schemas: &[(&str, &str)]) -> Tansu {
        let mut tansu = Self::prepare("memory://tansu/");
        let dir = tansu.dir.join("schemas");
        std::fs::create_dir_all(&dir).expect("a schema directory");
        for (topic, schema) in schemas {
            std::fs::write(dir.join(format!("{topic}.json")), schema).expect("a schema file");
        }
        tansu.schemas = Some(dir);
        tansu.restart();
        tansu
    }

    fn start(storage: &str) -> Tansu {
        let mut tansu = Self::prepare(storage);
        tansu.restart();
        tansu
    }

    fn prepare(storage: &str) -> Tansu {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("switchboard-tansu-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Tansu {
            child: None,
            port,
            dir,
            storage: storage.to_owned(),
            schemas: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again, on the same port and data) and waits until it listens and is
    /// still up a second later; one that exits at once is started again, at most twice, and
    /// said so (the tests are about switchboard recovering once the broker is back).
    pub fn restart(&mut self) {
        for attempt in 1..=3 {
            self.start_once();
            std::thread::sleep(Duration::from_secs(1));
            match self.exited() {
                None => return,
                Some(status) => {
                    eprintln!(
                        "Tansu exited ({status}) right after start {attempt}; starting it again"
                    );
                    self.child = None;
                }
            }
        }
        panic!("Tansu did not stay up after 3 starts; see {:?}", self.dir);
    }

    fn start_once(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let bin = std::env::var("TANSU").unwrap_or_else(|_| "tansu".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("a log file");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            // Relative to the broker's working directory (its own): Tansu reads a file://
            // URL's path from there.
            .args(
                self.schemas
                    .iter()
                    .flat_map(|_| ["--schema-registry", "file://./schemas"]),
            )
            .current_dir(&self.dir)
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(log.try_clone().expect("the log file again"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin:?} ({e}); run scripts/broker-suite, which installs Tansu")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Tansu did not listen within 30 s; see {:?}",
                self.dir
            );
            if let Some(status) = self.exited() {
                panic!(
                    "Tansu exited ({status}) before it listened; see {:?}",
                    self.dir
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The broker's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGSTOP: the broker keeps its connections but answers nothing until [`Tansu::resume`].
    pub fn pause(&self) {
        assert!(self.signal("-STOP"), "kill -STOP the broker");
    }

    /// SIGCONT after [`Tansu::pause`].
    pub fn resume(&self) {
        assert!(self.signal("-CONT"), "kill -CONT the broker");
    }

    /// True if the signal was delivered.
    fn signal(&self, signal: &str) -> bool {
        self.child.as_ref().is_some_and(|child| {
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// SIGKILL: no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        // A paused broker is let run again, so it exits like any other.
        self.signal("-CONT");
        self.kill();
        if std::thread::panicking() {
            // Show the broker's log for the failing test (and keep it).
            let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("Tansu log tail ({:?}):", self.dir);
            for line in tail.into_iter().rev() {
                eprintln!("  {line}");
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
