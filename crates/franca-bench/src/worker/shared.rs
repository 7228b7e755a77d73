//! Counters and histograms shared by all tasks of one worker process, taken as a
//! [`StepResult`] at the end of each command.

use crate::proto::StepResult;
use crate::stats::Hist;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Shared {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub up: AtomicU64,
    /// Stamps older than this (ns) are not measured (stale stanzas from an earlier step).
    pub measure_from_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
    pub latency: Mutex<Hist>,
    pub login: Mutex<Hist>,
    pub lag: Mutex<Hist>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn error(&self, e: impl Into<String>) {
        self.errors.fetch_add(1, Relaxed);
        let mut f = lock(&self.first_error);
        if f.is_none() {
            *f = Some(e.into());
        }
    }

    pub fn latency_ns(&self, ns: u64) {
        lock(&self.latency).record_ns(ns);
    }

    pub fn login_ns(&self, ns: u64) {
        lock(&self.login).record_ns(ns);
    }

    pub fn lag_ns(&self, ns: u64) {
        lock(&self.lag).record_ns(ns);
    }

    /// Takes everything counted since the last call and starts afresh.
    pub fn take(&self, cpu_s: f64) -> StepResult {
        StepResult {
            ok: self.ok.swap(0, Relaxed),
            errors: self.errors.swap(0, Relaxed),
            first_error: lock(&self.first_error).take(),
            sent: self.sent.swap(0, Relaxed),
            received: self.received.swap(0, Relaxed),
            duplicates: self.duplicates.swap(0, Relaxed),
            latency: std::mem::take(&mut *lock(&self.latency)),
            login: std::mem::take(&mut *lock(&self.login)),
            lag: std::mem::take(&mut *lock(&self.lag)),
            cpu_s,
            online: self.up.load(Relaxed),
        }
    }
}
