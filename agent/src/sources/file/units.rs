//! From a file's lines to event units: Docker records unwrapped (and split
//! records rejoined), multi-line events joined, over-long and invalid UTF-8
//! lines flagged. A unit spans `offset..end` of the file; its acknowledgement
//! moves the checkpoint to `end`.

use std::time::Instant;

use chrono::{DateTime, Utc};

use flotilla_core::codec::{self, Codec, Decoded};

use super::docker;
use super::tailer::{Line, Tailer};
use crate::config::MultilineConfig;
use crate::sources::multiline::Joiner;
use crate::stats::SourceStats;

/// Metadata a Docker record adds to its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerMeta {
    pub stream: String,
    pub ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub text: String,
    pub offset: u64,
    pub end: u64,
    pub split: bool,
    pub invalid_utf8: bool,
    pub docker: Option<DockerMeta>,
    pub docker_error: bool,
}

/// A unit decoded for publishing.
pub enum Body<'a> {
    Full(Decoded),
    /// A clean JSON line: its other keys kept as JSON text, no tree built.
    Lean(codec::json::Lean<'a>),
}

impl Unit {
    pub fn body(&self, codec: Codec) -> Body<'_> {
        let plain = !self.split && !self.invalid_utf8 && !self.docker_error && self.docker.is_none();
        if codec == Codec::Json && plain {
            if let Some(lean) = codec::json::decode_lean(&self.text) {
                return Body::Lean(lean);
            }
        }
        Body::Full(self.decode(codec))
    }

    pub fn decode(&self, codec: Codec) -> Decoded {
        let mut d = codec::decode(codec, &self.text);
        if self.split {
            d.fields.insert("split".into(), true.into());
        }
        if self.invalid_utf8 {
            d.fields.insert("invalid_utf8".into(), true.into());
        }
        if self.docker_error {
            d.fields.insert("decode_error".into(), "not a Docker json-file record".into());
        }
        if let Some(meta) = &self.docker {
            d.fields.insert("stream".into(), meta.stream.clone().into());
            d.ts = d.ts.or(meta.ts);
        }
        d
    }
}

type Tok = (u64, u64, Option<DockerMeta>);

/// A tailed file and the joining state of its lines.
pub struct Tracked {
    pub tailer: Tailer,
    /// The file's identity, shared by its in-flight publishes.
    pub key: std::sync::Arc<str>,
    /// The file's subject and `source` label, computed once (the subject
    /// is `Bytes` inside: cloning it per publish copies nothing).
    pub subject: async_nats::Subject,
    pub source: String,
    /// This file's events' org, app, region, host and source as JSON
    /// ([`flotilla_core::event::origin_json`]); empty until first needed.
    pub origin: Vec<u8>,
    docker: bool,
    /// A Docker record split by Docker itself (no trailing newline yet).
    docker_partial: Option<(String, u64, DockerMeta)>,
    joiner: Option<Joiner<Tok>>,
}

impl Tracked {
    pub fn new(tailer: Tailer, subject: String, docker: bool, multiline: Option<&MultilineConfig>) -> Tracked {
        let source = format!("file:{}", tailer.path.display());
        let key = tailer.key.as_str().into();
        Tracked {
            tailer,
            key,
            subject: subject.into(),
            source,
            origin: Vec::new(),
            docker,
            docker_partial: None,
            joiner: crate::sources::joiner_for(multiline),
        }
    }

    /// The file is now at `path` (renamed by rotation).
    pub fn set_path(&mut self, path: std::path::PathBuf) {
        self.source = format!("file:{}", path.display());
        self.origin.clear();
        self.tailer.path = path;
    }

    /// Read new lines into units; `None` when nothing new was read.
    pub fn read(&mut self, max_line: usize, budget: usize, stats: &SourceStats) -> std::io::Result<Option<Vec<Unit>>> {
        let lines = self.tailer.read_lines(max_line, budget)?;
        if lines.is_empty() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            stats.read.inc();
            stats.bytes_read.add(line.bytes.len() as u64);
            if line.split {
                stats.split_lines.inc();
            }
            if let Some(unit) = self.unwrap_docker(line, stats) {
                self.join(unit, now, &mut out);
            }
        }
        Ok(Some(out))
    }

    fn unwrap_docker(&mut self, line: Line, stats: &SourceStats) -> Option<Unit> {
        let (offset, end, split) = (line.offset, line.end, line.split);
        let (text, invalid_utf8) = match String::from_utf8(line.bytes) {
            Ok(text) => (text, false),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), true),
        };
        if invalid_utf8 {
            stats.invalid_utf8.inc();
        }
        let plain = Unit { text, offset, end, split, invalid_utf8, docker: None, docker_error: false };
        if !self.docker {
            return Some(plain);
        }
        match docker::parse(&plain.text) {
            Ok(d) => {
                let meta = DockerMeta { stream: d.stream, ts: d.ts };
                let (text, offset, meta) = match self.docker_partial.take() {
                    Some((mut head, first, first_meta)) => {
                        head.push_str(&d.log);
                        (head, first, first_meta)
                    }
                    None => (d.log, offset, meta),
                };
                if d.partial {
                    self.docker_partial = Some((text, offset, meta));
                    return None;
                }
                Some(Unit { text, offset, end, split, invalid_utf8, docker: Some(meta), docker_error: false })
            }
            Err(_) => Some(Unit { docker_error: true, ..plain }),
        }
    }

    fn join(&mut self, unit: Unit, now: Instant, out: &mut Vec<Unit>) {
        let Some(joiner) = self.joiner.as_mut() else {
            out.push(unit);
            return;
        };
        if unit.split || unit.invalid_utf8 || unit.docker_error {
            // Flagged lines stand alone, so their flags stay true.
            out.extend(joiner.flush().map(piece_unit));
            out.push(unit);
            return;
        }
        let tok = (unit.offset, unit.end, unit.docker.clone());
        out.extend(joiner.push(&unit.text, tok, now).map(piece_unit));
    }

    /// Multi-line events whose timeout passed.
    pub fn flush_due(&mut self, now: Instant) -> Vec<Unit> {
        self.joiner.as_mut().and_then(|j| j.flush_due(now)).map(piece_unit).into_iter().collect()
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.joiner.as_ref().and_then(Joiner::next_deadline)
    }

    pub fn rewind(&mut self) {
        self.tailer.rewind();
        self.docker_partial = None;
        if let Some(j) = self.joiner.as_mut() {
            j.clear();
        }
    }

    pub fn drained(&self) -> bool {
        self.docker_partial.is_none() && !self.joiner.as_ref().is_some_and(Joiner::pending) && self.tailer.drained()
    }
}

fn piece_unit(p: crate::sources::multiline::Piece<Tok>) -> Unit {
    Unit {
        text: p.text,
        offset: p.first.0,
        end: p.last.1,
        split: false,
        invalid_utf8: false,
        docker: p.first.2,
        docker_error: false,
    }
}
