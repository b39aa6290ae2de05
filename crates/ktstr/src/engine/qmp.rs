//! A minimal QMP client (qemu's JSON machine protocol over a unix socket): enough to stop,
//! save, restore and resume a guest for warm starts. One command at a time; events that
//! arrive between replies are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Errors of the QMP conversation.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to qemu's QMP socket {path} within {secs} s: {source}")]
    Connect {
        path: PathBuf,
        secs: u64,
        source: std::io::Error,
    },
    #[error("QMP I/O with qemu failed during `{command}`: {source} (did qemu exit? its stderr says why)")]
    Io {
        command: String,
        source: std::io::Error,
    },
    #[error("qemu sent a line that is not QMP JSON during `{command}`: {line}")]
    Garbled { command: String, line: String },
    #[error("qemu refused `{command}`: {desc}")]
    Refused { command: String, desc: String },
}

/// A connected QMP session, capabilities negotiated.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connect to `path` (qemu creates it shortly after it starts), retrying until
    /// `within` has passed, and leave the greeting's negotiation mode.
    pub fn connect(path: &Path, within: Duration) -> Result<Self, QmpError> {
        let until = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        secs: within.as_secs(),
                        source: e,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let io = |source| QmpError::Io {
            command: "connect".into(),
            source,
        };
        // A hung qemu must not hang the test: every reply comes within this.
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_reply("greeting", true)?;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// Run `command` with `arguments`; its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let msg = match arguments {
            Some(a) => json!({ "execute": command, "arguments": a }),
            None => json!({ "execute": command }),
        };
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QmpError::Io {
                command: command.into(),
                source,
            })?;
        self.read_reply(command, false)
    }

    /// The next line that is not an event: the greeting, or a command's reply.
    fn read_reply(&mut self, command: &str, greeting: bool) -> Result<Value, QmpError> {
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|source| QmpError::Io {
                    command: command.into(),
                    source,
                })?;
            if n == 0 {
                return Err(QmpError::Io {
                    command: command.into(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            let v: Value = serde_json::from_str(&line).map_err(|_| QmpError::Garbled {
                command: command.into(),
                line: line.trim().chars().take(200).collect(),
            })?;
            if v.get("event").is_some() {
                continue;
            }
            if greeting && v.get("QMP").is_some() {
                return Ok(v);
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            let desc = v
                .pointer("/error/desc")
                .and_then(Value::as_str)
                .unwrap_or("no description")
                .to_string();
            return Err(QmpError::Refused {
                command: command.into(),
                desc,
            });
        }
    }

    /// The VM's run state (`running`, `paused`, `inmigrate`, `postmigrate`, ...).
    pub fn status(&mut self) -> Result<String, QmpError> {
        let r = self.execute("query-status", None)?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}
