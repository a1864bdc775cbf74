//! The evaluation and calibration protocol's window length, a run-level setting shared by the
//! stages that follow it (the corpora's windows, the calibration windows, the model's check that
//! it can attend over a window).

use anyhow::{bail, Result};
use serde::Serialize;

/// Tokens per window, evaluation and calibration alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SeqLen(usize);

impl SeqLen {
    /// The published protocol's: 2048 tokens (OPT's max_position_embeddings).
    pub const PUBLISHED: SeqLen = SeqLen(2048);

    /// A window length: at least 2 tokens, so that a window predicts at least one token.
    pub fn new(tokens: usize) -> Result<Self> {
        if tokens < 2 {
            bail!("a window of {tokens} tokens predicts nothing: windows need at least 2 tokens");
        }
        Ok(SeqLen(tokens))
    }

    pub const fn get(self) -> usize {
        self.0
    }
}

impl Default for SeqLen {
    fn default() -> Self {
        SeqLen::PUBLISHED
    }
}

impl std::fmt::Display for SeqLen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_needs_two_tokens() {
        assert_eq!(SeqLen::new(2).unwrap().get(), 2);
        assert_eq!(SeqLen::new(4096).unwrap().get(), 4096);
        for bad in [0, 1] {
            let e = SeqLen::new(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad} tokens")) && e.contains("at least 2"), "{e}");
        }
    }

    #[test]
    fn the_default_is_the_published_protocol_and_serialises_as_a_number() {
        assert_eq!(SeqLen::default().get(), 2048);
        assert_eq!(serde_json::to_string(&SeqLen::default()).unwrap(), "2048");
    }
}
