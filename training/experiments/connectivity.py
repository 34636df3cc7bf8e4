"""``ratingctr experiment connectivity``: Base vs Base+ vs LightGCN TS vs FT across k-cores (paper 2).

Per architecture, k-core and seed: Base (table encoder), TS (LightGCN encoder from
scratch), FT (LightGCN encoder starting from that seed's Base run) and Base+ (the
control: the same Base checkpoint trained on with the *table* encoder under FT's budget,
optimiser and stopping rule), all with the same head and hyper-parameters.  FT − Base
mixes message passing with extra training; FT − Base+ is the message-passing effect.
From them:

* Tables 2–3: test AUC and logloss per k with EvalRM off (all test rows) and on (test
  rows with the middle rating, threshold − 1, removed), mean ± std, paired tests vs Base,
  and FT − Base+ with its 95% CI, p and Holm-adjusted p (family: the table's tests);
* Table 4: AUC per user-activity tertile (training interaction count) and the variance
  of the three;
* Figure 5: MCI(p_base, Δ) per group of TS and FT over Base, and of FT over Base+,
  averaged over seeds.

Every table counts the runs its epoch budget stopped (``stats.hit_cap``; target 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ratingctr.tables import fmt, md_table, p_value, pct, pm
from ratingctr.training.config import RunConfig
from ratingctr.training.experiments.provenance import provenance_line
from ratingctr.training.experiments.runner import Plan
from ratingctr.training.experiments.stats import (
    capped_line,
    count_capped,
    diff_ci,
    holm,
    mean_std,
    merge_counts,
    paired_difference,
    paired_p_value,
    relative,
)
from ratingctr.training.metrics import GROUP_NAMES, mci

MODES = ("Base", "Base+", "TS", "FT")
#: arms compared with Base; FT is also compared with Base+ (message passing) and TS
ARMS = ("Base+", "TS", "FT")
#: (other, baseline) pairs whose MCI per activity group Figure 5 shows
MCI_PAIRS = {"TS": ("TS", "Base"), "FT": ("FT", "Base"), "FT−Base+": ("FT", "Base+")}
TESTED = ("auc", "logloss", "auc_rm", "logloss_rm")


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
                index[(model, k, seed, "Base+")] = plan.add(base_cfg, f"{label}-baseplus", base=base, rm_eval=True)
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
            for mode in ARMS:
                cell[mode]["p_vs_base"] = {name: paired_p_value(per_seed["Base"][name], per_seed[mode][name])
                                           for name in TESTED}
                cell[mode]["diff_vs_base"] = {name: paired_difference(per_seed["Base"][name], per_seed[mode][name])
                                              for name in TESTED}
                cell[mode]["relative_auc"] = relative(cell["Base"]["auc"][0], cell[mode]["auc"][0])
            cell["FT"]["p_vs_TS"] = paired_p_value(per_seed["TS"]["auc"], per_seed["FT"]["auc"])
            # the message-passing effect: FT against the continued-training control
            cell["message_passing"] = {
                **{name: paired_difference(per_seed["Base+"][name], per_seed["FT"][name]) for name in TESTED},
                "relative_auc": relative(cell["Base+"]["auc"][0], cell["FT"]["auc"][0]),
                "mci": mean_std([_mci_or_none(b, o) for b, o in zip(per_seed["Base+"]["auc"], per_seed["FT"]["auc"])]),
            }
            cell["mci"] = {name: {g: mean_std([_mci_or_none(b, o) for b, o in
                                               zip(per_seed[base][f"auc_{g}"], per_seed[other][f"auc_{g}"])])
                                  for g in GROUP_NAMES} for name, (other, base) in MCI_PAIRS.items()}
            cell["group_delta"] = {name: {g: mean_std([None if b is None or o is None else o - b for b, o in
                                                       zip(per_seed[base][f"auc_{g}"], per_seed[other][f"auc_{g}"])])
                                          for g in GROUP_NAMES} for name, (other, base) in MCI_PAIRS.items()}
            cell["capped"] = {mode: count_capped(runs[mode]) for mode in MODES}
            cells[f"{model}|{k}"] = cell
    _adjust(cells)
    first = plan.metrics(index[(spec.models[0], spec.k_cores[0], spec.seeds[0], "Base")])
    return {"experiment": "connectivity", "models": list(spec.models), "k_cores": list(spec.k_cores),
            "seeds": list(spec.seeds), "head": spec.head, "gcn_layers": spec.gcn_layers,
            "device": first.get("device"), "precision": first.get("precision"),
            "datasets": datasets, "cells": cells, "hyperparameters": _hyper_parameters(spec, plan, index)}


def _adjust(cells: dict) -> None:
    """Holm-adjusted p-values, one family per table: every AUC test that table shows
    (Base+, TS, FT vs Base and FT vs Base+, in every cell), for EvalRM off and on."""
    for metric in ("auc", "auc_rm"):
        slots = [(cell[mode]["diff_vs_base"][metric]) for cell in cells.values() for mode in ARMS]
        slots += [cell["message_passing"][metric] for cell in cells.values()]
        for slot, adjusted in zip(slots, holm([slot["p_value"] for slot in slots])):
            slot["holm_p"] = adjusted


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
    keys = [(m, k) for m in models for k in ks]
    out = []
    for mode in ARMS:
        wins = [(m, k) for m, k in keys
                if (cells[f"{m}|{k}"][mode]["auc"][0] or 0) > (cells[f"{m}|{k}"]["Base"]["auc"][0] or 1)]
        sig = [(m, k) for m, k in wins if (cells[f"{m}|{k}"][mode]["diff_vs_base"]["auc"].get("holm_p") or 1) < 0.05]
        out.append(f"{mode} beats Base in mean test AUC in {len(wins)} of {n} (architecture, k) cells, "
                   f"{len(sig)} of them at Holm-adjusted p < 0.05 (paired over seeds).")
    mp = [(m, k) for m, k in keys if (cells[f"{m}|{k}"]["message_passing"]["auc"]["mean"] or 0) > 0]
    mp_sig = [(m, k) for m, k in mp if (cells[f"{m}|{k}"]["message_passing"]["auc"].get("holm_p") or 1) < 0.05]
    out.append(f"Message passing (FT − Base+, the same checkpoint trained on with and without the graph): FT "
               f"has the higher mean test AUC in {len(mp)} of {n} cells, {len(mp_sig)} of them at Holm-adjusted "
               f"p < 0.05 ({', '.join(f'{m} k={k}' for m, k in mp_sig) or 'none'}).")
    ft_ts = [(m, k) for m, k in keys if (cells[f"{m}|{k}"]["FT"]["auc"][0] or 0) > (cells[f"{m}|{k}"]["TS"]["auc"][0] or 1)]
    out.append(f"FT beats TS in {len(ft_ts)} of {n} cells (paper 2's ordering is FT > TS > Base).")
    for k in ks:
        gains = [g for g in (cells[f"{m}|{k}"]["FT"]["relative_auc"] for m in models) if g is not None]
        control = [g for g in (cells[f"{m}|{k}"]["message_passing"]["relative_auc"] for m in models) if g is not None]
        if gains:
            out.append(f"k = {k}: mean relative AUC gain of FT over Base {np.mean(gains) * 100:+.2f}%, over Base+ "
                       f"{np.mean(control) * 100 if control else float('nan'):+.2f}% "
                       f"(density {fmt((results['datasets'].get(str(k)) or {}).get('density'))}).")
    for name in ("FT", "FT−Base+"):
        low_best = total = 0
        for m, k in keys:
            entries = cells[f"{m}|{k}"]["mci"][name]
            vals = {g: entries[g][0] for g in GROUP_NAMES}
            if all(v is not None for v in vals.values()):
                total += 1
                low_best += max(vals, key=vals.get) == "low"
        out.append(f"Figure 5 ({name}): the low-activity tertile has the largest MCI in {low_best} of {total} cells "
                   "(paper 2's claim: under-served users gain most).")
    capped = merge_counts([c for cell in cells.values() for c in cell["capped"].values()])
    out.append(f"{capped['capped']} of {capped['runs']} runs were stopped by the epoch cap.")
    return out


def _table_caps(cells: dict) -> dict[str, dict]:
    return {mode: merge_counts([cell["capped"][mode] for cell in cells.values()]) for mode in MODES}


def render_connectivity(results: dict, figures: dict[str, str], command: str) -> str:
    cells, models, ks = results["cells"], results["models"], results["k_cores"]
    lines = [f"# Connectivity: Base vs Base+ vs LightGCN TS vs FT ({len(results['seeds'])} seeds, "
             f"{results['head']} head)", "",
             "Produced by", "", "```bash", command, "```", "", provenance_line(results), "",
             f"Seeds {', '.join(map(str, results['seeds']))}; each seed fixes the split and initialisation of all "
             f"four modes. FT starts from that seed's Base run with the LightGCN encoder; Base+ starts from the same "
             f"run with the table encoder under the same budget, optimiser and stopping rule (the control for "
             f"FT's extra training), so FT − Base+ is the message-passing effect. LightGCN: {results['gcn_layers']} "
             f"layers over the training graph only. Device {results.get('device')}, precision "
             f"{results.get('precision')}. Mean ± sample std over seeds; p: paired t-test over seeds against Base; "
             "FT − Base+: mean paired difference [95% t interval], p and Holm-adjusted p (family: every AUC test in "
             "that table). Raw numbers: `results.json`.",
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
                mp = c["message_passing"][auc_key]
                rows.append([k, m, pm(*c["Base"][auc_key])]
                            + [f"{pm(*c[mode][auc_key])} (p {p_value(c[mode]['diff_vs_base'][auc_key]['p_value'])}, "
                               f"Holm {p_value(c[mode]['diff_vs_base'][auc_key].get('holm_p'))})" for mode in ARMS]
                            + [diff_ci(mp), p_value(mp["p_value"]), p_value(mp.get("holm_p")),
                               fmt(c["message_passing"]["mci"][0], 4, True) if auc_key == "auc" else "",
                               pm(*c["Base"][ll_key]), pm(*c["Base+"][ll_key]), pm(*c["TS"][ll_key]),
                               pm(*c["FT"][ll_key])])
        lines += [md_table(["k", "model", "AUC Base", "AUC Base+", "AUC TS", "AUC FT", "FT − Base+ [95% CI]", "p",
                            "Holm p", "MCI FT/Base+", "logloss Base", "logloss Base+", "logloss TS", "logloss FT"],
                           rows), "", capped_line(_table_caps(cells)), ""]
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
              capped_line(_table_caps(cells)), "",
              "## Figure 5: MCI per activity group", "",
              "MCI(p_b, c) = log((1 − p_b) / (1 − p_b − c)) with p_b the Base group AUC and c the gain of TS or FT "
              "(and, for FT−Base+, p_b the Base+ group AUC and c FT's gain over it), per seed, then mean ± std.", ""]
    if "figure5" in figures:
        lines += [f"![Figure 5]({figures['figure5']})", ""]
    rows = []
    for k in ks:
        for m in models:
            c = cells[f"{m}|{k}"]
            for name, (other, _) in MCI_PAIRS.items():
                overall = c["message_passing"]["relative_auc"] if name == "FT−Base+" else c[other]["relative_auc"]
                rows.append([k, m, name] + [f"{fmt(c['group_delta'][name][g][0], 4, True)} / "
                                            f"{fmt(c['mci'][name][g][0], 4, True)}" for g in GROUP_NAMES]
                            + [pct(overall)])
    lines += [md_table(["k", "model", "mode", "low ΔAUC / MCI", "mid ΔAUC / MCI", "high ΔAUC / MCI",
                        "overall Δ AUC"], rows), "", capped_line(_table_caps(cells)), "",
              "## Hyper-parameters", "",
              "Base, Base+, TS and FT of an architecture share model, training and head settings (checked from the recorded "
              "configs); only the encoder differs.", ""]
    rows = [[h["model"], f"`{h['params']}`", h["embedding_dim"], h["lr"],
             "yes" if h["identical_across_modes"] else "**NO**"] for h in results["hyperparameters"]]
    lines += [md_table(["model", "params", "d", "lr", "identical"], rows), "",
              "## Findings (computed from the numbers above)", ""]
    lines += [f"* {f}" for f in _findings(results)]
    return "\n".join(lines) + "\n"
