//! The command line: `eval`, `prune`, `mi`, `self-check`. Each subcommand checks what the
//! user typed, builds the library's types from it, drives the library, and prints; only
//! this module sees the argument structs.

mod common;
mod eval;
mod mi;
mod mixed;
mod prune;
mod self_check;
mod values;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sparsegpt-mi",
    version,
    about = "One-shot OPT compression: SparseGPT, GPTQ and mutual-information channel grouping"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Perplexity of a model on WikiText-2 / PTB / C4, as the published code measures it.
    Eval(eval::EvalArgs),
    /// One-shot compression (SparseGPT / GPTQ / MI grouping), then evaluation.
    Prune(prune::PruneArgs),
    /// Mutual-information matrix of one linear's input channels: PNG heatmap and JSON.
    Mi(mi::MiInspectArgs),
    /// GPU builds: the device solver against the host solver on random layers.
    SelfCheck(self_check::SelfCheckArgs),
}

/// Parses the command line and runs it. A malformed command line ends the process here with
/// clap's message on one line (exit 2); help and version print as clap prints them.
pub fn run() -> Result<()> {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            eprintln!("error: no subcommand: give eval, prune, mi or self-check (--help lists them)");
            std::process::exit(2);
        }
        if !e.use_stderr() {
            e.exit();
        }
        let text = e.render().to_string();
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("{line}");
        std::process::exit(2);
    });
    match cli.command {
        Command::Eval(a) => eval::run(a),
        Command::Prune(a) => prune::run(a),
        Command::Mi(a) => mi::run(a),
        Command::SelfCheck(a) => self_check::run(a),
    }
}
