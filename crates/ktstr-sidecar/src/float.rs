//! JSON has no NaN or infinity, and the reference's reader rejects `null` in a plain
//! `f64` field. These writers keep every plain number finite: a non-finite `f64` is
//! written as `0.0` (the reference's "not measured" sentinel, next to its `*_measured`
//! flag where it has one), and non-finite entries of a number map or list are left out
//! (a missing key is how the reference says "no finite sample").
//!
//! Producers are expected never to hand these writers a non-finite value; this is the
//! contract's safety net, so one bad division can never make a sidecar unreadable.

use std::collections::BTreeMap;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::Serializer;

/// A plain `f64` field: non-finite is written as `0.0`.
pub(crate) fn finite<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(if v.is_finite() { *v } else { 0.0 })
}

/// A `name -> f64` map: non-finite entries are left out.
pub(crate) fn finite_map<S: Serializer>(
    m: &BTreeMap<String, f64>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut out = s.serialize_map(None)?;
    for (k, v) in m.iter().filter(|(_, v)| v.is_finite()) {
        out.serialize_entry(k, v)?;
    }
    out.end()
}

/// A list of `f64`: non-finite entries are left out.
pub(crate) fn finite_vec<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let mut out = s.serialize_seq(None)?;
    for x in v.iter().filter(|x| x.is_finite()) {
        out.serialize_element(x)?;
    }
    out.end()
}

/// An `Option<f64>`: non-finite is written as `null` (None).
pub(crate) fn finite_opt<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v.filter(|x| x.is_finite()) {
        Some(x) => s.serialize_some(&x),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct T {
        #[serde(serialize_with = "finite")]
        a: f64,
        #[serde(serialize_with = "finite_map")]
        m: BTreeMap<String, f64>,
        #[serde(serialize_with = "finite_vec")]
        v: Vec<f64>,
        #[serde(serialize_with = "finite_opt")]
        o: Option<f64>,
    }

    #[test]
    fn non_finite_values_never_reach_the_file() {
        let t = T {
            a: f64::NAN,
            m: [("x".to_string(), f64::INFINITY), ("y".to_string(), 1.5)].into(),
            v: vec![1.0, f64::NAN, 2.0],
            o: Some(f64::NEG_INFINITY),
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"a":0.0,"m":{"y":1.5},"v":[1.0,2.0],"o":null}"#
        );
    }
}
