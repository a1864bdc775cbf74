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

/// An error as the one line the binary prints: its chain joined as anyhow's `{:#}` joins it,
/// with each library remedy named by the flag that applies it.
pub fn error_line(e: &anyhow::Error) -> String {
    use sparsegpt_mi::advice::{Advised, Remedy};
    let flag = |r: Remedy| match r {
        Remedy::MoreDamping => "raise --percdamp (e.g. 0.1)".to_string(),
        Remedy::F64InverseOrMoreDamping => "try --hinv-precision f64 or a larger --percdamp".to_string(),
        Remedy::F32Compute => "try --dtype f32".to_string(),
        Remedy::HostSolver => "or solve on the host with --host-solver".to_string(),
        Remedy::ShorterWindows { at_most } => format!("give --seqlen {at_most} or less"),
    };
    e.chain()
        .map(|c| match c.downcast_ref::<Advised>() {
            Some(a) => format!("{}; {}", a.message, flag(a.remedy)),
            None => c.to_string(),
        })
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsegpt_mi::advice::{advised, Remedy};

    #[test]
    fn error_lines_name_the_flag_of_a_remedy_anywhere_in_the_chain() {
        let plain = anyhow::anyhow!("inner\ndetail").context("outer");
        assert_eq!(error_line(&plain), format!("{plain:#}").replace('\n', " "));
        let e = advised("Hessian is not positive definite even after damping", Remedy::MoreDamping)
            .context("layer 3 self_attn.q_proj");
        assert_eq!(
            error_line(&e),
            "layer 3 self_attn.q_proj: Hessian is not positive definite even after damping; raise --percdamp (e.g. 0.1)"
        );
    }
}
