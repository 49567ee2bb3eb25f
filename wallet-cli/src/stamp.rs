//! Stamping a transaction on every core, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::sync::atomic::AtomicBool;

use anyhow::{Result, anyhow};
use indicatif::{ProgressBar, ProgressStyle};
use pyralog_ledger::pow::{self, PowKey, SolveParams};
use pyralog_ledger::{Stamp, TxBody};

/// Solves a stamp of at least `bits` for `body`; shows progress when stderr is
/// a terminal and stdout is not being piped.
pub fn solve(body: &TxBody, bits: u32) -> Result<Stamp> {
    let key = PowKey::for_chain(&body.chain_id);
    let expected = pow::expected_attempts(bits) as u64;
    let show = std::io::stderr().is_terminal() && std::io::stdout().is_terminal() && bits >= 16;
    let bar = if show {
        let bar = ProgressBar::new(expected);
        bar.set_style(
            ProgressStyle::with_template(
                "stamping {bar:30} {human_pos}/{human_len} hashes ({per_sec}, ~{eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let result = pow::solve(
        &key,
        &body.id(),
        SolveParams::new(bits),
        &AtomicBool::new(false),
        &|n| {
            bar.set_position(n.min(expected));
        },
    );
    bar.finish_and_clear();
    result.map_err(|e| anyhow!("no stamp found: {e:?}"))
}
