//! The names of a decoder layer's linears and of the inputs they read: what a family lists
//! (`family::Family::linears`), what the pipeline plans and solves per input site, and what the
//! exports name.

use serde::Serialize;

/// The linear layers of a decoder layer: OPT's six (q, k, v, out, fc1, fc2) and the rotary
/// families' seven (q, k, v, o, gate, up, down); a family lists its own (`Family::linears`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LinearKind {
    Q,
    K,
    V,
    Out,
    Fc1,
    Fc2,
    /// The attention output projection of the rotary families (`self_attn.o_proj`).
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    /// OPT's six linears, in the order the published code visits them.
    pub const ALL: [LinearKind; 6] =
        [LinearKind::K, LinearKind::V, LinearKind::Q, LinearKind::Out, LinearKind::Fc1, LinearKind::Fc2];

    /// Every kind of every family.
    pub const EVERY: [LinearKind; 10] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::Out,
        LinearKind::Fc1,
        LinearKind::Fc2,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    /// The module path inside a decoder layer, as in the checkpoint.
    pub fn path(self) -> &'static str {
        match self {
            LinearKind::Q => "self_attn.q_proj",
            LinearKind::K => "self_attn.k_proj",
            LinearKind::V => "self_attn.v_proj",
            LinearKind::Out => "self_attn.out_proj",
            LinearKind::Fc1 => "fc1",
            LinearKind::Fc2 => "fc2",
            LinearKind::O => "self_attn.o_proj",
            LinearKind::Gate => "mlp.gate_proj",
            LinearKind::Up => "mlp.up_proj",
            LinearKind::Down => "mlp.down_proj",
        }
    }

    pub fn from_path(name: &str) -> Option<Self> {
        Self::EVERY.into_iter().find(|k| k.path() == name || k.path().rsplit('.').next() == Some(name))
    }

    /// Where this linear reads its input; q, k and v read the same one, and so do gate and up.
    pub fn input_site(self) -> InputSite {
        match self {
            LinearKind::Q | LinearKind::K | LinearKind::V => InputSite::Attn,
            LinearKind::Out | LinearKind::O => InputSite::OutProj,
            LinearKind::Fc1 | LinearKind::Gate | LinearKind::Up => InputSite::Fc1,
            LinearKind::Fc2 | LinearKind::Down => InputSite::Fc2,
        }
    }
}

/// The four distinct linear inputs of a decoder layer: the attention block's (q, k, v), the
/// output projection's, the MLP's (fc1; gate and up) and the MLP's inner activation (fc2; down).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputSite {
    Attn,
    OutProj,
    Fc1,
    Fc2,
}

impl InputSite {
    pub const ALL: [InputSite; 4] = [InputSite::Attn, InputSite::OutProj, InputSite::Fc1, InputSite::Fc2];
}
