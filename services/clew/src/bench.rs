//! `clew bench ledger`: sequencing throughput with signature verification
//! against the machine's raw Ed25519 verify rate, and inclusion-proof latency.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clew_events::ProducerKey;
use clew_ledger::{Ledger, LedgerOptions, Submission};
use rayon::prelude::*;
use serde::Serialize;

use crate::synthetic::{self, Producers};

/// Figures printed as the last line of `clew bench ledger`.
#[derive(Debug, Serialize)]
pub struct LedgerBench {
    /// Events sequenced (excluding setup).
    pub events: u64,
    /// Mean canonical envelope size in bytes.
    pub mean_event_bytes: u64,
    /// Batch size used.
    pub batch: usize,
    /// Sequenced events per second, signature checks and fsync per batch included.
    pub events_per_s: f64,
    /// Ed25519 verifications per second on all cores (verify_strict, same messages).
    pub raw_verify_per_s: f64,
    /// Ed25519 verifications per second on one core.
    pub raw_verify_single_core_per_s: f64,
    /// events_per_s / raw_verify_per_s.
    pub ratio_to_raw_verify: f64,
    /// Leaves in the tree when proofs were measured.
    pub tree_size: u64,
    /// Inclusion proof latency, median, microseconds.
    pub inclusion_proof_p50_us: f64,
    /// Inclusion proof latency, 99th percentile, microseconds.
    pub inclusion_proof_p99_us: f64,
}

/// Runs the ledger benchmark with `events` events in batches of `batch`.
pub fn ledger(events: u64, batch: usize, producers: usize) -> Result<LedgerBench> {
    ensure!(events >= 1000, "use at least 1,000 events");
    let dir = tempfile::tempdir()?;
    let ledger_key = ProducerKey::from_seed("bench.clew.example/ledger", [1; 32])?;
    let admin = ProducerKey::from_seed("bench-admin", [2; 32])?;
    let p = Producers::new(admin.clone(), "admin", producers);

    // 1. Generate the signed stream (not timed).
    let gen = crate::progress_bar(events, "signing");
    let mut stream = Vec::with_capacity(events as usize);
    let chunk = 50_000u64;
    let mut at = 0;
    while at < events {
        let end = (at + chunk).min(events);
        stream.extend(synthetic::events(&p, at..end, events));
        gen.set_position(end);
        at = end;
    }
    gen.finish_and_clear();
    let mean_event_bytes = stream.iter().map(|e| e.len() as u64).sum::<u64>() / events;

    // 2. Raw Ed25519 verify rate over the same messages, one core and all cores.
    let sample: Vec<_> = stream
        .iter()
        .step_by((events / 20_000).max(1) as usize)
        .take(20_000)
        .map(|b| clew_events::open(b).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    let verifiers: std::collections::HashMap<String, clew_events::VerifierKey> = p
        .ingest
        .iter()
        .chain(std::iter::once(&admin))
        .map(|k| (k.key_id().to_string(), k.verifier()))
        .collect();
    let check = |o: &clew_events::OpenedEnvelope| {
        verifiers
            .get(o.key_id())
            .map(|v| o.verify_signature(v).is_ok())
            .unwrap_or(false)
    };
    let t = Instant::now();
    let ok = sample.iter().filter(|o| check(o)).count();
    let raw_single = sample.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ok_par = sample.par_iter().filter(|o| check(o)).count();
    let raw_all = sample.len() as f64 / t.elapsed().as_secs_f64();
    ensure!(
        ok == sample.len() && ok_par == ok,
        "benchmark signatures must verify"
    );

    // 3. Sequence into a fresh durable ledger (fsync per batch, as in production).
    let ledger = Ledger::create(
        dir.path(),
        &ledger_key.to_signer_text(),
        &admin,
        "admin",
        LedgerOptions::default(),
    )?;
    let regs = p.registrations();
    let setup: Vec<Submission> = regs
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| Submission {
            offset: i as u64,
            bytes,
        })
        .collect();
    let r = ledger.sequence("setup", setup)?;
    ensure!(r.rejected.is_empty(), "setup refused: {:?}", r.rejected);

    let pb = crate::progress_bar(events, "sequencing");
    let mut offset = 0u64;
    let mut rejected = 0usize;
    let started = Instant::now();
    let mut it = stream.into_iter();
    let batches = std::iter::from_fn(|| {
        let subs: Vec<Submission> = it
            .by_ref()
            .take(batch)
            .map(|bytes| {
                offset += 1;
                Submission { offset, bytes }
            })
            .collect();
        (!subs.is_empty()).then_some(subs)
    });
    ledger.sequence_pipelined("bench", batches, |r| -> Result<()> {
        rejected += r.rejected.len();
        if let Some(first) = r.rejected.first() {
            anyhow::bail!("benchmark event refused: {:?}", first);
        }
        pb.inc((r.accepted.len() + r.rejected.len()) as u64);
        Ok(())
    })?;
    let elapsed = started.elapsed();
    pb.finish_and_clear();
    ensure!(rejected == 0, "{rejected} benchmark events were refused");
    let events_per_s = events as f64 / elapsed.as_secs_f64();

    // 4. Inclusion proofs at the final size.
    let size = ledger.size();
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..10_000 {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        let index = rng_state % size;
        let t = Instant::now();
        let proof = ledger.inclusion_proof(index, size)?;
        let took = t.elapsed();
        std::hint::black_box(proof);
        hist.record(took.as_nanos().max(1) as u64)?;
    }
    let us = |q: f64| Duration::from_nanos(hist.value_at_quantile(q)).as_secs_f64() * 1e6;

    Ok(LedgerBench {
        events,
        mean_event_bytes,
        batch,
        events_per_s,
        raw_verify_per_s: raw_all,
        raw_verify_single_core_per_s: raw_single,
        ratio_to_raw_verify: events_per_s / raw_all,
        tree_size: size,
        inclusion_proof_p50_us: us(0.5),
        inclusion_proof_p99_us: us(0.99),
    })
}
