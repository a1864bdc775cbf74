//! The command line's value enums: each mirrors a library enum, which it converts into, and is
//! written into the result JSON exactly as the library enum serialises. clap stays in `cli/`.

/// A clap value enum `$name` with the variants of library enum `$lib`, converting into it and
/// serialising as it does.
macro_rules! value_enum {
    ($(#[$meta:meta])* $name:ident => $lib:path { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl From<$name> for $lib {
            fn from(v: $name) -> Self {
                match v {
                    $($name::$variant => <$lib>::$variant),+
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                <$lib>::from(*self).serialize(s)
            }
        }
    };
}

value_enum! {
    /// How H is accumulated.
    #[derive(Default)]
    HessianAccumulation => sparsegpt_mi::pipeline::hessian::HessianAccumulation { #[default] RunningAverage, Sum }
}

value_enum! {
    /// Column importance of the mixed allocator.
    #[derive(Default)]
    Importance => sparsegpt_mi::mixed::importance::Importance { #[default] Diag, Obs, MiObs }
}

value_enum! {
    /// What the mixed allocator minimises.
    #[derive(Default)]
    BitObjective => sparsegpt_mi::mixed::cost_model::BitObjective { #[default] Legacy, CostModel }
}

value_enum! {
    /// Channel sets of n:m pruning.
    #[derive(Default)]
    NmPermutation => sparsegpt_mi::mixed::nm_sets::NmPermutation { #[default] None, Mi, Random, Magnitude }
}

value_enum! {
    /// How channels are grouped.
    GroupingMethod => sparsegpt_mi::mixed::grouping::GroupingMethod {
        Spectral, Hierarchical, Kmeans, Random, Range, Contiguous
    }
}

value_enum! {
    /// The sweep order of a mixed plan.
    #[derive(Default)]
    SweepOrder => sparsegpt_mi::mixed::SweepOrder { #[default] Mixed, Identity }
}

value_enum! {
    /// The MI estimator.
    MiMethod => sparsegpt_mi::mixed::mutual_info::MiMethod { Corr, Hist, Knn }
}

value_enum! {
    /// How the allocator gives groups their bits.
    BitPolicy => sparsegpt_mi::mixed::bit_alloc::BitPolicy { Optimal, Thresholds }
}

value_enum! {
    /// How act-order sweeps groups of columns.
    ActGroups => sparsegpt_mi::solver::ActGroups { GroupAware, Dynamic }
}

value_enum! {
    /// Precision of the H⁻¹ factorisation.
    HinvPrecision => sparsegpt_mi::solver::HinvPrecision { F32, F64 }
}

value_enum! {
    /// How `--save` stores the model.
    #[derive(Default)]
    SaveFormat => sparsegpt_mi::output::export::SaveFormat { #[default] Dense, Gptq, CompressedTensors }
}

value_enum! {
    /// The dtype `--save` stores, where not the checkpoint's.
    SaveDtype => sparsegpt_mi::output::export::SaveDtype { F16, Bf16, F32 }
}

value_enum! {
    /// The calibration window sampler.
    SamplerKind => sparsegpt_mi::data::calibration::SamplerKind { Python, #[value(alias = "splitmix")] Xoshiro }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn value_names_and_json_are_the_library_enums() {
        // The names users type are clap's kebab-case of the variants; the JSON is the library's.
        let names: Vec<String> = SaveFormat::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, ["dense", "gptq", "compressed-tensors"]);
        assert_eq!(serde_json::to_string(&SaveFormat::CompressedTensors).unwrap(), "\"compressed-tensors\"");
        assert_eq!(serde_json::to_string(&HessianAccumulation::RunningAverage).unwrap(), "\"running-average\"");
        assert_eq!(serde_json::to_string(&Importance::MiObs).unwrap(), "\"mi-obs\"");
        assert_eq!(serde_json::to_string(&SamplerKind::Xoshiro).unwrap(), "\"xoshiro\"");
        assert_eq!(SaveDtype::from_str("bf16", false), Ok(SaveDtype::Bf16));
        assert_eq!(serde_json::to_string(&SaveDtype::Bf16).unwrap(), "\"bf16\"");
        assert_eq!(serde_json::to_string(&BitObjective::CostModel).unwrap(), "\"cost-model\"");
        assert_eq!(BitObjective::from_str("cost-model", false), Ok(BitObjective::CostModel));
        assert_eq!(SamplerKind::from_str("splitmix", false), Ok(SamplerKind::Xoshiro));
        assert_eq!(ActGroups::from_str("group-aware", false), Ok(ActGroups::GroupAware));
        assert_eq!(serde_json::to_string(&ActGroups::GroupAware).unwrap(), "\"group-aware\"");
        assert_eq!(
            sparsegpt_mi::mixed::grouping::GroupingMethod::from(GroupingMethod::Contiguous),
            sparsegpt_mi::mixed::grouping::GroupingMethod::Contiguous
        );
    }
}
