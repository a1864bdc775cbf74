//! What the user can change when a run cannot go on. The library says what went wrong in its
//! own terms and attaches the remedy as a value (`Advised`); the command line names the flag.

use std::fmt;

/// A setting whose change can get a run past an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// A larger dampening fraction of the Hessian.
    MoreDamping,
    /// The f64 factorisation of H⁻¹, or a larger dampening fraction.
    F64InverseOrMoreDamping,
    /// Computing in f32.
    F32Compute,
    /// Solving on the host CPU.
    HostSolver,
    /// Windows of at most this many tokens.
    ShorterWindows { at_most: usize },
}

impl Remedy {
    /// The remedy in the library's terms.
    pub fn describe(self) -> String {
        match self {
            Remedy::MoreDamping => "raise the dampening fraction (e.g. 0.1)".into(),
            Remedy::F64InverseOrMoreDamping => "try the f64 factorisation of H⁻¹ or a larger dampening fraction".into(),
            Remedy::F32Compute => "try computing in f32".into(),
            Remedy::HostSolver => "or solve on the host".into(),
            Remedy::ShorterWindows { at_most } => format!("use windows of at most {at_most} tokens"),
        }
    }
}

/// An error and what can get past it.
#[derive(Debug)]
pub struct Advised {
    pub message: String,
    pub remedy: Remedy,
}

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.message, self.remedy.describe())
    }
}

impl std::error::Error for Advised {}

/// `message` with `remedy`, as an error.
pub fn advised(message: impl Into<String>, remedy: Remedy) -> anyhow::Error {
    anyhow::Error::new(Advised { message: message.into(), remedy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remedy_travels_through_context() {
        let e = advised("Hessian is not positive definite", Remedy::MoreDamping).context("layer 3 fc1");
        assert_eq!(
            format!("{e:#}"),
            "layer 3 fc1: Hessian is not positive definite; raise the dampening fraction (e.g. 0.1)"
        );
        let found = e.chain().find_map(|c| c.downcast_ref::<Advised>()).expect("advice in the chain");
        assert_eq!(found.remedy, Remedy::MoreDamping);
    }
}
