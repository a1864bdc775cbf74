//! Strings → tokens as lm-eval's HF backend makes them (`TemplateLM._encode_pair`,
//! `HFLM.tok_encode`, `HFLM._loglikelihood_tokens`): the context's trailing whitespace moves
//! to the front of the continuation; context + continuation are tokenized together and the
//! continuation's tokens are those past the context's own tokenization; BOS is added as the
//! tokenizer adds it (`add_special_tokens` left at its default), except for a string that
//! already starts with the BOS text; an empty context is the prefix (BOS) token alone.

use super::items::{python_isspace, Request};
use anyhow::{anyhow, bail, Result};
use tokenizers::Tokenizer;

/// A request in tokens: the context's and the continuation's ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

impl TokenRequest {
    /// What the model reads: `(context + continuation)[-(max_length + 1):][:-1]` (the left
    /// truncation of lm-eval's causal path).
    pub fn input(&self, max_length: usize) -> Vec<u32> {
        let whole: Vec<u32> = self.context.iter().chain(&self.continuation).copied().collect();
        let start = whole.len().saturating_sub(max_length + 1);
        whole[start..whole.len() - 1].to_vec()
    }
}

/// The tokenizer facts lm-eval's HF backend uses.
pub struct Encoder<'a> {
    pub tokenizer: &'a Tokenizer,
    /// `tokenizer.decode(prefix_token_id)`: a string starting with it gets no BOS added.
    pub bos_text: Option<String>,
    /// `prefix_token_id`: the BOS (else EOS) id, the context of an empty-context request.
    pub prefix_token_id: u32,
}

impl Encoder<'_> {
    /// `tok_encode(string)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let add_special = !self.bos_text.as_deref().is_some_and(|b| !b.is_empty() && text.starts_with(b));
        self.encode_with(text, add_special)
    }

    fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, add_special_tokens).map_err(|e| anyhow!("tokenizing failed: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `loglikelihood`'s pair encoding of one request.
    pub fn encode_request(&self, r: &Request) -> Result<TokenRequest> {
        let out = if r.context.is_empty() {
            TokenRequest {
                context: vec![self.prefix_token_id],
                continuation: self.encode_with(&r.continuation, false)?,
            }
        } else {
            let (context, continuation) = move_trailing_whitespace(&r.context, &r.continuation);
            let whole = self.encode(&format!("{context}{continuation}"))?;
            let ctx = self.encode(&context)?;
            // lm-eval takes whole[len(ctx):] without checking that ctx is a prefix of whole.
            let cont = whole.get(ctx.len()..).unwrap_or(&[]).to_vec();
            TokenRequest { context: ctx, continuation: cont }
        };
        if out.continuation.is_empty() {
            bail!(
                "the continuation {:?} of context {:?} has no tokens of its own (lm-eval asserts on this too)",
                r.continuation,
                short(&r.context)
            );
        }
        Ok(out)
    }
}

fn short(s: &str) -> String {
    let n = s.chars().count();
    if n <= 60 {
        s.to_string()
    } else {
        format!("…{}", s.chars().skip(n - 60).collect::<String>())
    }
}

/// `_encode_pair`'s whitespace rule: `n = len(context) - len(context.rstrip())` trailing
/// whitespace characters of the context start the continuation instead.
pub fn move_trailing_whitespace(context: &str, continuation: &str) -> (String, String) {
    let kept = context.trim_end_matches(python_isspace);
    let moved = &context[kept.len()..];
    (kept.to_string(), format!("{moved}{continuation}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_whitespace_moves_into_the_continuation() {
        assert_eq!(move_trailing_whitespace("Answer: ", "yes"), ("Answer:".into(), " yes".into()));
        assert_eq!(move_trailing_whitespace("a\n \t", " b"), ("a".into(), "\n \t b".into()));
        assert_eq!(move_trailing_whitespace("a", " b"), ("a".into(), " b".into()));
        assert_eq!(move_trailing_whitespace("a\u{1f}", "b"), ("a".into(), "\u{1f}b".into()));
    }

    #[test]
    fn input_is_the_left_truncated_sequence_less_its_last_token() {
        let r = TokenRequest { context: vec![2, 10, 11, 12], continuation: vec![13, 14] };
        assert_eq!(r.input(2048), vec![2, 10, 11, 12, 13]);
        // max_length 3: the last 4 tokens, less the last.
        assert_eq!(r.input(3), vec![11, 12, 13]);
    }

    fn fixture_tokenizer() -> Option<Tokenizer> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/opt-mini-a/tokenizer.json");
        p.is_file().then(|| Tokenizer::from_file(p).unwrap())
    }

    #[test]
    fn pairs_are_tokenized_together_and_split_after_the_context() {
        let Some(tok) = fixture_tokenizer() else { return };
        let enc = Encoder { tokenizer: &tok, bos_text: Some("</s>".into()), prefix_token_id: 2 };
        let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
        let r = enc
            .encode_request(&Request { context: "Question: Is it?\nAnswer:".into(), continuation: " yes".into() })
            .unwrap();
        let mut ctx = vec![2];
        ctx.extend(ids("Question: Is it?\nAnswer:"));
        assert_eq!(r.context, ctx);
        assert_eq!(r.continuation, ids(" yes"));
        // A trailing space of the context is scored with the continuation: " door" is one
        // token, not "the " + "door".
        let r =
            enc.encode_request(&Request { context: "she opened the ".into(), continuation: "door".into() }).unwrap();
        assert_eq!(r.continuation, ids(" door"));
        // Empty context: the prefix token, then the continuation without BOS.
        let r = enc.encode_request(&Request { context: "".into(), continuation: " one".into() }).unwrap();
        assert_eq!((r.context, r.continuation), (vec![2], ids(" one")));
        // A context starting with the BOS text gets no second BOS.
        let r = enc.encode_request(&Request { context: "</s>Hi".into(), continuation: " there".into() }).unwrap();
        assert_eq!(r.context[0], 2);
        assert_ne!(r.context.get(1), Some(&2));
    }
}
