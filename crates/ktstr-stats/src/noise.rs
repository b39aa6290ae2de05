//! Is a difference between two sets of runs real or noise? Summaries of repeated runs,
//! Welch's t-test (with the Student-t distribution computed here through the
//! regularized incomplete beta function) and the disjoint-range check.
//!
//! A difference counts as *separated* when both sides have at least two runs and either
//! Welch's two-sided p-value is below [`P_THRESHOLD`] or the `[min, max]` ranges of the
//! two sides do not overlap. With fewer than two runs on a side nothing can be said:
//! the comparison is [`Separation::Noisy`].

use serde::Serialize;

/// Two-sided p-value below which Welch's t-test calls a difference real.
pub const P_THRESHOLD: f64 = 0.05;

/// Mean, spread and range of one side's runs of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Runs with a finite value.
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (Bessel's correction); 0 for a single run.
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarise the finite values of `values`; None when there is none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let finite = || values.iter().copied().filter(|v| v.is_finite());
        let n = finite().count();
        if n == 0 {
            return None;
        }
        let mean = finite().sum::<f64>() / n as f64;
        let var = if n > 1 {
            finite().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Some(Summary {
            n,
            mean,
            sd: var.sqrt(),
            min: finite().fold(f64::INFINITY, f64::min),
            max: finite().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// Sample variance.
    pub fn var(&self) -> f64 {
        self.sd * self.sd
    }

    /// `(max - min) / |mean|`: how widely the runs scatter, relative to their level;
    /// None when the mean is 0.
    pub fn rel_spread(&self) -> Option<f64> {
        (self.mean != 0.0).then(|| (self.max - self.min) / self.mean.abs())
    }
}

/// The result of Welch's unequal-variances t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Welch {
    /// `(mean_b - mean_a) / sqrt(var_a/n_a + var_b/n_b)`.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Welch's t-test of `b` against `a`. None when a side has fewer than two runs or both
/// sides have zero variance (the standard error is 0 and t is undefined).
pub fn welch(a: &Summary, b: &Summary) -> Option<Welch> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let qa = a.var() / a.n as f64;
    let qb = b.var() / b.n as f64;
    let se2 = qa + qb;
    if !(se2 > 0.0 && se2.is_finite()) {
        return None;
    }
    let t = (b.mean - a.mean) / se2.sqrt();
    let df = se2 * se2 / (qa * qa / (a.n - 1) as f64 + qb * qb / (b.n - 1) as f64);
    let p = student_t_two_sided_p(t, df);
    Some(Welch { t, df, p })
}

/// Whether the `[min, max]` ranges of the two sides do not overlap.
pub fn disjoint(a: &Summary, b: &Summary) -> bool {
    a.max < b.min || b.max < a.min
}

/// Whether the two sides differ beyond noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Separation {
    /// A side has fewer than two runs: nothing can be said.
    Noisy,
    /// The sides differ: `p < 0.05` or disjoint ranges.
    Separated { p: Option<f64>, disjoint: bool },
    /// The difference is within the noise.
    Overlapping { p: Option<f64> },
}

impl Separation {
    /// Judge two sides.
    pub fn of(a: &Summary, b: &Summary) -> Separation {
        if a.n < 2 || b.n < 2 {
            return Separation::Noisy;
        }
        let p = welch(a, b).map(|w| w.p);
        let dis = disjoint(a, b);
        if dis || p.is_some_and(|p| p < P_THRESHOLD) {
            Separation::Separated { p, disjoint: dis }
        } else {
            Separation::Overlapping { p }
        }
    }

    pub fn is_separated(&self) -> bool {
        matches!(self, Separation::Separated { .. })
    }

    /// The Welch p-value, when one could be computed.
    pub fn p(&self) -> Option<f64> {
        match *self {
            Separation::Noisy => None,
            Separation::Separated { p, .. } | Separation::Overlapping { p } => p,
        }
    }
}

/// Two-sided p-value of Student's t distribution with `df` degrees of freedom:
/// `P(|T| >= |t|) = I_{df/(df+t²)}(df/2, 1/2)`.
pub fn student_t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return f64::NAN;
    }
    if t.is_infinite() {
        return 0.0;
    }
    let x = df / (df + t * t);
    reg_inc_beta(df / 2.0, 0.5, x).clamp(0.0, 1.0)
}

/// Cumulative distribution function of Student's t distribution.
pub fn student_t_cdf(t: f64, df: f64) -> f64 {
    let tail = student_t_two_sided_p(t, df) / 2.0;
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos approximation, g = 7, nine coefficients; relative
/// error below 1e-13 over the range used here).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1-x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The regularized incomplete beta function `I_x(a, b)` for `a, b > 0`, `0 <= x <= 1`,
/// by its continued fraction (modified Lentz), using the symmetry
/// `I_x(a, b) = 1 - I_{1-x}(b, a)` where the fraction converges faster.
pub fn reg_inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if !(a > 0.0 && b > 0.0) || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const MAX_ITER: usize = 300;
    const EPS: f64 = 1e-15;
    const TINY: f64 = 1e-300;
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=MAX_ITER {
        let m = m as f64;
        let m2 = 2.0 * m;
        // Even step.
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        // Odd step.
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tol: f64) {
        assert!(
            (got - want).abs() <= tol,
            "got {got}, want {want} (tol {tol})"
        );
    }

    #[test]
    fn ln_gamma_known_values() {
        close(ln_gamma(1.0), 0.0, 1e-13);
        close(ln_gamma(2.0), 0.0, 1e-13);
        close(ln_gamma(5.0), 24f64.ln(), 1e-12);
        close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln(), 1e-12);
        close(ln_gamma(0.1), 9.513_507_698_668_732f64.ln(), 1e-11);
        close(ln_gamma(100.0), 359.134_205_369_575_4, 1e-9);
    }

    #[test]
    fn incomplete_beta_closed_forms() {
        for x in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
            close(reg_inc_beta(1.0, 1.0, x), x, 1e-13);
            close(reg_inc_beta(3.0, 1.0, x), x.powi(3), 1e-13);
            close(reg_inc_beta(1.0, 4.0, x), 1.0 - (1.0 - x).powi(4), 1e-13);
        }
        for a in [0.5, 2.0, 7.5, 40.0] {
            close(reg_inc_beta(a, a, 0.5), 0.5, 1e-12);
        }
        // I_x(a,b) + I_{1-x}(b,a) = 1.
        close(
            reg_inc_beta(2.5, 0.5, 0.3) + reg_inc_beta(0.5, 2.5, 0.7),
            1.0,
            1e-13,
        );
        assert!(reg_inc_beta(0.0, 1.0, 0.5).is_nan());
    }

    #[test]
    fn student_t_known_values() {
        // df = 1 is the Cauchy distribution: CDF(t) = 1/2 + atan(t)/π.
        for t in [-3.0, -0.5, 0.0, 1.0, 4.0] {
            close(
                student_t_cdf(t, 1.0),
                0.5 + f64::atan(t) / std::f64::consts::PI,
                1e-12,
            );
        }
        // df = 2: CDF(t) = 1/2 + t / (2 sqrt(t² + 2)).
        for t in [-2.0, 0.3, 2.0, 10.0] {
            close(
                student_t_cdf(t, 2.0),
                0.5 + t / (2.0 * (t * t + 2.0).sqrt()),
                1e-12,
            );
        }
        // Table quantiles: t_{0.975, 10} = 2.228139, t_{0.975, 30} = 2.042272,
        // t_{0.995, 5} = 4.032143.
        close(student_t_two_sided_p(2.228_138_852, 10.0), 0.05, 1e-8);
        close(student_t_two_sided_p(-2.042_272_456, 30.0), 0.05, 1e-8);
        close(student_t_two_sided_p(4.032_142_984, 5.0), 0.01, 1e-8);
        // Large df approaches the normal: P(|Z| >= 1.959964) = 0.05.
        close(student_t_two_sided_p(1.959_963_985, 1e7), 0.05, 1e-6);
        close(student_t_two_sided_p(0.0, 4.0), 1.0, 1e-15);
        assert_eq!(student_t_two_sided_p(f64::INFINITY, 4.0), 0.0);
        assert!(student_t_two_sided_p(1.0, 0.0).is_nan());
    }

    #[test]
    fn welch_matches_a_worked_example() {
        // Wikipedia's first Welch example (equal n, unequal variances):
        // t = -2.4554, df = 24.9885, p = 0.021378 (the p-value checked independently by
        // Simpson integration of the t density).
        let a1 = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let a2 = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let (s1, s2) = (
            Summary::of(&a1).expect("values"),
            Summary::of(&a2).expect("values"),
        );
        let w = welch(&s2, &s1).expect("computable");
        close(w.t, -2.455_356, 1e-5);
        close(w.df, 24.988_53, 1e-4);
        close(w.p, 0.021_378, 1e-5);
        // Swapping the sides flips t, keeps df and p.
        let r = welch(&s1, &s2).expect("computable");
        close(r.t, -w.t, 1e-12);
        close(r.p, w.p, 1e-12);
    }

    #[test]
    fn summary_and_separation() {
        let s = Summary::of(&[1.0, 2.0, 3.0, f64::NAN]).expect("values");
        assert_eq!((s.n, s.mean, s.sd, s.min, s.max), (3, 2.0, 1.0, 1.0, 3.0));
        close(s.rel_spread().expect("non-zero mean"), 1.0, 1e-15);
        assert!(Summary::of(&[f64::NAN]).is_none());
        let one = Summary::of(&[5.0]).expect("one");
        assert_eq!(one.sd, 0.0);

        // One run on a side: noisy, whatever the numbers.
        let far = Summary::of(&[100.0, 100.1]).expect("values");
        assert_eq!(Separation::of(&one, &far), Separation::Noisy);
        // Constant sides: t undefined, but disjoint ranges separate them.
        let c1 = Summary::of(&[10.0, 10.0, 10.0]).expect("values");
        let c2 = Summary::of(&[11.0, 11.0]).expect("values");
        assert!(welch(&c1, &c2).is_none());
        assert_eq!(
            Separation::of(&c1, &c2),
            Separation::Separated {
                p: None,
                disjoint: true
            }
        );
        assert_eq!(
            Separation::of(&c1, &c1),
            Separation::Overlapping { p: None }
        );
        // Overlapping ranges but a clear shift: the t-test separates.
        let a = Summary::of(&[10.0, 10.2, 9.9, 10.1, 10.0, 12.0]).expect("values");
        let b = Summary::of(&[11.5, 11.6, 11.4, 11.5, 11.7, 11.6]).expect("values");
        assert!(!disjoint(&a, &b));
        let sep = Separation::of(&a, &b);
        assert!(sep.is_separated(), "{sep:?}");
        assert!(sep.p().is_some_and(|p| p < P_THRESHOLD));
    }
}
