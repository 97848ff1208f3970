//! Statistics of a study's votes.
//!
//! - **Win/tie/loss** per variant pair, overall and per criterion, with the preference
//!   share `(wins + ties/2) / n` and its bootstrap 95% interval.
//! - **Bradley–Terry strengths** fitted with Hunter's (2004) MM algorithm,
//!   `p_i ← W_i / Σ_j N_ij / (p_i + p_j)`. Ties count as half a win for each side (so
//!   `W_i = wins_i + ties_i / 2`, `N_ij` = all comparisons of i and j). Every variant pair
//!   also gets one virtual tie (half a win each way), a weak prior that keeps the estimate
//!   finite when a variant never wins and connects variants that were never compared;
//!   its weight vanishes as votes accumulate. Strengths are reported as log-strengths
//!   centred to mean 0 (`P(i beats j) = 1 / (1 + exp(β_j − β_i))`).
//! - **Bootstrap**: votes are resampled with replacement (`resamples` times, seeded
//!   `StdRng`, one stream per criterion) and everything is refitted; intervals are the
//!   2.5 and 97.5 percentiles. Votes of one rater are treated as independent.
//! - **Inter-rater agreement**: Fleiss' kappa over the three outcomes (first variant
//!   better, tie, second variant better — positions already undone), with subjects =
//!   pairs rated at least twice and a varying number of ratings per subject
//!   (`P_i = Σ_k n_ik(n_ik − 1) / (n_i(n_i − 1))`, `P̄` = mean `P_i`,
//!   `P_e = Σ_k p_k²` with `p_k` the share of all those ratings in outcome k). Also the
//!   plain pairwise agreement `P̄` (probability that two ratings of the same pair agree).
//!   With `--passes` > 1 a rater's repeated rating of a pair counts as another rating.
//! - **Likert**: mean 1–5 score per variant with a bootstrap 95% interval of the mean.
//! - **Position bias**: share of decisive overall votes that chose the left video.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Criteria: key (in the database and API), label.
pub const CRITERIA: &[(&str, &str)] = &[
    ("overall", "Overall"),
    ("visual", "Visual quality"),
    ("motion", "Motion smoothness"),
    ("alignment", "Prompt alignment"),
];

/// Outcome of one comparison between a pair's variants `a` and `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    A,
    B,
    Tie,
}

impl Outcome {
    /// Parses the stored form ('a', 'b', 'tie').
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "a" => Some(Outcome::A),
            "b" => Some(Outcome::B),
            "tie" => Some(Outcome::Tie),
            _ => None,
        }
    }
    fn index(self) -> usize {
        match self {
            Outcome::A => 0,
            Outcome::Tie => 1,
            Outcome::B => 2,
        }
    }
}

/// One comparison: variant indices (a < b in study order), outcome, the pair it rated.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub a: usize,
    pub b: usize,
    pub outcome: Outcome,
    pub pair: i64,
}

/// One vote in the form the statistics use.
#[derive(Debug, Clone)]
pub struct Vote {
    pub pair: i64,
    pub a: usize,
    pub b: usize,
    pub left_is_a: bool,
    /// Overall, visual, motion, alignment (same order as [`CRITERIA`]).
    pub outcomes: [Option<Outcome>; 4],
    pub likert_a: Option<u8>,
    pub likert_b: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    pub a: String,
    pub b: String,
    pub a_wins: u64,
    pub ties: u64,
    pub b_wins: u64,
    pub n: u64,
    /// (a_wins + ties/2) / n.
    pub a_share: Option<f64>,
    pub a_share_ci: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StrengthResult {
    pub variant: String,
    /// Bradley–Terry log-strength, centred to mean 0 over variants.
    pub log_strength: f64,
    pub ci: Option<[f64; 2]>,
    /// Comparisons that involved this variant.
    pub n: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub fleiss_kappa: Option<f64>,
    /// Probability that two ratings of the same pair agree.
    pub pairwise_agreement: Option<f64>,
    /// Pairs with at least two ratings (the subjects).
    pub pairs_used: u64,
    pub ratings_used: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriterionResult {
    pub criterion: String,
    pub label: String,
    pub n_votes: u64,
    pub pairs: Vec<PairResult>,
    pub bradley_terry: Vec<StrengthResult>,
    pub agreement: Agreement,
}

#[derive(Debug, Clone, Serialize)]
pub struct LikertResult {
    pub variant: String,
    pub n: u64,
    pub mean: Option<f64>,
    pub sd: Option<f64>,
    pub ci: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PositionBias {
    /// Decisive overall votes (ties excluded).
    pub n: u64,
    pub left_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Method {
    pub bradley_terry: &'static str,
    pub intervals: &'static str,
    pub agreement: &'static str,
    pub resamples: u32,
    pub seed: u64,
}

/// Everything the statistics produce (the study-level fields are filled by the caller).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub criteria: Vec<CriterionResult>,
    pub likert: Vec<LikertResult>,
    pub position_bias: PositionBias,
    pub method: Method,
}

/// Computes all statistics of `votes` among `variants` (names, study order).
pub fn compute(variants: &[String], votes: &[Vote], resamples: u32, seed: u64) -> Stats {
    let mut criteria = Vec::new();
    for (ci, (key, label)) in CRITERIA.iter().enumerate() {
        let comps: Vec<Comparison> = votes
            .iter()
            .filter_map(|v| v.outcomes[ci].map(|o| Comparison { a: v.a, b: v.b, outcome: o, pair: v.pair }))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(ci as u64));
        criteria.push(criterion(variants, key, label, &comps, resamples, &mut rng));
    }
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(CRITERIA.len() as u64));
    let likert = (0..variants.len())
        .map(|vi| {
            let scores: Vec<f64> = votes
                .iter()
                .flat_map(|v| {
                    let mut s = Vec::new();
                    if v.a == vi {
                        s.extend(v.likert_a.map(f64::from));
                    }
                    if v.b == vi {
                        s.extend(v.likert_b.map(f64::from));
                    }
                    s
                })
                .collect();
            likert(&variants[vi], &scores, resamples, &mut rng)
        })
        .collect();
    let decisive: Vec<bool> = votes
        .iter()
        .filter_map(|v| match v.outcomes[0] {
            Some(Outcome::A) => Some(v.left_is_a),
            Some(Outcome::B) => Some(!v.left_is_a),
            _ => None,
        })
        .collect();
    let position_bias = PositionBias {
        n: decisive.len() as u64,
        left_share: (!decisive.is_empty())
            .then(|| decisive.iter().filter(|l| **l).count() as f64 / decisive.len() as f64),
    };
    Stats {
        criteria,
        likert,
        position_bias,
        method: Method {
            bradley_terry: "Bradley-Terry fitted by Hunter's MM algorithm; a tie counts as half a win for each side; one virtual tie per variant pair as a weak prior; log-strengths centred to mean 0",
            intervals: "percentile bootstrap (2.5%, 97.5%) over votes resampled with replacement",
            agreement: "Fleiss' kappa over {first better, tie, second better} with a varying number of ratings per pair (pairs rated at least twice), and the pairwise agreement P-bar",
            resamples,
            seed,
        },
    }
}

/// Win/tie/loss counts, indexed [a][b] with a < b: (a wins, ties, b wins).
type Counts = Vec<Vec<[u64; 3]>>;

fn count(k: usize, comps: &[Comparison], pick: impl Iterator<Item = usize>) -> Counts {
    let mut c = vec![vec![[0u64; 3]; k]; k];
    for i in pick {
        let cm = &comps[i];
        let (a, b, o) = if cm.a <= cm.b {
            (cm.a, cm.b, cm.outcome)
        } else {
            let o = match cm.outcome {
                Outcome::A => Outcome::B,
                Outcome::B => Outcome::A,
                Outcome::Tie => Outcome::Tie,
            };
            (cm.b, cm.a, o)
        };
        c[a][b][o.index()] += 1;
    }
    c
}

/// Bradley–Terry log-strengths (centred) from counts, by Hunter's MM iterations.
pub fn bradley_terry(k: usize, c: &Counts) -> Vec<f64> {
    const PRIOR_TIES: f64 = 1.0;
    // Wins (ties as halves) and comparison counts, prior included.
    let mut w = vec![vec![0.0f64; k]; k];
    for a in 0..k {
        for b in a + 1..k {
            let [aw, t, bw] = c[a][b];
            let t = t as f64 + PRIOR_TIES;
            w[a][b] = aw as f64 + t / 2.0;
            w[b][a] = bw as f64 + t / 2.0;
        }
    }
    let n = |i: usize, j: usize| w[i][j] + w[j][i];
    let wins: Vec<f64> = (0..k).map(|i| w[i].iter().sum()).collect();
    let mut p = vec![1.0f64; k];
    for _ in 0..10_000 {
        let mut next = vec![0.0; k];
        for i in 0..k {
            let denom: f64 = (0..k).filter(|j| *j != i).map(|j| n(i, j) / (p[i] + p[j])).sum();
            next[i] = if denom > 0.0 { wins[i] / denom } else { p[i] };
        }
        // Normalise: geometric mean 1.
        let lg: f64 = next.iter().map(|x| x.ln()).sum::<f64>() / k as f64;
        let g = lg.exp();
        for x in &mut next {
            *x /= g;
        }
        let change = next.iter().zip(&p).map(|(a, b)| (a.ln() - b.ln()).abs()).fold(0.0, f64::max);
        p = next;
        if change < 1e-12 {
            break;
        }
    }
    p.iter().map(|x| x.ln()).collect()
}

fn percentile_ci(mut xs: Vec<f64>) -> Option<[f64; 2]> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (xs.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
    };
    Some([q(0.025), q(0.975)])
}

fn share(c: [u64; 3]) -> Option<f64> {
    let n = c.iter().sum::<u64>();
    (n > 0).then(|| (c[0] as f64 + c[1] as f64 / 2.0) / n as f64)
}

fn criterion(
    variants: &[String],
    key: &str,
    label: &str,
    comps: &[Comparison],
    resamples: u32,
    rng: &mut StdRng,
) -> CriterionResult {
    let k = variants.len();
    let counts = count(k, comps, 0..comps.len());
    let bt = bradley_terry(k, &counts);
    // Bootstrap.
    let mut bt_samples = vec![Vec::new(); k];
    let mut share_samples = vec![vec![Vec::new(); k]; k];
    if !comps.is_empty() {
        for _ in 0..resamples {
            let idx = (0..comps.len()).map(|_| rng.random_range(0..comps.len()));
            let c = count(k, comps, idx);
            for (i, s) in bradley_terry(k, &c).into_iter().enumerate() {
                bt_samples[i].push(s);
            }
            for a in 0..k {
                for b in a + 1..k {
                    if let Some(s) = share(c[a][b]) {
                        share_samples[a][b].push(s);
                    }
                }
            }
        }
    }
    let mut pairs = Vec::new();
    for a in 0..k {
        for b in a + 1..k {
            let c = counts[a][b];
            pairs.push(PairResult {
                a: variants[a].clone(),
                b: variants[b].clone(),
                a_wins: c[0],
                ties: c[1],
                b_wins: c[2],
                n: c.iter().sum(),
                a_share: share(c),
                a_share_ci: percentile_ci(std::mem::take(&mut share_samples[a][b])),
            });
        }
    }
    let bradley_terry = (0..k)
        .map(|i| StrengthResult {
            variant: variants[i].clone(),
            log_strength: bt[i],
            ci: if comps.is_empty() { None } else { percentile_ci(std::mem::take(&mut bt_samples[i])) },
            n: comps.iter().filter(|c| c.a == i || c.b == i).count() as u64,
        })
        .collect();
    CriterionResult {
        criterion: key.to_string(),
        label: label.to_string(),
        n_votes: comps.len() as u64,
        pairs,
        bradley_terry,
        agreement: agreement(comps),
    }
}

/// Fleiss' kappa with a varying number of ratings per subject (see the module doc).
pub fn agreement(comps: &[Comparison]) -> Agreement {
    use std::collections::BTreeMap;
    let mut by_pair: BTreeMap<i64, [u64; 3]> = BTreeMap::new();
    for c in comps {
        // Comparisons of one pair share the variant order, so outcomes are comparable.
        by_pair.entry(c.pair).or_default()[c.outcome.index()] += 1;
    }
    let subjects: Vec<[u64; 3]> = by_pair.into_values().filter(|c| c.iter().sum::<u64>() >= 2).collect();
    let ratings: u64 = subjects.iter().flatten().sum();
    if subjects.is_empty() {
        return Agreement { fleiss_kappa: None, pairwise_agreement: None, pairs_used: 0, ratings_used: 0 };
    }
    let p_bar = subjects
        .iter()
        .map(|c| {
            let n: u64 = c.iter().sum();
            let same: u64 = c.iter().map(|x| x * x.saturating_sub(1)).sum();
            same as f64 / (n * (n - 1)) as f64
        })
        .sum::<f64>()
        / subjects.len() as f64;
    let p_e: f64 = (0..3)
        .map(|k| {
            let pk = subjects.iter().map(|c| c[k]).sum::<u64>() as f64 / ratings as f64;
            pk * pk
        })
        .sum();
    let kappa = if (1.0 - p_e).abs() < 1e-12 { None } else { Some((p_bar - p_e) / (1.0 - p_e)) };
    Agreement {
        fleiss_kappa: kappa,
        pairwise_agreement: Some(p_bar),
        pairs_used: subjects.len() as u64,
        ratings_used: ratings,
    }
}

fn likert(variant: &str, scores: &[f64], resamples: u32, rng: &mut StdRng) -> LikertResult {
    let n = scores.len();
    if n == 0 {
        return LikertResult { variant: variant.to_string(), n: 0, mean: None, sd: None, ci: None };
    }
    let mean = scores.iter().sum::<f64>() / n as f64;
    let sd = (n > 1).then(|| (scores.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
    let means: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| scores[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    LikertResult { variant: variant.to_string(), n: n as u64, mean: Some(mean), sd, ci: percentile_ci(means) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(list: &[(usize, usize, Outcome, i64)]) -> Vec<Comparison> {
        list.iter().map(|&(a, b, outcome, pair)| Comparison { a, b, outcome, pair }).collect()
    }

    #[test]
    fn bt_two_variants_matches_share() {
        // 30 wins for a, 10 for b, no ties: with the prior tie, P(a) = 30.5/41.
        let mut c = vec![vec![[0u64; 3]; 2]; 2];
        c[0][1] = [30, 0, 10];
        let s = bradley_terry(2, &c);
        let p = 1.0 / (1.0 + (s[1] - s[0]).exp());
        assert!((p - 30.5 / 41.0).abs() < 1e-9, "p={p}");
        assert!((s[0] + s[1]).abs() < 1e-12);
    }

    #[test]
    fn bt_three_variants_ordering_and_finite() {
        let mut c = vec![vec![[0u64; 3]; 3]; 3];
        c[0][1] = [20, 5, 0]; // 0 never loses
        c[0][2] = [25, 0, 0];
        c[1][2] = [15, 5, 5];
        let s = bradley_terry(3, &c);
        assert!(s.iter().all(|x| x.is_finite()));
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
    }

    #[test]
    fn bt_mm_satisfies_likelihood_equations() {
        // At the MLE, expected wins equal observed wins for every variant.
        let mut c = vec![vec![[0u64; 3]; 3]; 3];
        c[0][1] = [7, 2, 3];
        c[0][2] = [4, 1, 6];
        c[1][2] = [5, 3, 2];
        let s = bradley_terry(3, &c);
        for i in 0..3 {
            let mut obs = 0.0;
            let mut exp = 0.0;
            for j in 0..3 {
                if i == j {
                    continue;
                }
                let (a, b) = (i.min(j), i.max(j));
                let [aw, t, bw] = c[a][b];
                let t = t as f64 + 1.0;
                let wi = if i == a { aw as f64 } else { bw as f64 } + t / 2.0;
                let nij = (aw + bw) as f64 + t;
                obs += wi;
                exp += nij / (1.0 + (s[j] - s[i]).exp());
            }
            assert!((obs - exp).abs() < 1e-6, "variant {i}: {obs} vs {exp}");
        }
    }

    #[test]
    fn fleiss_kappa_known_values() {
        // Perfect agreement on varied outcomes → kappa 1.
        let c = comps(&[(0, 1, Outcome::A, 1), (0, 1, Outcome::A, 1), (0, 1, Outcome::B, 2), (0, 1, Outcome::B, 2)]);
        let a = agreement(&c);
        assert!((a.fleiss_kappa.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(a.pairs_used, 2);
        // Systematic disagreement: each pair split A/B → P̄ = 0, P_e = 0.5, kappa −1.
        let c = comps(&[(0, 1, Outcome::A, 1), (0, 1, Outcome::B, 1), (0, 1, Outcome::A, 2), (0, 1, Outcome::B, 2)]);
        let a = agreement(&c);
        assert!((a.fleiss_kappa.unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(a.pairwise_agreement, Some(0.0));
    }

    #[test]
    fn fleiss_kappa_matches_textbook_example() {
        // Fleiss (1971)-style check on a small table with equal raters per subject:
        // subjects × categories counts, 3 raters each.
        let table = [[3, 0, 0], [0, 3, 0], [1, 1, 1], [2, 1, 0], [0, 0, 3]];
        let mut c = Vec::new();
        for (s, row) in table.iter().enumerate() {
            for (k, &cnt) in row.iter().enumerate() {
                let o = [Outcome::A, Outcome::Tie, Outcome::B][k];
                for _ in 0..cnt {
                    c.push(Comparison { a: 0, b: 1, outcome: o, pair: s as i64 });
                }
            }
        }
        // By hand: P_i = 1,1,0,1/3,1 → P̄ = 10/15; p = (6/15, 5/15, 4/15) → P_e = 77/225.
        let p_bar = (1.0 + 1.0 + 0.0 + 1.0 / 3.0 + 1.0) / 5.0;
        let p_e = (36.0 + 25.0 + 16.0) / 225.0;
        let want = (p_bar - p_e) / (1.0 - p_e);
        let a = agreement(&c);
        assert!((a.fleiss_kappa.unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn compute_is_seeded_and_intervals_cover_estimate() {
        let names = vec!["base".to_string(), "opt".to_string()];
        let votes: Vec<Vote> = (0..60)
            .map(|i| Vote {
                pair: i % 20,
                a: 0,
                b: 1,
                left_is_a: i % 2 == 0,
                outcomes: [Some(if i % 3 == 0 { Outcome::B } else { Outcome::A }), None, Some(Outcome::Tie), None],
                likert_a: Some((i % 5 + 1) as u8),
                likert_b: None,
            })
            .collect();
        let s1 = compute(&names, &votes, 200, 7);
        let s2 = compute(&names, &votes, 200, 7);
        let j1 = serde_json::to_string(&s1).unwrap();
        assert_eq!(j1, serde_json::to_string(&s2).unwrap());
        let overall = &s1.criteria[0];
        assert_eq!(overall.pairs[0].a_wins, 40);
        assert_eq!(overall.pairs[0].b_wins, 20);
        let bt = &overall.bradley_terry[0];
        let ci = bt.ci.unwrap();
        assert!(ci[0] <= bt.log_strength && bt.log_strength <= ci[1]);
        assert!(s1.criteria[1].n_votes == 0 && s1.criteria[1].bradley_terry[0].ci.is_none());
        assert_eq!(s1.likert[0].n, 60);
        assert!((s1.likert[0].mean.unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(s1.likert[1].n, 0);
    }
}
