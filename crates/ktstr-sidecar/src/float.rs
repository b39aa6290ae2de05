//! JSON has no NaN or infinity: serde_json writes a non-finite `f64` as `null`. These
//! readers accept that `null` back as NaN so a file the writer produced always reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A plain `f64` field: `null` reads as NaN.
pub(crate) fn f64_or_nan<'de, D: Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(de)?.unwrap_or(f64::NAN))
}

/// A `name -> f64` map: `null` values read as NaN.
pub(crate) fn map_f64_or_nan<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw = BTreeMap::<String, Option<f64>>::deserialize(de)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}
