//! End-to-end tests: the real `weft` binary, real components built from
//! `tests/fixtures/probe`, HTTP over loopback.

mod support;

mod asyncs;
mod buses;
mod cli;
mod cluster;
mod deploys;
mod executions;
mod forwarding;
mod hardening;
mod isolation;
mod kv;
mod objects;
mod queues;
mod routing;
mod schedules;
mod telemetry;
mod topics;
mod workflows;
