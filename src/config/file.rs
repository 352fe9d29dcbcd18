//! The config file as the user wrote it (SPEC §2): its top-level sections, each key with its
//! default. Sources and sinks are in [`super::source`] and [`super::sink`], one struct per kind.
//!
//! Unknown keys are refused (`deny_unknown_fields`), and values are checked while they are read
//! (names, durations, filters, enums), so figment's error already names the key. Nothing here does
//! I/O; turning this into running parts is [`super::Config::build`]. Every field's doc ends with its
//! default, and the tables of `docs/configuration.md` are written from these.

use super::sink::SinkSection;
use super::source::SourceSection;
use super::values::{ByteSize, lenient_u64};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// The whole config file.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Checkpoints, dead letters and rejected lines. Default `./flagtail-state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Longer lines are rejected (recorded and skipped). Default 1048576.
    #[serde(default = "default_max_line_bytes", deserialize_with = "lenient_u64")]
    #[schemars(with = "super::schema::Whole")]
    pub max_line_bytes: u64,
    /// Time allowed on SIGTERM to finish in-flight deliveries. Default `10s`.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub shutdown_grace: Duration,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub rejected: RejectedSection,
    #[serde(default)]
    pub attempts: AttemptsSection,
    /// Where events come from. Default: none (an error: at least one is needed).
    #[serde(default)]
    pub sources: Vec<SourceSection>,
    /// Where events go. Default: none (an error: at least one is needed).
    #[serde(default)]
    pub sinks: Vec<SinkSection>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of `/healthz`, `/readyz` and `/metrics`; `""` turns it off. Default `127.0.0.1:9464`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`. Default `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info`, `flagtail=debug`); `RUST_LOG` overrides it. Default `info`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// How often a summary of what happened is logged at info, when something did; `0s` never.
    /// Default `1m`.
    #[serde(default = "default_summary_interval", with = "humantime_serde")]
    #[schemars(with = "super::schema::Duration")]
    pub summary_interval: Duration,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::default(),
            level: default_log_level(),
            summary_interval: default_summary_interval(),
        }
    }
}

fn default_summary_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// What the journal of one socket or HTTP source may hold; when full, sockets stop reading
    /// and HTTP answers 503. Default `256MiB`.
    #[serde(default = "default_journal_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            max_bytes: default_journal_bytes(),
        }
    }
}

fn default_journal_bytes() -> ByteSize {
    ByteSize(256 * 1024 * 1024)
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectedSection {
    /// What the rejected file of one source may hold; its oldest records are dropped (and
    /// counted) to make room. Default `64MiB`.
    #[serde(default = "default_rejected_bytes")]
    pub max_bytes: ByteSize,
}

impl Default for RejectedSection {
    fn default() -> Self {
        RejectedSection {
            max_bytes: default_rejected_bytes(),
        }
    }
}

/// The attempt log (`state_dir/attempts/`): every attempt of every sink, on record.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttemptsSection {
    /// Attempts kept per sink (the newest; up to as many older ones stay on disk until their
    /// file is reused); 0 records none. Default 1000.
    #[serde(default = "default_attempts_keep", deserialize_with = "lenient_u64")]
    #[schemars(with = "super::schema::Whole")]
    pub keep: u64,
}

impl Default for AttemptsSection {
    fn default() -> Self {
        AttemptsSection {
            keep: default_attempts_keep(),
        }
    }
}

fn default_attempts_keep() -> u64 {
    1000
}

fn default_rejected_bytes() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("./flagtail-state")
}
fn default_max_line_bytes() -> u64 {
    1_048_576
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_log_level() -> String {
    "info".into()
}
