//! Tokenizers: a `tokenizer.json` as it is (its normalizer, pre-tokenizer and post-processor,
//! which adds the family's BOS: Llama's `<s>`, Llama 3's `<|begin_of_text|>`, OPT's `</s>`);
//! for OPT repositories with only vocab.json + merges.txt, the byte-level BPE with `</s>`
//! (id 2) prepended as BOS that OPT's GPT2Tokenizer amounts to.

use super::files::TokenizerFiles;
use anyhow::{Context, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

/// OPT's BOS is `</s>`, id 2, as in its tokenizer_config.json.
pub const BOS_TOKEN: &str = "</s>";
pub const BOS_ID: u32 = 2;

pub fn load(files: &TokenizerFiles) -> Result<Tokenizer> {
    match files {
        TokenizerFiles::Json(path) => {
            let bad =
                |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: not a readable tokenizer.json ({e})", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
            // Strict JSON first: the tokenizers crate's own reading of some malformed JSON
            // panics (its untagged-enum helper unwraps the parser's error).
            serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|e| bad(&e))?;
            crate::contain::contain("the tokenizers crate", || text.parse::<Tokenizer>().map_err(anyhow::Error::msg))
                .map_err(|e| bad(&e))
        }
        TokenizerFiles::VocabMerges { vocab, merges } => from_vocab_merges(vocab, merges),
    }
}

/// [`load`], refusing a tokenizer whose ids reach beyond the model's embedding rows
/// (`vocab_size` of config.json): such an id would index past the embedding table.
pub fn load_for_vocab(files: &TokenizerFiles, vocab_size: usize) -> Result<Tokenizer> {
    let tok = load(files)?;
    check_fits(&tok, vocab_size).map_err(|e| anyhow::anyhow!("{}: {e}", files.describe()))?;
    Ok(tok)
}

/// Every id the tokenizer can produce (its vocabulary and added tokens) is below `vocab_size`.
pub fn check_fits(tok: &Tokenizer, vocab_size: usize) -> Result<()> {
    let vocab = tok.get_vocab(true);
    if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
        if usize::try_from(id).map_or(true, |id| id >= vocab_size) {
            anyhow::bail!(
                "the tokenizer has ids up to {id} ({token:?}), but config.json's vocab_size is {vocab_size}: the tokenizer does not belong to this model"
            );
        }
    }
    Ok(())
}

/// Builds the fast tokenizer that GPT2Tokenizer(add_bos_token) amounts to for OPT:
/// byte-level pre-tokenisation without a prefix space, BPE, `</s>` before each sequence.
pub fn from_vocab_merges(vocab: &std::path::Path, merges: &std::path::Path) -> Result<Tokenizer> {
    let bpe = BPE::from_file(
        vocab.to_str().context("vocab path is not UTF-8")?,
        merges.to_str().context("merges path is not UTF-8")?,
    )
    .build()
    .map_err(|e| anyhow::anyhow!("cannot build BPE from {} and {}: {e}", vocab.display(), merges.display()))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::new(false, true, true)));
    let template = TemplateProcessing::builder()
        .try_single(format!("{BOS_TOKEN} $A"))
        .and_then(|b| b.try_pair(format!("{BOS_TOKEN} $A {BOS_TOKEN} $B")))
        .map_err(|e| anyhow::anyhow!("tokenizer template: {e}"))?
        .special_tokens(vec![(BOS_TOKEN, BOS_ID)])
        .build()
        .map_err(|e| anyhow::anyhow!("tokenizer template: {e}"))?;
    tok.with_post_processor(Some(template));
    tok.add_special_tokens([
        AddedToken::from("<s>", true),
        AddedToken::from("<pad>", true),
        AddedToken::from("</s>", true),
        AddedToken::from("<unk>", true),
        AddedToken::from("<mask>", true),
    ])
    .map_err(|e| anyhow::anyhow!("tokenizer special tokens: {e}"))?;
    Ok(tok)
}

/// Token ids of `text` with the tokenizer's special tokens (its BOS), as `tokenizer(text).input_ids`.
pub fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok.encode(text, true).map_err(|e| anyhow::anyhow!("tokenizing failed: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_beyond_the_vocabulary_are_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/opt-mini-b");
        let files = TokenizerFiles::Json(dir.join("tokenizer.json"));
        let tok = load_for_vocab(&files, 50272).unwrap();
        let top = tok.get_vocab(true).into_values().max().unwrap();
        load_for_vocab(&files, top as usize + 1).unwrap();
        let e = load_for_vocab(&files, 1000).unwrap_err().to_string();
        assert!(e.contains(&format!("the tokenizer has ids up to {top}")) && e.contains("vocab_size is 1000"), "{e}");
        assert!(e.starts_with(&dir.join("tokenizer.json").display().to_string()), "{e}");
    }
}
