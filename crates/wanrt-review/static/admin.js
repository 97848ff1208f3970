// wanrt review: results page (admin). Renders /api/admin/results.
"use strict";

const $ = (id) => document.getElementById(id);
const f = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
const ci = (c, d = 3) => (c ? "[" + f(c[0], d) + ", " + f(c[1], d) + "]" : "–");

function table(id, head, rows) {
  const t = document.createElement("table");
  t.className = "results";
  if (id) t.id = id;
  const tr = document.createElement("tr");
  for (const h of head) { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); }
  t.appendChild(tr);
  for (const r of rows) {
    const row = document.createElement("tr");
    for (const c of r) { const td = document.createElement("td"); td.textContent = String(c); row.appendChild(td); }
    t.appendChild(row);
  }
  return t;
}

function h(tag, text) { const e = document.createElement(tag); e.textContent = text; return e; }

async function main() {
  const res = await fetch("/api/admin/results", { credentials: "same-origin" });
  if (!res.ok) { $("summary").textContent = "Cannot load results (HTTP " + res.status + ")"; return; }
  const r = await res.json();
  $("title").textContent = "Results: " + r.study;
  $("summary").textContent = r.n_votes + " votes from " + r.n_raters + " raters on " +
    r.coverage.pairs + " pairs (" + r.coverage.min_votes_per_pair + "–" +
    r.coverage.max_votes_per_pair + " votes per pair); variants: " + r.variants.join(", ");
  const out = $("results");
  out.replaceChildren();
  for (const c of r.criteria) {
    out.appendChild(h("h2", c.label + " (" + c.n_votes + " votes)"));
    out.appendChild(table("pairs-" + c.criterion, ["pair", "first wins", "ties", "second wins", "n", "share of first (wins + ties/2)", "95% CI"],
      c.pairs.map((p) => [p.a + " vs " + p.b, p.a_wins, p.ties, p.b_wins, p.n, f(p.a_share), ci(p.a_share_ci)])));
    out.appendChild(table("bt-" + c.criterion, ["variant", "Bradley–Terry log-strength", "95% CI", "comparisons"],
      c.bradley_terry.map((s) => [s.variant, c.n_votes ? f(s.log_strength) : "–", ci(s.ci), s.n])));
    const a = c.agreement;
    out.appendChild(h("p", "Inter-rater agreement: Fleiss' kappa " + f(a.fleiss_kappa) +
      ", pairwise agreement " + f(a.pairwise_agreement) + " (" + a.pairs_used + " pairs rated twice or more, " +
      a.ratings_used + " ratings)"));
  }
  out.appendChild(h("h2", "Mean Likert score (1–5)"));
  out.appendChild(table("likert", ["variant", "mean", "95% CI", "sd", "n"],
    r.likert.map((l) => [l.variant, f(l.mean, 2), ci(l.ci, 2), f(l.sd, 2), l.n])));
  const pb = r.position_bias;
  out.appendChild(h("p", "Position bias: the left video won " + f(pb.left_share) + " of " + pb.n + " decisive votes."));
  out.appendChild(h("h2", "Raters"));
  out.appendChild(table("raters", ["rater", "votes"], r.raters.map((x) => [x.name, x.votes])));
  if (r.invites && r.invites.length) {
    out.appendChild(h("h2", "Invite links"));
    out.appendChild(table("invites", ["link", "used"], r.invites.map((i) => [location.origin + i.url, i.used ? "yes" : "no"])));
  }
  $("plot").src = "/api/admin/plot.png?n=" + r.n_votes;
  const m = r.method;
  $("method").replaceChildren(
    h("p", m.bradley_terry + "."),
    h("p", "Intervals: " + m.intervals + " (" + m.resamples + " resamples, seed " + m.seed + ")."),
    h("p", "Agreement: " + m.agreement + "."));
  document.body.dataset.loaded = "1";
}

main().catch((e) => { $("summary").textContent = "Error: " + e.message; });
