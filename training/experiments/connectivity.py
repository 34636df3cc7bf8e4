"""``ratingctr experiment connectivity``: Base vs LightGCN TS vs FT across k-cores (paper 2).

Per architecture, k-core and seed: Base (table encoder), TS (LightGCN encoder from
scratch) and FT (LightGCN encoder starting from that seed's Base run), all with the same
head and hyper-parameters.  From them:

* Tables 2–3: test AUC and logloss per k with EvalRM off (all test rows) and on (test
  rows with the middle rating, threshold − 1, removed), mean ± std, paired tests vs Base;
* Table 4: AUC per user-activity tertile (training interaction count) and the variance
  of the three;
* Figure 5: MCI(p_base, Δ) per group of TS and FT over Base, averaged over seeds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ratingctr.tables import fmt, md_table, p_value, pct, pm
from ratingctr.training.config import RunConfig
from ratingctr.training.experiments.provenance import provenance_line
from ratingctr.training.experiments.runner import Plan
from ratingctr.training.experiments.stats import mean_std, paired_p_value, relative
from ratingctr.training.metrics import GROUP_NAMES, mci

MODES = ("Base", "TS", "FT")


@dataclass(frozen=True)
class ConnectivitySpec:
    models: tuple[str, ...]
    k_cores: tuple[int, ...]
    seeds: tuple[int, ...]
    head: str = "rating"
    gcn_layers: int = 2


ConfigFactory = Callable[..., RunConfig]


def plan_connectivity(spec: ConnectivitySpec, make_config: ConfigFactory, plan: Plan) -> dict:
    index: dict = {}
    for k in spec.k_cores:
        for model in spec.models:
            for seed in spec.seeds:
                base_cfg = make_config(model, seed, head=spec.head, k_core=k, encoder="table")
                graph_cfg = make_config(model, seed, head=spec.head, k_core=k, encoder="lightgcn",
                                        gcn_layers=spec.gcn_layers)
                label = f"{model}-{spec.head}-k{k}-s{seed}"
                base = plan.add(base_cfg, f"{label}-base", rm_eval=True)
                index[(model, k, seed, "Base")] = base
                index[(model, k, seed, "TS")] = plan.add(graph_cfg, f"{label}-ts", rm_eval=True)
                index[(model, k, seed, "FT")] = plan.add(graph_cfg, f"{label}-ft", base=base, rm_eval=True)
    return index


def _mci_or_none(base: float | None, other: float | None) -> float | None:
    if base is None or other is None:
        return None
    try:
        return float(mci(base, other - base))
    except ValueError:
        return None


def collect_connectivity(spec: ConnectivitySpec, plan: Plan, index: dict) -> dict:
    cells: dict = {}
    datasets: dict = {}
    for k in spec.k_cores:
        for model in spec.models:
            runs = {mode: [plan.metrics(index[(model, k, s, mode)]) for s in spec.seeds] for mode in MODES}
            rm = {mode: [plan.artifact(index[(model, k, s, mode)], "rm.json") for s in spec.seeds] for mode in MODES}
            datasets.setdefault(str(k), runs["Base"][0].get("dataset"))
            cell: dict = {}
            per_seed: dict = {}
            for mode in MODES:
                test = [m.get("test") or {} for m in runs[mode]]
                groups = [m.get("groups") or {} for m in runs[mode]]
                per_seed[mode] = {
                    "auc": [t.get("auc") for t in test], "logloss": [t.get("logloss") for t in test],
                    "auc_rm": [r.get("auc") for r in rm[mode]], "logloss_rm": [r.get("logloss") for r in rm[mode]],
                    **{f"auc_{g}": [(gr.get(g) or {}).get("auc") for gr in groups] for g in GROUP_NAMES},
                    "variance": [gr.get("variance") for gr in groups],
                }
                cell[mode] = {name: mean_std(vals) for name, vals in per_seed[mode].items()}
                cell[mode]["per_seed"] = per_seed[mode]
            for mode in ("TS", "FT"):
                cell[mode]["p_vs_base"] = {name: paired_p_value(per_seed["Base"][name], per_seed[mode][name])
                                           for name in ("auc", "logloss", "auc_rm", "logloss_rm")}
                cell[mode]["relative_auc"] = relative(cell["Base"]["auc"][0], cell[mode]["auc"][0])
            cell["FT"]["p_vs_TS"] = paired_p_value(per_seed["TS"]["auc"], per_seed["FT"]["auc"])
            cell["mci"] = {mode: {g: mean_std([_mci_or_none(b, o) for b, o in
                                               zip(per_seed["Base"][f"auc_{g}"], per_seed[mode][f"auc_{g}"])])
                                  for g in GROUP_NAMES} for mode in ("TS", "FT")}
            cell["group_delta"] = {mode: {g: mean_std([None if b is None or o is None else o - b for b, o in
                                                       zip(per_seed["Base"][f"auc_{g}"], per_seed[mode][f"auc_{g}"])])
                                          for g in GROUP_NAMES} for mode in ("TS", "FT")}
            cells[f"{model}|{k}"] = cell
    first = plan.metrics(index[(spec.models[0], spec.k_cores[0], spec.seeds[0], "Base")])
    return {"experiment": "connectivity", "models": list(spec.models), "k_cores": list(spec.k_cores),
            "seeds": list(spec.seeds), "head": spec.head, "gcn_layers": spec.gcn_layers,
            "device": first.get("device"), "precision": first.get("precision"),
            "datasets": datasets, "cells": cells, "hyperparameters": _hyper_parameters(spec, plan, index)}


def _hyper_parameters(spec: ConnectivitySpec, plan: Plan, index: dict) -> list[dict]:
    rows = []
    for model in spec.models:
        cfgs = [plan.metrics(index[(model, k, s, mode)]).get("config") or {} for k in spec.k_cores
                for s in spec.seeds for mode in MODES]
        shared = {repr((c.get("model"), {key: v for key, v in (c.get("train") or {}).items() if key != "seed"},
                        (c.get("head") or {}))) for c in cfgs}
        first = cfgs[0]
        rows.append({"model": model, "params": (first.get("model") or {}).get("params"),
                     "embedding_dim": (first.get("model") or {}).get("embedding_dim"),
                     "lr": (first.get("train") or {}).get("lr"), "identical_across_modes": len(shared) == 1})
    return rows


def _findings(results: dict) -> list[str]:
    cells, models, ks = results["cells"], results["models"], results["k_cores"]
    n = len(models) * len(ks)
    out = []
    for mode in ("TS", "FT"):
        wins = [(m, k) for m in models for k in ks
                if (cells[f"{m}|{k}"][mode]["auc"][0] or 0) > (cells[f"{m}|{k}"]["Base"]["auc"][0] or 1)]
        sig = [(m, k) for m, k in wins if (cells[f"{m}|{k}"][mode]["p_vs_base"]["auc"] or 1) < 0.05]
        out.append(f"{mode} beats Base in mean test AUC in {len(wins)} of {n} (architecture, k) cells, "
                   f"{len(sig)} of them at p < 0.05 (paired over seeds).")
    ft_ts = [(m, k) for m in models for k in ks
             if (cells[f"{m}|{k}"]["FT"]["auc"][0] or 0) > (cells[f"{m}|{k}"]["TS"]["auc"][0] or 1)]
    out.append(f"FT beats TS in {len(ft_ts)} of {n} cells (paper 2's ordering is FT > TS > Base).")
    for k in ks:
        gains = [cells[f"{m}|{k}"]["FT"]["relative_auc"] for m in models]
        gains = [g for g in gains if g is not None]
        if gains:
            out.append(f"k = {k}: mean relative AUC gain of FT over Base {np.mean(gains) * 100:+.2f}% "
                       f"(density {fmt((results['datasets'].get(str(k)) or {}).get('density'))}).")
    low_best = 0
    total = 0
    for m in models:
        for k in ks:
            entries = cells[f"{m}|{k}"]["mci"]["FT"]
            vals = {g: entries[g][0] for g in GROUP_NAMES}
            if all(v is not None for v in vals.values()):
                total += 1
                low_best += max(vals, key=vals.get) == "low"
    out.append(f"Figure 5: the low-activity tertile has the largest FT MCI in {low_best} of {total} cells "
               "(paper 2's claim: under-served users gain most).")
    return out


def render_connectivity(results: dict, figures: dict[str, str], command: str) -> str:
    cells, models, ks = results["cells"], results["models"], results["k_cores"]
    lines = [f"# Connectivity: Base vs LightGCN TS vs FT ({len(results['seeds'])} seeds, {results['head']} head)", "",
             "Produced by", "", "```bash", command, "```", "", provenance_line(results), "",
             f"Seeds {', '.join(map(str, results['seeds']))}; each seed fixes the split and initialisation of all "
             f"three modes, and FT starts from that seed's Base run. LightGCN: {results['gcn_layers']} layers over "
             f"the training graph only. Device {results.get('device')}, precision {results.get('precision')}. "
             "Mean ± sample std over seeds; p: paired t-test against Base over seeds. Raw numbers: `results.json`.",
             "", "## Datasets per k-core (first seed)", ""]
    rows = [[k, d.get("users"), d.get("items"), d.get("interactions"), fmt(d.get("density"))]
            for k, d in ((k, results["datasets"].get(str(k)) or {}) for k in ks)]
    lines += [md_table(["k-core", "users", "items", "interactions", "density"], rows), ""]
    for title, auc_key, ll_key in (("Table 2: EvalRM off (all test rows)", "auc", "logloss"),
                                   ("Table 3: EvalRM on (middle ratings removed from the test rows)",
                                    "auc_rm", "logloss_rm")):
        lines += [f"## {title}", ""]
        rows = []
        for k in ks:
            for m in models:
                c = cells[f"{m}|{k}"]
                rows.append([k, m, pm(*c["Base"][auc_key]),
                             f"{pm(*c['TS'][auc_key])} (p {p_value(c['TS']['p_vs_base'][auc_key])})",
                             f"{pm(*c['FT'][auc_key])} (p {p_value(c['FT']['p_vs_base'][auc_key])})",
                             pm(*c["Base"][ll_key]), pm(*c["TS"][ll_key]), pm(*c["FT"][ll_key])])
        lines += [md_table(["k", "model", "AUC Base", "AUC TS", "AUC FT", "logloss Base", "logloss TS",
                            "logloss FT"], rows), ""]
    if "auc_by_k" in figures:
        lines += [f"![AUC by k-core]({figures['auc_by_k']})", ""]
    lines += ["## Table 4: AUC per user-activity group", "",
              "Users split into tertiles of their training interaction count; variance of the three group AUCs "
              "(lower = more even service).", ""]
    rows = []
    for k in ks:
        for m in models:
            c = cells[f"{m}|{k}"]
            for mode in MODES:
                rows.append([k, m, mode] + [fmt(c[mode][f"auc_{g}"][0]) for g in GROUP_NAMES]
                            + [f"{c[mode]['variance'][0]:.2e}" if c[mode]["variance"][0] is not None else "n/a"])
    lines += [md_table(["k", "model", "mode", "AUC low", "AUC mid", "AUC high", "variance"], rows), "",
              "## Figure 5: MCI per activity group", "",
              "MCI(p_b, c) = log((1 − p_b) / (1 − p_b − c)) with p_b the Base group AUC and c the gain of TS or FT, "
              "per seed, then mean ± std.", ""]
    if "figure5" in figures:
        lines += [f"![Figure 5]({figures['figure5']})", ""]
    rows = []
    for k in ks:
        for m in models:
            c = cells[f"{m}|{k}"]
            for mode in ("TS", "FT"):
                rows.append([k, m, mode] + [f"{fmt(c['group_delta'][mode][g][0], 4, True)} / "
                                            f"{fmt(c['mci'][mode][g][0], 4, True)}" for g in GROUP_NAMES]
                            + [pct(c[mode]["relative_auc"])])
    lines += [md_table(["k", "model", "mode", "low ΔAUC / MCI", "mid ΔAUC / MCI", "high ΔAUC / MCI",
                        "overall Δ AUC"], rows), "",
              "## Hyper-parameters", "",
              "Base, TS and FT of an architecture share model, training and head settings (checked from the recorded "
              "configs); only the encoder differs.", ""]
    rows = [[h["model"], f"`{h['params']}`", h["embedding_dim"], h["lr"],
             "yes" if h["identical_across_modes"] else "**NO**"] for h in results["hyperparameters"]]
    lines += [md_table(["model", "params", "d", "lr", "identical"], rows), "",
              "## Findings (computed from the numbers above)", ""]
    lines += [f"* {f}" for f in _findings(results)]
    return "\n".join(lines) + "\n"
