//! Config fragments: parsing, merging onto a base `.config`, and checking after
//! `olddefconfig` that every fragment line stuck, with the reason from Kconfig when one
//! did not (a `depends on` that is false in the resulting config, or no prompt).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// One `CONFIG_X=v` or `# CONFIG_X is not set` line of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The symbol without `CONFIG_`.
    pub symbol: String,
    /// `y`, `m`, a number, a quoted string; `n` for "is not set".
    pub value: String,
    /// Where it came from, for messages (`kernels/ktstr.kconfig:12`, `--extra-kconfig`).
    pub origin: String,
}

impl Setting {
    /// The line as it goes into `.config`.
    pub fn line(&self) -> String {
        if self.value == "n" {
            format!("# CONFIG_{} is not set", self.symbol)
        } else {
            format!("CONFIG_{}={}", self.symbol, self.value)
        }
    }
}

/// A line of a fragment that is neither a setting, a comment nor blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub origin: String,
    pub line: String,
}

/// Parses fragment text; `name` prefixes each setting's origin (`name:line`).
pub fn parse_fragment(name: &str, text: &str) -> Result<Vec<Setting>, BadLine> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let origin = format!("{name}:{}", i + 1);
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(s) = parse_line(line) {
            out.push(Setting { origin, ..s });
        } else if !line.starts_with('#') {
            return Err(BadLine {
                origin,
                line: raw.to_string(),
            });
        }
    }
    Ok(out)
}

/// `CONFIG_X=v` or `# CONFIG_X is not set`; `None` for anything else.
fn parse_line(line: &str) -> Option<Setting> {
    let setting = |symbol: &str, value: &str| {
        let ok = !symbol.is_empty()
            && symbol
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Setting {
            symbol: symbol.to_string(),
            value: value.to_string(),
            origin: String::new(),
        })
    };
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        return setting(rest.strip_suffix(" is not set")?, "n");
    }
    let (sym, value) = line.strip_prefix("CONFIG_")?.split_once('=')?;
    if value.is_empty() {
        return None;
    }
    setting(sym, value)
}

/// The values a `.config` sets, by symbol (without `CONFIG_`); "is not set" is `n`.
pub fn config_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| parse_line(l.trim()))
        .map(|s| (s.symbol, s.value))
        .collect()
}

/// The base config with the settings appended: Kconfig reads the last assignment of a
/// symbol, so a fragment overrides the base and a later fragment an earlier one.
pub fn merge(base: &str, settings: &[Setting]) -> String {
    let mut out = base.trim_end().to_string();
    out.push_str("\n# ---- ktstr fragments ----\n");
    for s in settings {
        out.push_str(&s.line());
        out.push('\n');
    }
    out
}

/// A fragment line the resulting config does not honour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    pub setting: Setting,
    /// What `.config` has instead (`n` when absent).
    pub got: String,
    /// Why, from Kconfig, when it says.
    pub why: Option<String>,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CONFIG_{}={} ({}) ended up {}",
            self.setting.symbol, self.setting.value, self.setting.origin, self.got
        )?;
        if let Some(why) = &self.why {
            write!(f, ": {why}")?;
        }
        Ok(())
    }
}

/// Every setting whose value `config` does not have. The last setting of a symbol is
/// the one that counts (earlier ones were overridden on purpose).
pub fn check(settings: &[Setting], config: &str) -> Vec<Unmet> {
    let values = config_values(config);
    let mut last: Vec<&Setting> = Vec::new();
    for s in settings {
        last.retain(|p| p.symbol != s.symbol);
        last.push(s);
    }
    last.into_iter()
        .filter_map(|s| {
            let got = values.get(&s.symbol).map_or("n", String::as_str);
            (got != s.value).then(|| Unmet {
                setting: s.clone(),
                got: got.to_string(),
                why: None,
            })
        })
        .collect()
}

/// Fills in `why` of each unmet setting from the tree's Kconfig files.
pub fn explain(unmet: &mut [Unmet], tree: &Path, config: &str) {
    if unmet.is_empty() {
        return;
    }
    let values = config_values(config);
    let mut defs: HashMap<String, Definition> = HashMap::new();
    let wanted: Vec<String> = unmet.iter().map(|u| u.setting.symbol.clone()).collect();
    for file in kconfig_files(tree) {
        if let Ok(text) = std::fs::read_to_string(&file) {
            for (sym, def) in definitions(&text) {
                if wanted.contains(&sym) {
                    defs.entry(sym).or_default().absorb(def);
                }
            }
        }
    }
    for u in unmet {
        u.why = Some(match defs.get(&u.setting.symbol) {
            None => "no such option in this tree's Kconfig".into(),
            Some(d) => d.reason(&u.setting.value, &values),
        });
    }
}

/// What a `config` block says about how its symbol can be set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Definition {
    /// `depends on` expressions.
    pub depends: Vec<String>,
    /// A prompt exists (user-settable when the prompt's condition holds).
    pub has_prompt: bool,
}

impl Definition {
    fn absorb(&mut self, other: Definition) {
        self.depends.extend(other.depends);
        self.has_prompt |= other.has_prompt;
    }

    /// Why the symbol did not take `wanted`.
    pub fn reason(&self, wanted: &str, values: &HashMap<String, String>) -> String {
        let failing: Vec<String> = self
            .depends
            .iter()
            .filter(|d| !eval(d, values).is_true())
            .map(|d| {
                let syms = symbols_of(d)
                    .into_iter()
                    .map(|s| format!("{s}={}", values.get(&s).map_or("n", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("depends on `{d}` ({syms})")
            })
            .collect();
        if wanted != "n" && !failing.is_empty() {
            return format!("missing dependency: {}", failing.join("; "));
        }
        if !self.has_prompt {
            return "it has no prompt: only a `select` or its default sets it".into();
        }
        if wanted == "n" {
            return "something selects it".into();
        }
        "Kconfig gives no reason (a `select` of a symbol that is off, a range, or a choice \
         member beaten by another)"
            .into()
    }
}

/// `config`/`menuconfig` blocks of one Kconfig file: symbol and what it says.
pub fn definitions(text: &str) -> Vec<(String, Definition)> {
    let mut out: Vec<(String, Definition)> = Vec::new();
    let mut current: Option<(String, Definition)> = None;
    let mut in_help = false;
    // Continuation lines end with `\`.
    let joined = text.replace("\\\n", " ");
    for raw in joined.lines() {
        let starts_block = !raw.starts_with(char::is_whitespace) && !raw.trim().is_empty();
        let line = raw.trim();
        if starts_block {
            in_help = false;
            out.extend(current.take());
            let mut words = line.split_whitespace();
            if let (Some("config" | "menuconfig"), Some(sym)) = (words.next(), words.next()) {
                current = Some((sym.to_string(), Definition::default()));
            }
            continue;
        }
        let Some((_, def)) = current.as_mut() else {
            continue;
        };
        if in_help || line.starts_with('#') {
            continue;
        }
        if line == "help" || line == "---help---" {
            in_help = true;
        } else if let Some(d) = line.strip_prefix("depends on") {
            def.depends.push(d.trim().to_string());
        } else if line.starts_with("prompt")
            || ["bool", "tristate", "int", "hex", "string"]
                .iter()
                .any(|t| {
                    line.strip_prefix(t)
                        .is_some_and(|r| r.trim_start().starts_with('"'))
                })
        {
            def.has_prompt = true;
        }
    }
    out.extend(current);
    out
}

/// Every `Kconfig*` file under the tree (skipping hidden directories).
fn kconfig_files(tree: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && !name.starts_with('.') {
                stack.push(e.path());
            } else if ft.is_file() && name.starts_with("Kconfig") {
                out.push(e.path());
            }
        }
    }
    out
}

/// Symbols named in a Kconfig expression.
fn symbols_of(expr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tok in tokens(expr) {
        if let Tok::Word(w) = tok {
            let is_symbol = w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && !matches!(w.as_str(), "y" | "m" | "n");
            if is_symbol && !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// A Kconfig tristate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tri {
    N,
    M,
    Y,
}

impl Tri {
    fn is_true(self) -> bool {
        self != Tri::N
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Op(&'static str),
}

fn tokens(expr: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = expr.get(i..i + 2).unwrap_or("");
        if let Some(op) = ["&&", "||", "!=", "<=", ">="]
            .into_iter()
            .find(|o| *o == two)
        {
            out.push(Tok::Op(op));
            i += 2;
        } else if let Some(op) = ["!", "(", ")", "=", "<", ">"]
            .into_iter()
            .find(|o| o.as_bytes()[0] == b[i])
        {
            out.push(Tok::Op(op));
            i += 1;
        } else if c == '"' {
            let end = expr[i + 1..].find('"').map_or(b.len(), |e| i + 1 + e);
            out.push(Tok::Word(expr[i + 1..end].to_string()));
            i = (end + 1).min(b.len());
        } else {
            let start = i;
            while i < b.len() && !b"!&|()=<> \t\"".contains(&b[i]) {
                i += 1;
            }
            out.push(Tok::Word(expr[start..i].to_string()));
        }
    }
    out
}

/// Evaluates a `depends on` expression against config values (unknown symbols are `n`;
/// an expression we cannot parse counts as true, so it is never blamed).
pub fn eval(expr: &str, values: &HashMap<String, String>) -> Tri {
    let toks = tokens(expr);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
        values,
    };
    match p.or() {
        Some(v) if p.pos == toks.len() => v,
        _ => Tri::Y,
    }
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    values: &'a HashMap<String, String>,
}

impl Parser<'_> {
    fn peek_op(&self, op: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Op(o)) if *o == op)
    }

    fn or(&mut self) -> Option<Tri> {
        let mut v = self.and()?;
        while self.peek_op("||") {
            self.pos += 1;
            v = v.max(self.and()?);
        }
        Some(v)
    }

    fn and(&mut self) -> Option<Tri> {
        let mut v = self.unary()?;
        while self.peek_op("&&") {
            self.pos += 1;
            v = v.min(self.unary()?);
        }
        Some(v)
    }

    fn unary(&mut self) -> Option<Tri> {
        if self.peek_op("!") {
            self.pos += 1;
            return Some(match self.unary()? {
                Tri::Y => Tri::N,
                Tri::M => Tri::M,
                Tri::N => Tri::Y,
            });
        }
        if self.peek_op("(") {
            self.pos += 1;
            let v = self.or()?;
            if !self.peek_op(")") {
                return None;
            }
            self.pos += 1;
            return Some(v);
        }
        let left = self.word()?;
        for op in ["=", "!=", "<", "<=", ">", ">="] {
            if self.peek_op(op) {
                self.pos += 1;
                let right = self.word()?;
                return Some(compare(&self.value(&left), op, &self.value(&right)));
            }
        }
        Some(match self.value(&left).as_str() {
            "y" => Tri::Y,
            "m" => Tri::M,
            _ => Tri::N,
        })
    }

    fn word(&mut self) -> Option<String> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Some(w.clone())
            }
            _ => None,
        }
    }

    /// A symbol's value, or the word itself for constants (`y`, `126`, `"x86"`).
    fn value(&self, w: &str) -> String {
        if let Some(v) = self.values.get(w) {
            return v.trim_matches('"').to_string();
        }
        let is_symbol = w.chars().next().is_some_and(|c| c.is_ascii_uppercase());
        if is_symbol {
            "n".into()
        } else {
            w.to_string()
        }
    }
}

fn compare(a: &str, op: &str, b: &str) -> Tri {
    let ord = match (parse_num(a), parse_num(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.cmp(b),
    };
    let yes = match op {
        "=" => ord.is_eq(),
        "!=" => !ord.is_eq(),
        "<" => ord.is_lt(),
        "<=" => ord.is_le(),
        ">" => ord.is_gt(),
        _ => ord.is_ge(),
    };
    if yes {
        Tri::Y
    } else {
        Tri::N
    }
}

fn parse_num(s: &str) -> Option<i64> {
    match s.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fragment_lines() {
        let f = parse_fragment(
            "f",
            "# comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x y\"\nCONFIG_D=256\n",
        )
        .unwrap();
        let got: Vec<(&str, &str, &str)> = f
            .iter()
            .map(|s| (s.symbol.as_str(), s.value.as_str(), s.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "y", "f:3"),
                ("B", "n", "f:4"),
                ("C", "\"x y\"", "f:5"),
                ("D", "256", "f:6")
            ]
        );
        assert_eq!(f[1].line(), "# CONFIG_B is not set");
        let bad = parse_fragment("f", "CONFIG_A=y\nSCHED_EXT=y\n").unwrap_err();
        assert_eq!(bad.origin, "f:2");
        assert!(parse_fragment("f", "CONFIG_A=\n").is_err());
    }

    #[test]
    fn later_settings_override_earlier_ones() {
        let base = "CONFIG_A=y\n# CONFIG_B is not set\n";
        let s = parse_fragment("f", "# CONFIG_A is not set\nCONFIG_B=y\n").unwrap();
        let merged = merge(base, &s);
        let v = config_values(&merged);
        assert_eq!(v["A"], "n");
        assert_eq!(v["B"], "y");
    }

    #[test]
    fn an_option_that_cannot_stick_is_named_with_its_missing_dependency() {
        let frag = parse_fragment(
            "kernels/ktstr.kconfig",
            "CONFIG_BPF_SYSCALL=y\nCONFIG_SCHED_CLASS_EXT=y\n# CONFIG_MODULES is not set\n",
        )
        .unwrap();
        // What olddefconfig left: BTF off (old pahole), so sched_ext fell away.
        let config = "CONFIG_BPF_SYSCALL=y\nCONFIG_BPF_JIT=y\n# CONFIG_DEBUG_INFO_BTF is not set\n\
                      # CONFIG_MODULES is not set\n";
        let mut unmet = check(&frag, config);
        assert_eq!(unmet.len(), 1);
        assert_eq!(unmet[0].setting.symbol, "SCHED_CLASS_EXT");
        assert_eq!(unmet[0].got, "n");

        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tree.path().join("kernel")).unwrap();
        std::fs::write(
            tree.path().join("kernel/Kconfig.preempt"),
            "config SCHED_CLASS_EXT\n\tbool \"Extensible Scheduling Class\"\n\
             \tdepends on BPF_SYSCALL && BPF_JIT && DEBUG_INFO_BTF\n\thelp\n\
             \t  depends on NOTHING here: help text\n",
        )
        .unwrap();
        explain(&mut unmet, tree.path(), config);
        let msg = unmet[0].to_string();
        assert!(
            msg.starts_with("CONFIG_SCHED_CLASS_EXT=y (kernels/ktstr.kconfig:2) ended up n"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "missing dependency: depends on `BPF_SYSCALL && BPF_JIT && DEBUG_INFO_BTF` \
                 (BPF_SYSCALL=y, BPF_JIT=y, DEBUG_INFO_BTF=n)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn unknown_and_promptless_options_say_so() {
        let frag = parse_fragment("x", "CONFIG_NOPE=y\nCONFIG_ACPI_NUMA=y\n").unwrap();
        let mut unmet = check(&frag, "CONFIG_NUMA=y\n");
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(
            tree.path().join("Kconfig"),
            "config ACPI_NUMA\n\tdef_bool NUMA && !X86\n",
        )
        .unwrap();
        explain(&mut unmet, tree.path(), "CONFIG_NUMA=y\n");
        assert_eq!(
            unmet[0].why.as_deref(),
            Some("no such option in this tree's Kconfig")
        );
        assert!(unmet[1].why.as_deref().unwrap().contains("no prompt"));
    }

    #[test]
    fn only_the_last_setting_of_a_symbol_is_checked() {
        let frag = parse_fragment("a", "CONFIG_X=y\n# CONFIG_X is not set\n").unwrap();
        assert!(check(&frag, "# CONFIG_X is not set\n").is_empty());
        assert_eq!(check(&frag, "CONFIG_X=y\n").len(), 1);
    }

    #[test]
    fn expressions() {
        let v = vals(&[
            ("A", "y"),
            ("B", "m"),
            ("PAHOLE_VERSION", "124"),
            ("S", "\"x86\""),
        ]);
        assert_eq!(eval("A && B", &v), Tri::M);
        assert_eq!(eval("A && C", &v), Tri::N);
        assert_eq!(eval("C || A", &v), Tri::Y);
        assert_eq!(eval("!C && (A || C)", &v), Tri::Y);
        assert_eq!(eval("PAHOLE_VERSION >= 126", &v), Tri::N);
        assert_eq!(eval("PAHOLE_VERSION >= 122", &v), Tri::Y);
        assert_eq!(eval("S = \"x86\"", &v), Tri::Y);
        assert_eq!(eval("A != y", &v), Tri::N);
        // Unparseable: never blamed.
        assert_eq!(eval("A &&", &v), Tri::Y);
        assert_eq!(
            symbols_of("!A && (B || PAHOLE_VERSION >= 126) && y"),
            ["A", "B", "PAHOLE_VERSION"]
        );
    }

    #[test]
    fn definitions_of_a_kconfig_file() {
        let text = "menu \"x\"\nconfig A\n\tbool \"a\"\n\tdepends on B && \\\n\t\tC\n\
                    \tdepends on D\n\thelp\n\t  depends on E\n\nconfig F\n\tbool\n\
                    \tprompt \"f\" if G\nendmenu\n";
        let d = definitions(text);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].0, "A");
        assert!(d[0].1.has_prompt);
        assert_eq!(d[0].1.depends.len(), 2);
        assert!(d[0].1.depends[0].starts_with("B &&"));
        assert_eq!(d[0].1.depends[1], "D");
        assert_eq!(d[1].0, "F");
        assert!(d[1].1.has_prompt);
    }
}
