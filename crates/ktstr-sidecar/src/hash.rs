//! The variant hash: one 64-bit name for "the same test configuration", so runs of the
//! same variant from different machines, commits and days bucket together.
//!
//! Input: the compact JSON object
//! `{"kargs":[..],"payload":..,"scheduler":..,"sysctls":[..],"topology":..,"work_type":..}`
//! with keys in exactly that (alphabetical) order, `kargs` and `sysctls` sorted by bytes,
//! `payload` a string or `null`, no whitespace, strings escaped like serde_json does
//! (`\"`, `\\`, `\b \f \n \r \t`, other control characters as `\u00xx`, everything else
//! verbatim UTF-8). Hash: SipHash-1-3 with keys (0, 0) over those bytes, printed as 16
//! lower-case hex digits. The bytes are built here by hand so no serde_json feature
//! (such as `preserve_order`) can change them.

use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// The fields that define a variant. Everything else (commits, host, run source,
/// resolve source, vCPUs, CPU budget, times, results, the test name) stays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariantKey<'a> {
    pub topology: &'a str,
    pub scheduler: &'a str,
    pub payload: Option<&'a str>,
    pub work_type: &'a str,
    pub sysctls: &'a [String],
    pub kargs: &'a [String],
}

impl VariantKey<'_> {
    /// The exact bytes that are hashed.
    pub fn canonical_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"kargs\":");
        push_sorted_array(&mut out, self.kargs);
        out.push_str(",\"payload\":");
        match self.payload {
            Some(p) => push_json_string(&mut out, p),
            None => out.push_str("null"),
        }
        out.push_str(",\"scheduler\":");
        push_json_string(&mut out, self.scheduler);
        out.push_str(",\"sysctls\":");
        push_sorted_array(&mut out, self.sysctls);
        out.push_str(",\"topology\":");
        push_json_string(&mut out, self.topology);
        out.push_str(",\"work_type\":");
        push_json_string(&mut out, self.work_type);
        out.push('}');
        out
    }

    /// SipHash-1-3, keys (0, 0), over [`canonical_json`](Self::canonical_json).
    pub fn hash(&self) -> u64 {
        let mut h = SipHasher13::new_with_keys(0, 0);
        h.write(self.canonical_json().as_bytes());
        h.finish()
    }

    /// The hash as it appears in file names: 16 lower-case hex digits.
    pub fn hash_hex(&self) -> String {
        format_hash(self.hash())
    }
}

/// A variant hash as 16 lower-case hex digits.
pub fn format_hash(hash: u64) -> String {
    format!("{hash:016x}")
}

fn push_sorted_array(out: &mut String, items: &[String]) {
    let mut sorted: Vec<&str> = items.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    out.push('[');
    for (i, s) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, s);
    }
    out.push(']');
}

/// Append `s` as a JSON string literal, escaped exactly as serde_json escapes.
fn push_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let b = c as u32 as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 0xf] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    struct Owned {
        topology: String,
        scheduler: String,
        payload: Option<String>,
        work_type: String,
        sysctls: Vec<String>,
        kargs: Vec<String>,
    }

    impl Owned {
        fn sample() -> Owned {
            Owned {
                topology: "1n2l4c1t".into(),
                scheduler: "scx_lavd".into(),
                payload: Some("schbench".into()),
                work_type: "SpinWait".into(),
                sysctls: strings(&["sysctl.kernel.sched_rr_timeslice_ms=50", "sysctl.a=1"]),
                kargs: strings(&["nosmt", "isolcpus=1"]),
            }
        }
        fn key(&self) -> VariantKey<'_> {
            VariantKey {
                topology: &self.topology,
                scheduler: &self.scheduler,
                payload: self.payload.as_deref(),
                work_type: &self.work_type,
                sysctls: &self.sysctls,
                kargs: &self.kargs,
            }
        }
    }

    #[test]
    fn canonical_bytes_are_alphabetical_compact_and_sorted() {
        assert_eq!(
            Owned::sample().key().canonical_json(),
            r#"{"kargs":["isolcpus=1","nosmt"],"payload":"schbench","scheduler":"scx_lavd","sysctls":["sysctl.a=1","sysctl.kernel.sched_rr_timeslice_ms=50"],"topology":"1n2l4c1t","work_type":"SpinWait"}"#
        );
        let mut o = Owned::sample();
        o.payload = None;
        o.kargs.clear();
        assert!(o
            .key()
            .canonical_json()
            .starts_with(r#"{"kargs":[],"payload":null,"#));
    }

    /// Pinned values, computed independently of this code: CPython 3.11+ hashes `bytes`
    /// with SipHash-1-3, and `PYTHONHASHSEED=0` zeroes its keys, so
    /// `PYTHONHASHSEED=0 python3 -c 'print("%016x" % (hash(b"<canonical json>") & (2**64-1)))'`
    /// prints the variant hash of `<canonical json>`. If this test fails, the canonical
    /// bytes or the hash changed, and every existing sidecar file name with them: that is
    /// a format break, not a number to update casually.
    #[test]
    fn pinned_hash_values() {
        assert_eq!(Owned::sample().key().hash_hex(), PINNED_SAMPLE);
        let eevdf = VariantKey {
            topology: "1n1l2c1t",
            scheduler: "eevdf",
            payload: None,
            work_type: "",
            sysctls: &[],
            kargs: &[],
        };
        assert_eq!(
            eevdf.canonical_json(),
            r#"{"kargs":[],"payload":null,"scheduler":"eevdf","sysctls":[],"topology":"1n1l2c1t","work_type":""}"#
        );
        assert_eq!(eevdf.hash_hex(), PINNED_EEVDF);
    }

    const PINNED_SAMPLE: &str = "88b659ac71c7f82c";
    const PINNED_EEVDF: &str = "52bdd676ae67e487";

    #[test]
    fn order_of_sysctls_and_kargs_does_not_matter() {
        let a = Owned::sample();
        let mut b = Owned::sample();
        b.sysctls.reverse();
        b.kargs.reverse();
        assert_eq!(a.key().hash(), b.key().hash());
    }

    #[test]
    fn every_hashed_field_changes_the_hash() {
        let base = Owned::sample().key().hash();
        type Edit = (&'static str, fn(&mut Owned));
        let edits: [Edit; 8] = [
            ("topology", |o| o.topology = "1n2l4c2t".into()),
            ("scheduler", |o| o.scheduler = "scx_rusty".into()),
            ("payload", |o| o.payload = Some("fio".into())),
            ("payload none", |o| o.payload = None),
            ("work_type", |o| o.work_type = "YieldHeavy".into()),
            ("sysctls", |o| o.sysctls.push("sysctl.b=2".into())),
            ("kargs", |o| o.kargs[0] = "isolcpus=2".into()),
            // Moving a string between lists is a different variant.
            ("list membership", |o| {
                let k = o.kargs.pop().expect("two kargs");
                o.sysctls.push(k);
            }),
        ];
        for (what, edit) in edits {
            let mut o = Owned::sample();
            edit(&mut o);
            assert_ne!(o.key().hash(), base, "changing {what} must change the hash");
        }
    }

    #[test]
    fn escaping_matches_serde_json() {
        let nasty = [
            "plain",
            "quote\"back\\slash",
            "ctl\u{00}\u{01}\u{08}\u{0b}\u{0c}\u{1f}\n\r\t",
            "del\u{7f} slash/ unicode é 🦀 \u{2028}",
        ];
        for s in nasty {
            let mut ours = String::new();
            push_json_string(&mut ours, s);
            let theirs = serde_json::to_string(s).expect("serialize string");
            assert_eq!(ours, theirs, "escaping of {s:?}");
        }
    }

    #[test]
    fn format_is_16_lowercase_hex() {
        assert_eq!(format_hash(0xab), "00000000000000ab");
        assert_eq!(format_hash(u64::MAX), "ffffffffffffffff");
    }
}
