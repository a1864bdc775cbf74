//! Each task's prompt construction: a dataset row (the columns of the hub's parquet file) →
//! the requests lm-eval builds for it (zero-shot, no description): the context is
//! `doc_to_text`, each continuation the YAML's `target_delimiter` (" ") followed by a choice
//! (`doc_to_choice`), the gold answer `doc_to_target`. WinoGrande has several contexts and one
//! continuation (lm-eval's "multiple input" form: `doc_to_text` gives the gold index); LAMBADA
//! one request whose continuation is the last word.

use super::Task;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

/// The YAMLs leave `target_delimiter` at lm-eval's default.
pub const TARGET_DELIMITER: &str = " ";

/// One (context, continuation) pair, as lm-eval passes it to `loglikelihood`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Request {
    pub context: String,
    pub continuation: String,
}

/// One evaluated document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// One request per choice; `choices` are `doc_to_choice`'s strings, whose lengths in
    /// characters normalise acc_norm.
    Choice { requests: Vec<Request>, choices: Vec<String>, gold: usize },
    /// LAMBADA: one request; acc is whether its continuation is the greedy one.
    Loglikelihood { request: Request },
}

impl Item {
    pub fn requests(&self) -> Vec<&Request> {
        match self {
            Item::Choice { requests, .. } => requests.iter().collect(),
            Item::Loglikelihood { request } => vec![request],
        }
    }
}

/// The columns a task's rows need (those of its hub parquet file that it reads).
pub fn required_columns(task: Task) -> &'static [&'static str] {
    match task {
        Task::Piqa => &["goal", "sol1", "sol2", "label"],
        Task::ArcEasy | Task::ArcChallenge => &["question", "choices", "answerKey"],
        Task::Hellaswag => &["activity_label", "ctx_a", "ctx_b", "endings", "label"],
        Task::Winogrande => &["sentence", "option1", "option2", "answer"],
        Task::Boolq => &["passage", "question", "label"],
        Task::Rte => &["sentence1", "sentence2", "label"],
        Task::Openbookqa => &["question_stem", "choices", "answerKey"],
        Task::LambadaOpenai => &["text"],
    }
}

#[derive(Deserialize)]
pub struct PiqaRow {
    pub goal: String,
    pub sol1: String,
    pub sol2: String,
    pub label: i64,
}

/// ARC's and OpenBookQA's `choices` struct.
#[derive(Deserialize)]
pub struct LabelledChoices {
    pub text: Vec<String>,
    pub label: Vec<String>,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
pub struct ArcRow {
    pub question: String,
    pub choices: LabelledChoices,
    pub answerKey: String,
}

#[derive(Deserialize)]
pub struct HellaswagRow {
    pub activity_label: String,
    pub ctx_a: String,
    pub ctx_b: String,
    pub endings: Vec<String>,
    /// A string in the dataset ("0".."3").
    pub label: String,
}

#[derive(Deserialize)]
pub struct WinograndeRow {
    pub sentence: String,
    pub option1: String,
    pub option2: String,
    /// "1" or "2".
    pub answer: String,
}

#[derive(Deserialize)]
pub struct BoolqRow {
    pub passage: String,
    pub question: String,
    pub label: i64,
}

#[derive(Deserialize)]
pub struct RteRow {
    pub sentence1: String,
    pub sentence2: String,
    pub label: i64,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
pub struct OpenbookqaRow {
    pub question_stem: String,
    pub choices: LabelledChoices,
    pub answerKey: String,
}

#[derive(Deserialize)]
pub struct LambadaRow {
    pub text: String,
}

/// A row (as a JSON object of its columns) → the task's item.
pub fn item(task: Task, row: serde_json::Value) -> Result<Item> {
    fn de<T: serde::de::DeserializeOwned>(row: serde_json::Value) -> Result<T> {
        serde_json::from_value(row).map_err(|e| anyhow!("{e}"))
    }
    match task {
        Task::Piqa => piqa(&de(row)?),
        Task::ArcEasy | Task::ArcChallenge => arc(&de(row)?),
        Task::Hellaswag => hellaswag(&de(row)?),
        Task::Winogrande => winogrande(&de(row)?),
        Task::Boolq => boolq(&de(row)?),
        Task::Rte => rte(&de(row)?),
        Task::Openbookqa => openbookqa(&de(row)?),
        Task::LambadaOpenai => Ok(lambada(&de(row)?)),
    }
}

/// Requests for a context and its choices, each continuation `" " + choice`.
fn choice_item(context: String, choices: Vec<String>, gold: usize) -> Result<Item> {
    if gold >= choices.len() {
        bail!("the gold answer {gold} is not among the {} choices", choices.len());
    }
    let requests = choices
        .iter()
        .map(|c| Request { context: context.clone(), continuation: format!("{TARGET_DELIMITER}{c}") })
        .collect();
    Ok(Item::Choice { requests, choices, gold })
}

fn label_index(label: i64, n: usize) -> Result<usize> {
    usize::try_from(label).ok().filter(|&l| l < n).ok_or_else(|| anyhow!("label {label} is not one of 0..{n}"))
}

/// `doc_to_text: "Question: {{goal}}\nAnswer:"`, choices `[sol1, sol2]`, target `label`.
pub fn piqa(r: &PiqaRow) -> Result<Item> {
    choice_item(
        format!("Question: {}\nAnswer:", r.goal),
        vec![r.sol1.clone(), r.sol2.clone()],
        label_index(r.label, 2)?,
    )
}

/// `"Question: {{question}}\nAnswer:"`, choices `choices.text`, target
/// `choices.label.index(answerKey)`.
pub fn arc(r: &ArcRow) -> Result<Item> {
    let gold = labelled_gold(&r.choices, &r.answerKey)?;
    choice_item(format!("Question: {}\nAnswer:", r.question), r.choices.text.clone(), gold)
}

fn labelled_gold(c: &LabelledChoices, key: &str) -> Result<usize> {
    if c.text.len() != c.label.len() {
        bail!("choices.text has {} entries and choices.label {}", c.text.len(), c.label.len());
    }
    c.label
        .iter()
        .position(|l| l == key)
        .ok_or_else(|| anyhow!("answerKey '{key}' is not in choices.label {:?}", c.label))
}

/// `utils.preprocess` of lm-eval's hellaswag task: strip, " [title]" → ". ", drop `[...]`
/// spans, then each double space → one.
pub fn hellaswag_preprocess(text: &str) -> String {
    use std::sync::OnceLock;
    static BRACKETS: OnceLock<regex::Regex> = OnceLock::new();
    let brackets = BRACKETS.get_or_init(|| regex::Regex::new(r"\[.*?\]").expect("static regex"));
    let t = python_strip(text).replace(" [title]", ". ");
    brackets.replace_all(&t, "").replace("  ", " ")
}

/// Python's `str.capitalize()`: the first character upper-cased, the rest lower-cased
/// (Python title-cases the first character: it differs from upper case only for the four
/// digraph letters such as "ǆ").
pub fn python_capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => first.to_uppercase().chain(chars.as_str().to_lowercase().chars()).collect(),
    }
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the separators
/// U+001C..U+001F, which Python counts as whitespace and Rust does not.
pub fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub fn python_strip(s: &str) -> &str {
    s.trim_matches(python_isspace)
}

/// `process_docs`: query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
/// choices = preprocess(each ending), gold = int(label).
pub fn hellaswag(r: &HellaswagRow) -> Result<Item> {
    let ctx = format!("{} {}", r.ctx_a, python_capitalize(&r.ctx_b));
    let query = hellaswag_preprocess(&format!("{}: {ctx}", r.activity_label));
    let choices: Vec<String> = r.endings.iter().map(|e| hellaswag_preprocess(e)).collect();
    let gold: i64 = r.label.trim().parse().map_err(|_| anyhow!("label '{}' is not an integer", r.label))?;
    let gold = label_index(gold, choices.len())?;
    choice_item(query, choices, gold)
}

/// `preprocess_winogrande`: the contexts are the sentence up to the blank with each option
/// put in (`doc_to_choice`), the continuation is " " + the rest of the sentence after the
/// blank, stripped (`doc_to_target`); the gold index is `{"1": 0, "2": 1}[answer]`
/// (`doc_to_text`). Only the shared suffix is scored ("partial scoring").
pub fn winogrande(r: &WinograndeRow) -> Result<Item> {
    let blank = r.sentence.find('_').ok_or_else(|| anyhow!("sentence has no blank '_': {:?}", r.sentence))?;
    let target = python_strip(&r.sentence[blank + 1..]);
    let gold = match r.answer.as_str() {
        "1" => 0,
        "2" => 1,
        other => bail!("answer '{other}' is neither \"1\" nor \"2\""),
    };
    let choices: Vec<String> =
        [&r.option1, &r.option2].iter().map(|o| format!("{}{o}", &r.sentence[..blank])).collect();
    let requests = choices
        .iter()
        .map(|c| Request { context: c.clone(), continuation: format!("{TARGET_DELIMITER}{target}") })
        .collect();
    Ok(Item::Choice { requests, choices, gold })
}

/// `"{{passage}}\nQuestion: {{question}}?\nAnswer:"`, choices `["no", "yes"]`, target `label`.
pub fn boolq(r: &BoolqRow) -> Result<Item> {
    choice_item(
        format!("{}\nQuestion: {}?\nAnswer:", r.passage, r.question),
        vec!["no".into(), "yes".into()],
        label_index(r.label, 2)?,
    )
}

/// `"{{sentence1}}\nQuestion: {{sentence2}} True or False?\nAnswer:"`, choices
/// `["True", "False"]` (label 0 is entailment), target `label`.
pub fn rte(r: &RteRow) -> Result<Item> {
    choice_item(
        format!("{}\nQuestion: {} True or False?\nAnswer:", r.sentence1, r.sentence2),
        vec!["True".into(), "False".into()],
        label_index(r.label, 2)?,
    )
}

/// `doc_to_text: question_stem`, choices `choices.text`, target
/// `choices.label.index(answerKey.lstrip())`.
pub fn openbookqa(r: &OpenbookqaRow) -> Result<Item> {
    let key = r.answerKey.trim_start_matches(python_isspace);
    let gold = labelled_gold(&r.choices, key)?;
    choice_item(r.question_stem.clone(), r.choices.text.clone(), gold)
}

/// `doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"`, `doc_to_target: "{{' '+text.split(' ')[-1]}}"`:
/// split on single spaces (Python's `split(' ')`, empty pieces kept).
pub fn lambada(r: &LambadaRow) -> Item {
    let words: Vec<&str> = r.text.split(' ').collect();
    let (last, rest) = words.split_last().expect("split yields at least one piece");
    Item::Loglikelihood { request: Request { context: rest.join(" "), continuation: format!(" {last}") } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(c: &str, k: &str) -> Request {
        Request { context: c.into(), continuation: k.into() }
    }

    // Items written here in each dataset's schema (not copied from the datasets).
    #[test]
    fn piqa_question_answer_prompt() {
        let r = PiqaRow {
            goal: "To dry a wet phone".into(),
            sol1: "put it in rice.".into(),
            sol2: "put it in soup.".into(),
            label: 0,
        };
        let Item::Choice { requests, choices, gold } = piqa(&r).unwrap() else { panic!() };
        assert_eq!(requests[0], req("Question: To dry a wet phone\nAnswer:", " put it in rice."));
        assert_eq!(requests[1].continuation, " put it in soup.");
        assert_eq!((choices.len(), gold), (2, 0));
        assert!(piqa(&PiqaRow { label: 2, ..r }).unwrap_err().to_string().contains("label 2"));
    }

    #[test]
    fn arc_gold_is_the_position_of_answer_key() {
        let r = ArcRow {
            question: "Which is a liquid?".into(),
            choices: LabelledChoices {
                text: vec!["ice".into(), "water".into(), "steam".into()],
                label: vec!["1".into(), "2".into(), "3".into()],
            },
            answerKey: "2".into(),
        };
        let Item::Choice { requests, gold, .. } = arc(&r).unwrap() else { panic!() };
        assert_eq!(requests[1], req("Question: Which is a liquid?\nAnswer:", " water"));
        assert_eq!(gold, 1);
        let bad = ArcRow { answerKey: "D".into(), ..r };
        assert!(arc(&bad).unwrap_err().to_string().contains("answerKey 'D'"));
    }

    #[test]
    fn hellaswag_preprocess_as_lm_eval() {
        // strip, " [title]" → ". ", bracket spans dropped, double spaces folded once.
        assert_eq!(hellaswag_preprocess("  Make tea [title] Boil water.  "), "Make tea. Boil water.");
        assert_eq!(hellaswag_preprocess("a [step] b [x]c"), "a b c");
        assert_eq!(hellaswag_preprocess("a    b"), "a  b");
        assert_eq!(python_capitalize("tHE Dog"), "The dog");
        let r = HellaswagRow {
            activity_label: "Making tea".into(),
            ctx_a: "A man fills a kettle.".into(),
            ctx_b: "he".into(),
            endings: vec!["boils it [title] slowly.".into(), "drinks the kettle.".into()],
            label: "0".into(),
        };
        let Item::Choice { requests, choices, gold } = hellaswag(&r).unwrap() else { panic!() };
        assert_eq!(requests[0], req("Making tea: A man fills a kettle. He", " boils it. slowly."));
        assert_eq!(choices[1], "drinks the kettle.");
        assert_eq!(gold, 0);
    }

    #[test]
    fn winogrande_contexts_vary_and_the_suffix_is_scored() {
        let r = WinograndeRow {
            sentence: "The cup fell off the shelf because _ was too close to the edge.".into(),
            option1: "the cup".into(),
            option2: "the shelf".into(),
            answer: "1".into(),
        };
        let Item::Choice { requests, choices, gold } = winogrande(&r).unwrap() else { panic!() };
        assert_eq!(requests[0], req("The cup fell off the shelf because the cup", " was too close to the edge."));
        assert_eq!(requests[1], req("The cup fell off the shelf because the shelf", " was too close to the edge."));
        assert_eq!(choices[1], "The cup fell off the shelf because the shelf");
        assert_eq!(gold, 0);
        assert!(winogrande(&WinograndeRow { answer: "".into(), ..r }).is_err());
    }

    #[test]
    fn boolq_rte_and_openbookqa_prompts() {
        let b = boolq(&BoolqRow { passage: "Cats purr.".into(), question: "do cats purr".into(), label: 1 }).unwrap();
        let Item::Choice { requests, gold, .. } = b else { panic!() };
        assert_eq!(requests[1], req("Cats purr.\nQuestion: do cats purr?\nAnswer:", " yes"));
        assert_eq!(gold, 1);
        let r =
            rte(&RteRow { sentence1: "It rained.".into(), sentence2: "The ground is wet.".into(), label: 0 }).unwrap();
        let Item::Choice { requests, gold, .. } = r else { panic!() };
        assert_eq!(requests[0], req("It rained.\nQuestion: The ground is wet. True or False?\nAnswer:", " True"));
        assert_eq!(gold, 0);
        let o = openbookqa(&OpenbookqaRow {
            question_stem: "The sun is a".into(),
            choices: LabelledChoices {
                text: vec!["planet".into(), "star".into()],
                label: vec!["A".into(), "B".into()],
            },
            answerKey: " B".into(),
        })
        .unwrap();
        let Item::Choice { requests, gold, .. } = o else { panic!() };
        assert_eq!(requests[1], req("The sun is a", " star"));
        assert_eq!(gold, 1);
    }

    #[test]
    fn lambada_splits_on_single_spaces() {
        let Item::Loglikelihood { request } = lambada(&LambadaRow { text: "she opened the  door".into() }) else {
            panic!()
        };
        assert_eq!(request, req("she opened the ", " door"));
        let Item::Loglikelihood { request } = lambada(&LambadaRow { text: "one".into() }) else { panic!() };
        assert_eq!(request, req("", " one"));
    }

    #[test]
    fn rows_with_a_missing_or_mistyped_field_are_refused() {
        let e = item(Task::Piqa, serde_json::json!({"goal": "g", "sol1": "a", "label": 0})).unwrap_err();
        assert!(e.to_string().contains("missing field `sol2`"), "{e}");
        let e = item(
            Task::Hellaswag,
            serde_json::json!({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x"], "label": 0}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
