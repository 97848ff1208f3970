//! Results of a study (statistics + counts) and their CSV/JSON exports, shared by the
//! admin endpoints and `wanrt review export`.

use std::fmt::Write as _;

use rusqlite::Connection;
use serde::Serialize;

use crate::db::{self, VoteRow};
use crate::stats::{self, Outcome, Stats, Vote};
use crate::Error;

#[derive(Debug, Clone, Serialize)]
pub struct RaterCount {
    pub name: String,
    pub votes: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub pairs: usize,
    pub min_votes_per_pair: i64,
    pub max_votes_per_pair: i64,
}

/// The results document (results page, `export --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub study: String,
    pub variants: Vec<String>,
    pub n_votes: usize,
    pub n_raters: usize,
    pub coverage: Coverage,
    pub raters: Vec<RaterCount>,
    #[serde(flatten)]
    pub stats: Stats,
}

/// Raw votes of a study, study variant names, and the data as the stats want it.
pub struct Loaded {
    pub variants: Vec<(i64, String)>,
    pub votes: Vec<VoteRow>,
}

/// Loads a study's votes (errors name the study when it does not exist).
pub fn load(conn: &Connection, study: &str) -> Result<(i64, Loaded), Error> {
    let Some(id) = db::study_id(conn, study)? else {
        let mut st = conn.prepare("SELECT name FROM studies ORDER BY id")?;
        let names: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        return Err(Error::Input(format!(
            "--study: no study '{study}' in the database (studies: {})",
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )));
    };
    Ok((id, Loaded { variants: db::variants(conn, id)?, votes: db::votes(conn, id)? }))
}

fn to_stats_votes(l: &Loaded) -> Vec<Vote> {
    let idx = |id: i64| l.variants.iter().position(|v| v.0 == id).unwrap_or(0);
    l.votes
        .iter()
        .map(|v| Vote {
            pair: v.pair_id,
            a: idx(v.variant_a),
            b: idx(v.variant_b),
            left_is_a: v.left_variant == v.variant_a,
            outcomes: [
                Outcome::parse(&v.overall),
                v.criteria[0].as_deref().and_then(Outcome::parse),
                v.criteria[1].as_deref().and_then(Outcome::parse),
                v.criteria[2].as_deref().and_then(Outcome::parse),
            ],
            likert_a: v.likert_a.map(|x| x as u8),
            likert_b: v.likert_b.map(|x| x as u8),
        })
        .collect()
}

/// Computes the results of `study` (votes read in one snapshot).
pub fn compute(conn: &Connection, study: &str, resamples: u32, seed: u64) -> Result<Results, Error> {
    let (id, loaded) = load(conn, study)?;
    let raters = db::rater_counts(conn, id)?;
    let per_pair = db::votes_per_pair(conn, id)?;
    Ok(assemble(study, &loaded, raters, per_pair, resamples, seed))
}

/// Builds the results from loaded data (no database access: safe off the db lock).
pub fn assemble(
    study: &str,
    loaded: &Loaded,
    raters: Vec<(String, i64)>,
    per_pair: Vec<i64>,
    resamples: u32,
    seed: u64,
) -> Results {
    let names: Vec<String> = loaded.variants.iter().map(|v| v.1.clone()).collect();
    let stats = stats::compute(&names, &to_stats_votes(loaded), resamples, seed);
    Results {
        study: study.to_string(),
        variants: names,
        n_votes: loaded.votes.len(),
        n_raters: raters.iter().filter(|r| r.1 > 0).count(),
        coverage: Coverage {
            pairs: per_pair.len(),
            min_votes_per_pair: per_pair.iter().copied().min().unwrap_or(0),
            max_votes_per_pair: per_pair.iter().copied().max().unwrap_or(0),
        },
        raters: raters.into_iter().map(|(name, votes)| RaterCount { name, votes }).collect(),
        stats,
    }
}

fn csv_field(s: &str) -> String {
    // Quote always when needed; neutralise spreadsheet formulas.
    let s =
        if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn num(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.6}")).unwrap_or_default()
}

/// Summary as a long-format CSV: one row per (section, criterion, variant, opponent).
pub fn summary_csv(r: &Results) -> String {
    let mut out = String::from("section,criterion,variant,opponent,wins,ties,losses,n,value,ci_low,ci_high\n");
    let mut row = |f: [String; 11]| {
        let line: Vec<String> = f.iter().map(|s| csv_field(s)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    };
    for c in &r.stats.criteria {
        for p in &c.pairs {
            row([
                "pair".into(),
                c.criterion.clone(),
                p.a.clone(),
                p.b.clone(),
                p.a_wins.to_string(),
                p.ties.to_string(),
                p.b_wins.to_string(),
                p.n.to_string(),
                num(p.a_share),
                num(p.a_share_ci.map(|x| x[0])),
                num(p.a_share_ci.map(|x| x[1])),
            ]);
        }
        for s in &c.bradley_terry {
            row([
                "bradley_terry".into(),
                c.criterion.clone(),
                s.variant.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                s.n.to_string(),
                num((c.n_votes > 0).then_some(s.log_strength)),
                num(s.ci.map(|x| x[0])),
                num(s.ci.map(|x| x[1])),
            ]);
        }
        for (name, v) in
            [("fleiss_kappa", c.agreement.fleiss_kappa), ("pairwise_agreement", c.agreement.pairwise_agreement)]
        {
            row([
                name.into(),
                c.criterion.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                c.agreement.ratings_used.to_string(),
                num(v),
                String::new(),
                String::new(),
            ]);
        }
    }
    for l in &r.stats.likert {
        row([
            "likert".into(),
            String::new(),
            l.variant.clone(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            l.n.to_string(),
            num(l.mean),
            num(l.ci.map(|x| x[0])),
            num(l.ci.map(|x| x[1])),
        ]);
    }
    row([
        "position_bias_left".into(),
        "overall".into(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        r.stats.position_bias.n.to_string(),
        num(r.stats.position_bias.left_share),
        String::new(),
        String::new(),
    ]);
    out
}

/// One raw vote with variant names in clear (admin/export only).
#[derive(Debug, Clone, Serialize)]
pub struct RawVote {
    pub id: i64,
    pub submission_id: String,
    pub created_at: i64,
    pub rater: String,
    pub file: String,
    pub variant_a: String,
    pub variant_b: String,
    pub left: String,
    /// Winner's variant name or "tie"; criteria the same, or null when not answered.
    pub overall: String,
    pub visual: Option<String>,
    pub motion: Option<String>,
    pub alignment: Option<String>,
    pub likert_a: Option<i64>,
    pub likert_b: Option<i64>,
    pub elapsed_ms: Option<i64>,
}

/// Raw votes, variant ids resolved to names.
pub fn raw_votes(loaded: &Loaded) -> Vec<RawVote> {
    let name = |id: i64| loaded.variants.iter().find(|v| v.0 == id).map(|v| v.1.clone()).unwrap_or_default();
    loaded
        .votes
        .iter()
        .map(|v| {
            let (a, b) = (name(v.variant_a), name(v.variant_b));
            let winner = |o: &str| match o {
                "a" => a.clone(),
                "b" => b.clone(),
                _ => "tie".to_string(),
            };
            RawVote {
                id: v.id,
                submission_id: v.submission_id.clone(),
                created_at: v.created_at,
                rater: v.rater.clone(),
                file: v.file.clone(),
                variant_a: a.clone(),
                variant_b: b.clone(),
                left: name(v.left_variant),
                overall: winner(&v.overall),
                visual: v.criteria[0].as_deref().map(winner),
                motion: v.criteria[1].as_deref().map(winner),
                alignment: v.criteria[2].as_deref().map(winner),
                likert_a: v.likert_a,
                likert_b: v.likert_b,
                elapsed_ms: v.elapsed_ms,
            }
        })
        .collect()
}

/// Raw votes as CSV.
pub fn raw_csv(votes: &[RawVote]) -> String {
    let mut out = String::from(
        "id,submission_id,created_at,rater,file,variant_a,variant_b,left,overall,visual,motion,alignment,likert_a,likert_b,elapsed_ms\n",
    );
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    let n = |x: Option<i64>| x.map(|v| v.to_string()).unwrap_or_default();
    for v in votes {
        let f = [
            v.id.to_string(),
            v.submission_id.clone(),
            v.created_at.to_string(),
            v.rater.clone(),
            v.file.clone(),
            v.variant_a.clone(),
            v.variant_b.clone(),
            v.left.clone(),
            v.overall.clone(),
            o(&v.visual),
            o(&v.motion),
            o(&v.alignment),
            n(v.likert_a),
            n(v.likert_b),
            n(v.elapsed_ms),
        ];
        let line: Vec<String> = f.iter().map(|s| csv_field(s)).collect();
        let _ = writeln!(out, "{}", line.join(","));
    }
    out
}
