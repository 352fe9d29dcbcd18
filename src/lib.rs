//! flagtail: tails feature-flag audit logs and delivers every event to webhooks and other sinks.
//!
//! Data flows source → line → event → per-sink queue → delivery → acknowledgement → checkpoint:
//! [`source`] reads lines and turns them into [`event::Event`]s, [`sink`] decides what each sink
//! takes and renders bodies, [`delivery`] sends them with retries and dead letters, [`ack`] tracks
//! which lines every sink is done with, and [`checkpoint`] saves how far that is.

pub mod ack;
pub mod admin;
pub mod attempt_log;
pub mod checkpoint;
pub mod cli;
pub mod command;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod event;
pub mod health;
pub mod hex;
pub mod history;
pub mod intake;
pub mod journal;
pub mod listen;
pub mod metrics;
pub mod pem;
pub mod position;
pub mod record;
pub mod record_log;
pub mod reverse_lines;
pub mod sink;
pub mod source;
pub mod state_lock;
pub mod status;
pub mod summary;
pub mod telemetry;
