"""``ratingctr experiment supervision``: binary ("Original") vs rating ("Smooth") heads (paper 1).

Per architecture and seed, one binary-head and one rating-head run with identical
hyper-parameters, data split, initialisation seed and batch order.  From them:

* Table 1: test AUC and logloss, mean ± std over seeds, the paired mean difference with
  its 95% t interval, the paired t-test and the Holm-adjusted p (family: every test in
  the table); with ``select`` two more blocks: the rating head at the λr chosen per model
  on validation AUC (``selection``), and the binary head at the learning rate chosen the
  same way from a grid of its own (equal tuning), with the configurations each head tried;
* Table 2: NDCG@10/20 and Recall@10/20 (uni100), same layout;
* Table 3: seconds per training epoch, total training and evaluation, both heads;
* Figure 2: L2 norms of the user-id / item-id embedding gradients during training and
  of their weights after training (``trace_models``);
* Figure 3: test AUC and logloss with Gaussian noise on the embeddings (``noise_stds``);
* Figure 4: rating-head AUC across λr (``ratios``) against the binary baseline.

Every table counts its runs that the epoch budget stopped rather than early stopping.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ratingctr.tables import fmt, md_table, p_value, pct, pm
from ratingctr.training.config import RunConfig
from ratingctr.training.experiments.provenance import provenance_line
from ratingctr.training.experiments.runner import Plan, noise_name, relative_noise_name
from ratingctr.training.experiments.selection import DEFAULT_LR_FACTORS, ratio_grid, select_on_validation
from ratingctr.training.experiments.stats import (
    capped_line,
    count_capped,
    diff_ci,
    holm,
    mean_std,
    paired_difference,
    paired_p_value,
    relative,
)

RANKING_METRICS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20")
HEADS = ("binary", "rating")


@dataclass(frozen=True)
class SupervisionSpec:
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    ratio: float = 0.5
    ratios: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    ratio_models: tuple[str, ...] = ()
    trace_models: tuple[str, ...] = ("DCNV2", "AutoInt", "FiGNN")
    noise_stds: tuple[float, ...] = (0.01, 0.03, 0.05, 0.07, 0.09)
    #: Figure 3 scaled: noise std = level × the run's embedding RMS (the heads' embedding norms
    #: differ, so an absolute std is not the same perturbation for both)
    noise_relative: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)
    noise_models: tuple[str, ...] = ()
    select: bool = False  # the selected-λr and selected-lr blocks of Table 1
    ratio_preset: str = "sweep"  # "authors": selection.AUTHORS_RATIOS where the authors fixed λr
    binary_lr_factors: tuple[float, ...] = DEFAULT_LR_FACTORS  # × each model's lr
    #: seeds of the λr sweep (Figure 4) and of the selection grids: the first ``sweep_seeds`` of
    #: ``seeds`` (None: all).  Table 1's fixed block and Figures 2-3 use every seed; the grids
    #: multiply the runs by their size, so a referee's 10 seeds for Table 1 and 5 for the sweeps
    #: cost half of 10 everywhere.  The selected blocks pair with the binary runs of those seeds.
    sweep_seeds: int | None = None

    @property
    def sweep(self) -> tuple[int, ...]:
        return self.seeds[:self.sweep_seeds] if self.sweep_seeds else self.seeds

    @property
    def select_models(self) -> tuple[str, ...]:
        """The architectures the selection blocks cover: Figure 4's (their λr grid runs are shared)."""
        return tuple(m for m in self.models if m in self.ratio_models) if self.select else ()


# make_config(model, seed, head=..., ratio=...) -> RunConfig
ConfigFactory = Callable[..., RunConfig]


def plan_supervision(spec: SupervisionSpec, make_config: ConfigFactory, plan: Plan) -> dict:
    """Add every run the tables and figures need; returns the index of run keys."""
    index: dict = {"main": {}, "ratio": {}}
    for model in spec.models:
        for seed in spec.seeds:
            for head in HEADS:
                config = make_config(model, seed, head=head, ratio=spec.ratio)
                label = f"{model}-{head}-s{seed}"
                index["main"][(model, head, seed)] = plan.add(
                    config, label, trace=model in spec.trace_models,
                    noise_stds=spec.noise_stds if model in spec.noise_models else (),
                    noise_relative=spec.noise_relative if model in spec.noise_models else ())
    for model in spec.ratio_models:
        for ratio in spec.ratios:
            for seed in spec.sweep:
                config = make_config(model, seed, head="rating", ratio=ratio)
                index["ratio"][(model, ratio, seed)] = plan.add(config, f"{model}-rating-r{ratio:g}-s{seed}")
    index["select_rating"], index["select_binary"] = {}, {}
    if spec.select:  # the same run for a grid point that Table 1 or Figure 4 already has (one cache key)
        for model in spec.select_models:
            for ratio in ratio_grid(model, spec.ratios, spec.ratio_preset):
                for seed in spec.sweep:
                    config = make_config(model, seed, head="rating", ratio=ratio)
                    index["select_rating"][(model, ratio, seed)] = plan.add(config, f"{model}-rating-r{ratio:g}-s{seed}")
            base_lr = make_config(model, spec.seeds[0], head="binary", ratio=spec.ratio).train.lr
            for factor in spec.binary_lr_factors:
                for seed in spec.sweep:
                    config = make_config(model, seed, head="binary", ratio=spec.ratio, lr=base_lr * factor)
                    index["select_binary"][(model, factor, seed)] = plan.add(
                        config, f"{model}-binary-lr{factor:g}x-s{seed}")
    return index


def _median(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else None


def _per_epoch(steps: list[float], epochs: int) -> list[float]:
    if not steps or epochs == 0:
        return []
    per = len(steps) // epochs
    return np.asarray(steps[:per * epochs], dtype=np.float64).reshape(epochs, per).mean(axis=1).tolist()


def _curve(curves: list[list[float]]) -> dict:
    """Mean and std per epoch over the seeds that reached it (early stopping ends runs at different epochs)."""
    length = max((len(c) for c in curves), default=0)
    mean, std, n = [], [], []
    for e in range(length):
        m, s = mean_std([c[e] for c in curves if len(c) > e])
        mean.append(m)
        std.append(s)
        n.append(sum(len(c) > e for c in curves))
    return {"mean": mean, "std": std, "seeds": n}


def _hyper_parameters(spec: SupervisionSpec, plan: Plan, index: dict) -> list[dict]:
    rows = []
    for model in spec.models:
        configs = {head: [plan.metrics(index["main"][(model, head, s)]).get("config") for s in spec.seeds]
                   for head in HEADS}
        first = configs["binary"][0] or {}

        def comparable(cfg: dict | None) -> tuple:
            if cfg is None:
                return ()
            # first_order: the binary head's runs are built "wide", the same model as "broadcast" with one logit
            model_cfg = {k: v for k, v in cfg["model"].items() if k != "first_order"}
            return (model_cfg, {k: v for k, v in cfg["train"].items() if k not in ("seed", "progress")},
                    {k: v for k, v in cfg["data"].items() if k not in ("seed", "data_dir")}, cfg["encoder"])

        identical = len({repr(comparable(c)) for head in HEADS for c in configs[head]}) == 1
        rows.append({"model": model, "params": first.get("model", {}).get("params"),
                     "embedding_dim": first.get("model", {}).get("embedding_dim"),
                     "lr": first.get("train", {}).get("lr"), "batch_size": first.get("train", {}).get("batch_size"),
                     "epochs": first.get("train", {}).get("epochs"), "patience": first.get("train", {}).get("patience"),
                     "ratio": spec.ratio, "identical_for_both_heads": identical,
                     "first_order": ((configs["rating"][0] or {}).get("model") or {}).get("first_order", "wide")})
    return rows


def collect_supervision(spec: SupervisionSpec, plan: Plan, index: dict) -> dict:
    """Read every run's artifacts into the numbers the report shows."""
    main = {k: plan.metrics(key) for k, key in index["main"].items()}

    def values(model: str, head: str, part: str, metric: str) -> list[float | None]:
        return [(main[(model, head, s)].get(part) or {}).get(metric) for s in spec.seeds]

    table1, table2, table3 = [], [], []
    for model in spec.models:
        row: dict = {"model": model, "seeds": len(spec.seeds)}
        for metric in ("auc", "logloss"):
            b, r = values(model, "binary", "test", metric), values(model, "rating", "test", metric)
            bm, bs = mean_std(b)
            rm, rs = mean_std(r)
            row.update({f"binary_{metric}_mean": bm, f"binary_{metric}_std": bs, f"rating_{metric}_mean": rm,
                        f"rating_{metric}_std": rs, f"{metric}_relative": relative(bm, rm),
                        f"binary_{metric}_per_seed": b, f"rating_{metric}_per_seed": r})
        row["p_value"] = paired_p_value(row["binary_auc_per_seed"], row["rating_auc_per_seed"])
        row["logloss_p_value"] = paired_p_value(row["binary_logloss_per_seed"], row["rating_logloss_per_seed"])
        row["auc_diff"] = paired_difference(row["binary_auc_per_seed"], row["rating_auc_per_seed"])
        row["logloss_diff"] = paired_difference(row["binary_logloss_per_seed"], row["rating_logloss_per_seed"])
        if model in spec.select_models:
            row.update(_selected_blocks(spec, plan, index, model, row))
        table1.append(row)
        row2: dict = {"model": model, "seeds": len(spec.seeds)}
        for metric in RANKING_METRICS:
            b, r = values(model, "binary", "test", metric), values(model, "rating", "test", metric)
            bm, bs = mean_std(b)
            rm, rs = mean_std(r)
            row2[metric] = {"binary_mean": bm, "binary_std": bs, "rating_mean": rm, "rating_std": rs,
                            "relative": relative(bm, rm), "p_value": paired_p_value(b, r),
                            "diff": paired_difference(b, r)}
        table2.append(row2)
        row3: dict = {"model": model}
        for head in HEADS:
            runs = [main[(model, head, s)] for s in spec.seeds]
            row3[head] = {  # medians: a process's first run also pays its warm-up
                "epoch_seconds": _median([float(np.median(m["epoch_seconds"])) if m.get("epoch_seconds") else None
                                          for m in runs]),
                "train_seconds": _median([m.get("train_seconds") for m in runs]),
                "eval_seconds": _median([m.get("eval_seconds") for m in runs]),
                "epochs": mean_std([len(m.get("epoch_seconds") or []) for m in runs])[0],
                "device": runs[0].get("device"), "precision": runs[0].get("precision"),
            }
        row3["epoch_ratio"] = (row3["rating"]["epoch_seconds"] / row3["binary"]["epoch_seconds"]
                               if row3["binary"]["epoch_seconds"] and row3["rating"]["epoch_seconds"] else None)
        table3.append(row3)

    figure2 = {}
    for model in spec.trace_models:
        figure2[model] = {}
        for head in HEADS:
            traces = [plan.artifact(index["main"][(model, head, s)], "trace.json") for s in spec.seeds]
            figure2[model][head] = {
                "user_grad_norm": _curve([_per_epoch(t.get("user_grad_norm", []), t.get("epochs", 0)) for t in traces]),
                "item_grad_norm": _curve([_per_epoch(t.get("item_grad_norm", []), t.get("epochs", 0)) for t in traces]),
                "user_weight_norm": mean_std([t.get("user_weight_norm") for t in traces]),
                "item_weight_norm": mean_std([t.get("item_weight_norm") for t in traces]),
            }

    figure3, figure3_scaled, embedding_rms = {}, {}, {}
    for model in spec.noise_models:
        figure3[model], figure3_scaled[model], embedding_rms[model] = {}, {}, {}
        for head in HEADS:
            keys = [index["main"][(model, head, s)] for s in spec.seeds]
            noisy = [plan.artifact(k, "noise.json") for k in keys]
            clean = {"std": 0.0, "auc": mean_std(values(model, head, "test", "auc")),
                     "logloss": mean_std(values(model, head, "test", "logloss"))}
            for target, names in ((figure3, [(std, noise_name(std)) for std in sorted(spec.noise_stds)]),
                                  (figure3_scaled, [(lv, relative_noise_name(lv)) for lv in sorted(spec.noise_relative)])):
                points = [dict(clean)]
                for level, name in names:  # "std" holds the level on the scaled figure
                    points.append({"std": level, "auc": mean_std([n.get(name, {}).get("auc") for n in noisy]),
                                   "logloss": mean_std([n.get(name, {}).get("logloss") for n in noisy])})
                target[model][head] = points
            embedding_rms[model][head] = mean_std([n.get("embedding_rms") for n in noisy])

    figure4 = {}
    for model in spec.ratio_models:
        binary = values(model, "binary", "test", "auc")[:len(spec.sweep)]  # paired on the sweep's seeds
        points = []
        for ratio in spec.ratios:
            aucs = [(plan.metrics(index["ratio"][(model, ratio, s)]).get("test") or {}).get("auc") for s in spec.sweep]
            m, s = mean_std(aucs)
            points.append({"ratio": ratio, "auc_mean": m, "auc_std": s, "p_value": paired_p_value(binary, aucs)})
        figure4[model] = {"binary": mean_std(binary), "rating": points, "seeds": len(spec.sweep)}
    _adjust(table1, table2, figure4)
    capped = {"main": {head: count_capped([main[(m, head, s)] for m in spec.models for s in spec.seeds])
                       for head in HEADS},
              "figure4": {"rating": count_capped([plan.metrics(k) for k in index["ratio"].values()])}}
    if spec.select:
        capped["selection"] = {
            "rating λr grid": count_capped([plan.metrics(k) for k in index["select_rating"].values()]),
            "binary lr grid": count_capped([plan.metrics(k) for k in index["select_binary"].values()])}

    first = main[(spec.models[0], "binary", spec.seeds[0])]
    return {"experiment": "supervision", "models": list(spec.models), "seeds": list(spec.seeds),
            "ratio": spec.ratio, "dataset": first.get("dataset"), "device": first.get("device"),
            "precision": first.get("precision"), "table1": table1, "table2": table2, "table3": table3,
            "figure2": figure2, "figure3": figure3, "figure3_scaled": figure3_scaled if spec.noise_relative else {},
            "embedding_rms": embedding_rms, "figure4": figure4, "capped": capped,
            "selection": {"enabled": spec.select, "ratio_preset": spec.ratio_preset, "ratios": list(spec.ratios),
                          "binary_lr_factors": list(spec.binary_lr_factors), "seeds": list(spec.sweep),
                          "models": list(spec.select_models)},
            "hyperparameters": _hyper_parameters(spec, plan, index)}


def _test_values(plan: Plan, keys: list[str], metric: str) -> list[float | None]:
    return [(plan.metrics(k).get("test") or {}).get(metric) for k in keys]


def _selected_blocks(spec: SupervisionSpec, plan: Plan, index: dict, model: str, row: dict) -> dict:
    """Table 1's selected-λr and selected-lr blocks of one model: choices on validation, numbers on test."""
    grid = ratio_grid(model, spec.ratios, spec.ratio_preset)
    seeds, n = spec.sweep, len(spec.sweep)
    rating = select_on_validation(plan, {r: [index["select_rating"][(model, r, s)] for s in seeds] for r in grid})
    binary = select_on_validation(plan, {f: [index["select_binary"][(model, f, s)] for s in seeds]
                                         for f in spec.binary_lr_factors})
    r_keys = [index["select_rating"][(model, rating.chosen, s)] for s in seeds] if rating.chosen is not None else []
    b_keys = [index["select_binary"][(model, binary.chosen, s)] for s in seeds] if binary.chosen is not None else []
    r_test = {m: _test_values(plan, r_keys, m) for m in ("auc", "logloss")}
    b_test = {m: _test_values(plan, b_keys, m) for m in ("auc", "logloss")}
    chosen_lr = ((plan.metrics(b_keys[0]).get("config") or {}).get("train") or {}).get("lr") if b_keys else None
    return {
        "selected_ratio": {
            "grid": list(grid), "valid_auc_means": [[c, v] for c, v in rating.valid_means.items()],
            "ratio": rating.chosen, "auc": mean_std(r_test["auc"]), "logloss": mean_std(r_test["logloss"]),
            "auc_per_seed": r_test["auc"], "logloss_per_seed": r_test["logloss"],
            # against the binary head as Table 1's fixed block trains it, on the sweep's seeds
            "auc_diff": paired_difference(row["binary_auc_per_seed"][:n], r_test["auc"]),
            "logloss_diff": paired_difference(row["binary_logloss_per_seed"][:n], r_test["logloss"]),
            "seeds": n,
        },
        "selected_lr": {
            "factors": list(spec.binary_lr_factors), "valid_auc_means": [[c, v] for c, v in binary.valid_means.items()],
            "factor": binary.chosen, "lr": chosen_lr, "auc": mean_std(b_test["auc"]),
            "logloss": mean_std(b_test["logloss"]), "auc_per_seed": b_test["auc"], "logloss_per_seed": b_test["logloss"],
            # equal tuning: rating at its selected λr against binary at its selected lr
            "auc_diff": paired_difference(b_test["auc"], r_test["auc"]),
            "logloss_diff": paired_difference(b_test["logloss"], r_test["logloss"]),
        },
        "tuning": {"binary": binary.candidates, "rating": rating.candidates},
    }


def _adjust(table1: list[dict], table2: list[dict], figure4: dict) -> None:
    """Holm-adjusted p-values, one family per table: every paired test that table reports."""
    slots = []
    for row in table1:
        slots += [row["auc_diff"], row["logloss_diff"]]
        for block in ("selected_ratio", "selected_lr"):
            if block in row:
                slots += [row[block]["auc_diff"], row[block]["logloss_diff"]]
    families = [slots, [row[m]["diff"] for row in table2 for m in RANKING_METRICS],
                [p for fig in figure4.values() for p in fig["rating"]]]
    for family in families:
        for slot, adjusted in zip(family, holm([slot["p_value"] for slot in family])):
            slot["holm_p"] = adjusted


def _auc_finding(title: str, diffs: list[tuple[str, dict]]) -> str:
    """How many models the rating head wins in mean, and how many of those survive Holm, with the numbers."""
    better = [(m, d) for m, d in diffs if (d["mean"] or 0) > 0]
    held = [(m, d) for m, d in better if d.get("holm_p") is not None and d["holm_p"] < 0.05]
    worse = [(m, d) for m, d in diffs if (d["mean"] or 0) < 0 and d.get("holm_p") is not None and d["holm_p"] < 0.05]

    def cite(items: list[tuple[str, dict]]) -> str:
        return ", ".join(f"{m} {d['mean']:+.4f} (Holm p {p_value(d['holm_p'])})" for m, d in items) or "none"

    gains = ", ".join(f"{m} {d['mean']:+.4f}" for m, d in better) or "none"
    return (f"{title}: the rating head has the higher mean test AUC for {len(better)} of {len(diffs)} architectures "
            f"({gains}); "
            f"{len(held)} of them hold at Holm-adjusted p < 0.05 ({cite(held)}). Significantly worse after Holm: "
            f"{cite(worse)}.")


def _findings(results: dict) -> list[str]:
    """Computed statements against the paper's direction (rating head ≥ binary head)."""
    out = []
    t1 = results["table1"]
    for title, diff_of in (("fixed λr", lambda r: r["auc_diff"]),
                           ("rating at λr selected on validation", lambda r: r.get("selected_ratio", {}).get("auc_diff")),
                           ("equal tuning (binary lr also selected on validation)",
                            lambda r: r.get("selected_lr", {}).get("auc_diff"))):
        diffs = [(r["model"], diff_of(r)) for r in t1 if diff_of(r) is not None]
        if not diffs:
            continue
        out.append(_auc_finding(f"Table 1, AUC, {title}", diffs))
    lower_ll = [r["model"] for r in t1 if (r["logloss_relative"] or 0) < 0]
    out.append(f"Table 1, logloss: lower with the rating head for {len(lower_ll)} of {len(t1)} "
               f"({', '.join(lower_ll) or 'none'}).")
    t2 = results["table2"]
    ndcg = [r["model"] for r in t2 if (r["ndcg@10"]["relative"] or 0) > 0]
    out.append(f"Table 2: NDCG@10 is higher with the rating head for {len(ndcg)} of {len(t2)} "
               f"({', '.join(ndcg) or 'none'}).")
    ratios = [r["epoch_ratio"] for r in results["table3"] if r["epoch_ratio"]]
    if ratios:
        out.append(f"Table 3: a rating-head epoch costs {min(ratios):.2f}× to {max(ratios):.2f}× a binary-head epoch "
                   f"(median {float(np.median(ratios)):.2f}×).")
    for model, heads in results["figure2"].items():
        b, r = heads["binary"]["user_grad_norm"]["mean"], heads["rating"]["user_grad_norm"]["mean"]
        if b and r and b[0] and r[0]:
            bw, rw = heads["binary"]["user_weight_norm"][0], heads["rating"]["user_weight_norm"][0]
            out.append(f"Figure 2, {model}: first-epoch user-embedding gradient norm rating/binary = "
                       f"{r[0] / b[0]:.2f}×, last common epoch {r[min(len(b), len(r)) - 1] / b[min(len(b), len(r)) - 1]:.2f}×; "
                       f"user weight norm after training {fmt(bw, 2)} (binary) vs {fmt(rw, 2)} (rating).")
    drops = []
    for model, heads in results["figure3"].items():
        b, r = heads["binary"], heads["rating"]
        if b[-1]["auc"][0] is not None and r[-1]["auc"][0] is not None:
            drops.append((model, b[0]["auc"][0] - b[-1]["auc"][0], r[0]["auc"][0] - r[-1]["auc"][0]))
    if drops:
        robust = [m for m, db, dr in drops if dr < db]
        out.append(f"Figure 3: at the largest noise std the rating head loses less AUC than the binary head for "
                   f"{len(robust)} of {len(drops)} architectures ({', '.join(robust) or 'none'}).")
    above = []
    for model, fig in results["figure4"].items():
        base = fig["binary"][0]
        wins = sum(1 for p in fig["rating"] if p["auc_mean"] is not None and base is not None and p["auc_mean"] > base)
        above.append(f"{model} {wins}/{len(fig['rating'])}")
    if above:
        out.append("Figure 4: λr values whose mean rating-head AUC beats the binary mean: " + ", ".join(above) + ".")
    return out


def _grid_text(pairs: list, digits: int = 4) -> str:
    return ", ".join(f"{c:g}: {fmt(v, digits)}" for c, v in pairs)


def _selected_tables(results: dict) -> list[str]:
    """Table 1's blocks at settings chosen on validation (empty without ``--select-ratio validation``)."""
    rows_in = [r for r in results["table1"] if "selected_ratio" in r]
    if not rows_in:
        return []
    sel = results["selection"]
    seeds = sel.get("seeds") or results["seeds"]
    lines = [f"### Rating head at λr selected on validation (preset `{sel['ratio_preset']}`)", "",
             f"Over the first {len(seeds)} seeds ({', '.join(map(str, seeds))}), for the architectures of Figure 4. "
             "λr per model: the argmax of the mean validation AUC over those seeds among the model's candidates "
             "(never test); Δ against the binary head of the fixed block on the same seeds.", ""]
    rows = [[r["model"], _grid_text(r["selected_ratio"]["valid_auc_means"]), f"{r['selected_ratio']['ratio']}",
             pm(*r["selected_ratio"]["auc"]), diff_ci(r["selected_ratio"]["auc_diff"]),
             p_value(r["selected_ratio"]["auc_diff"]["p_value"]), p_value(r["selected_ratio"]["auc_diff"].get("holm_p")),
             pm(*r["selected_ratio"]["logloss"]), diff_ci(r["selected_ratio"]["logloss_diff"]),
             p_value(r["selected_ratio"]["logloss_diff"].get("holm_p"))] for r in rows_in]
    lines += [md_table(["model", "valid AUC per λr", "λr", "AUC Smooth", "Δ AUC vs binary [95% CI]", "p", "Holm",
                        "logloss Smooth", "Δ logloss [95% CI]", "Holm"], rows), "",
              "### Binary head at lr selected on validation: equal tuning", "",
              "lr per model: each model's lr × the factors "
              f"{', '.join(f'{f:g}' for f in sel['binary_lr_factors'])}, chosen the same way; Δ is the rating head at "
              "its selected λr minus the binary head at its selected lr. Configurations tried per head and model:", ""]
    rows = [[r["model"], _grid_text(r["selected_lr"]["valid_auc_means"]),
             f"{r['selected_lr']['factor']}× = {fmt(r['selected_lr']['lr'], 5)}",
             f"{r['tuning']['binary']} / {r['tuning']['rating']}", pm(*r["selected_lr"]["auc"]),
             pm(*r["selected_ratio"]["auc"]), diff_ci(r["selected_lr"]["auc_diff"]),
             p_value(r["selected_lr"]["auc_diff"]["p_value"]), p_value(r["selected_lr"]["auc_diff"].get("holm_p")),
             pm(*r["selected_lr"]["logloss"]), diff_ci(r["selected_lr"]["logloss_diff"]),
             p_value(r["selected_lr"]["logloss_diff"].get("holm_p"))] for r in rows_in]
    lines += [md_table(["model", "valid AUC per lr factor", "lr", "tried binary / rating", "AUC Original",
                        "AUC Smooth", "Δ AUC [95% CI]", "p", "Holm", "logloss Original", "Δ logloss [95% CI]", "Holm"],
                       rows), ""]
    return lines


def render_supervision(results: dict, figures: dict[str, str], command: str) -> str:
    """``report.md`` text; ``figures`` maps figure id → PNG file name."""
    ds = results.get("dataset") or {}
    seeds = results["seeds"]
    lines = [f"# Scaled supervision: binary vs rating head on {ds.get('dataset', '?')} "
             f"({len(seeds)} seeds)", "",
             "Produced by", "", "```bash", command, "```", "", provenance_line(results), "",
             f"Seeds {', '.join(map(str, seeds))}: each seed fixes the split, the initialisation and the batch order "
             f"of both heads, so the heads are compared seed by seed (paired t-test, two-sided). "
             f"λr = {results['ratio']}, device {results.get('device')}, precision {results.get('precision')}. "
             f"Dataset after filtering (first seed): {ds.get('users')} users, {ds.get('items')} items, "
             f"{ds.get('interactions')} interactions, density {fmt(ds.get('density'))}. "
             "Mean ± sample std over seeds; Δ: the paired mean difference (rating − binary) over seeds with its 95% "
             "t interval; rel.: relative difference of the means; p: paired t-test; Holm: Holm-adjusted p over every "
             "test in the same table. Raw numbers: `results.json`.",
             "", "## Table 1: test AUC and logloss", "", f"### Fixed λr = {results['ratio']}, each model's lr "
             "(configurations tried: binary 1, rating 1)", ""]
    rows = [[r["model"], pm(r["binary_auc_mean"], r["binary_auc_std"]), pm(r["rating_auc_mean"], r["rating_auc_std"]),
             diff_ci(r["auc_diff"]), pct(r["auc_relative"]), p_value(r["auc_diff"]["p_value"]),
             p_value(r["auc_diff"].get("holm_p")),
             pm(r["binary_logloss_mean"], r["binary_logloss_std"]), pm(r["rating_logloss_mean"], r["rating_logloss_std"]),
             diff_ci(r["logloss_diff"]), p_value(r["logloss_diff"]["p_value"]), p_value(r["logloss_diff"].get("holm_p"))]
            for r in results["table1"]]
    lines += [md_table(["model", "AUC Original (binary)", "AUC Smooth (rating)", "Δ AUC [95% CI]", "rel.", "p", "Holm",
                        "logloss Original", "logloss Smooth", "Δ logloss [95% CI]", "p", "Holm"], rows), ""]
    lines += _selected_tables(results)
    caps = dict(results.get("capped", {}).get("main", {}))
    caps.update(results.get("capped", {}).get("selection", {}))
    lines += [capped_line(caps) + (" A run shared by two blocks (the fixed λr inside the grid, lr × 1) counts in "
                                   "both." if "selection" in results.get("capped", {}) else ""), "",
              "## Table 2: ranking (uni100: every test row a positive against 100 untouched items)", ""]
    rows = []
    for r in results["table2"]:
        cells = [r["model"]]
        for metric in RANKING_METRICS:
            m = r[metric]
            cells += [f"{fmt(m['binary_mean'])} / {fmt(m['rating_mean'])}",
                      f"{pct(m['relative'], 1)} (p {p_value(m['p_value'])}, Holm {p_value(m['diff'].get('holm_p'))})"]
        rows.append(cells)
    headers = ["model"]
    for metric in RANKING_METRICS:
        headers += [f"{metric} Original / Smooth", "rel. Δ (p, Holm)"]
    main_caps = results.get("capped", {}).get("main", {})
    lines += [md_table(headers, rows), "", capped_line(main_caps), "", "## Table 3: cost", "",
              "Medians over seeds (of each run's median epoch; a worker process's first run pays its warm-up). "
              "Epochs: mean number trained before early stopping. Runs executed concurrently (`--jobs`) share the machine, so absolute seconds are "
              "inflated by the concurrency; the binary and rating runs were interleaved under the same load, so "
              "their ratio is the comparable figure. `ratingctr bench train` times epochs on an idle machine.", ""]
    rows = [[r["model"], fmt(r["binary"]["epoch_seconds"], 3), fmt(r["rating"]["epoch_seconds"], 3),
             fmt(r["epoch_ratio"], 2) + "×" if r["epoch_ratio"] else "n/a",
             fmt(r["binary"]["epochs"], 1), fmt(r["rating"]["epochs"], 1),
             fmt(r["binary"]["train_seconds"], 1), fmt(r["rating"]["train_seconds"], 1),
             fmt(r["binary"]["eval_seconds"], 2), fmt(r["rating"]["eval_seconds"], 2)] for r in results["table3"]]
    lines += [md_table(["model", "s/epoch binary", "s/epoch rating", "rating/binary", "epochs binary",
                        "epochs rating", "train s binary", "train s rating", "eval s binary", "eval s rating"], rows), "",
              capped_line(main_caps), ""]
    if "figure2" in figures:
        lines += ["## Figure 2: embedding gradient and weight norms", "",
                  "L2 norm of the gradient of the user-id and item-id embedding rows at each step, averaged per "
                  "epoch (mean ± std over the seeds that reached the epoch; early stopping ends runs at different "
                  "epochs), and the L2 norm of those rows after training (best-validation weights).", "",
                  f"![Figure 2]({figures['figure2']})", ""]
        rows = [[m, h, pm(*v[h]["user_weight_norm"], 3), pm(*v[h]["item_weight_norm"], 3)]
                for m, v in results["figure2"].items() for h in HEADS]
        lines += [md_table(["model", "head", "user weight norm", "item weight norm"], rows), ""]
    if "figure3" in figures:
        stds = [p["std"] for p in next(iter(results["figure3"].values()))["binary"]]
        lines += ["## Figure 3: robustness to Gaussian noise on the embeddings", "",
                  "Test AUC / logloss when N(0, std²) noise is added to every field embedding at evaluation "
                  f"(std grid {', '.join(f'{s:g}' for s in stds[1:])}; std 0 is Table 1).", "",
                  f"![Figure 3]({figures['figure3']})", ""]
        rows = []
        for model, heads in results["figure3"].items():
            for head in HEADS:
                rows.append([model, head] + [fmt(p["auc"][0]) for p in heads[head]])
        lines += [md_table(["model", "head"] + [f"AUC std={s:g}" for s in stds], rows), ""]
    if "figure3_scaled" in figures:
        levels = [p["std"] for p in next(iter(results["figure3_scaled"].values()))["binary"]]
        lines += ["### Figure 3, noise scaled to each run's embeddings", "",
                  "The same, with the noise std set to level × the run's own embedding RMS (root mean square of its "
                  "embedding table), so each head is perturbed at the same signal-to-noise ratio whatever its "
                  "embedding norms. Embedding RMS per head (mean ± std over seeds): "
                  + "; ".join(f"{m} binary {pm(*v['binary'], 4)}, rating {pm(*v['rating'], 4)}"
                              for m, v in results.get("embedding_rms", {}).items()) + ".", "",
                  f"![Figure 3, scaled]({figures['figure3_scaled']})", ""]
        rows = [[model, head] + [fmt(p["auc"][0]) for p in heads[head]]
                for model, heads in results["figure3_scaled"].items() for head in HEADS]
        lines += [md_table(["model", "head"] + [f"AUC level={lv:g}" for lv in levels], rows), ""]
    if "figure4" in figures:
        lines += ["## Figure 4: AUC vs λr", "",
                  f"Rating-head test AUC for each λr (mean ± std over the first "
                  f"{next(iter(results['figure4'].values())).get('seeds', len(results['seeds']))} seeds) against the "
                  "binary head on the same seeds (dashed, band = ± std); p is the paired test against the binary head.",
                  "", f"![Figure 4]({figures['figure4']})", ""]
        ratios = [p["ratio"] for p in next(iter(results["figure4"].values()))["rating"]]
        rows = [[m, pm(*fig["binary"])] + [f"{pm(p['auc_mean'], p['auc_std'])} (p {p_value(p['p_value'])}, "
                                            f"Holm {p_value(p.get('holm_p'))})"
                                            for p in fig["rating"]] for m, fig in results["figure4"].items()]
        lines += [md_table(["model", "binary"] + [f"λr={r:g}" for r in ratios], rows), "",
                  capped_line(results.get("capped", {}).get("figure4", {})), ""]
    lines += ["## Hyper-parameters", "",
              "Each architecture ran with the same configuration for both heads (checked from every run's recorded "
              "config: model, training, data and encoder settings equal up to the seed). Values: "
              "`training/configs/models/<Model>.yaml` plus the command's overrides.", ""]
    rows = [[h["model"], f"`{h['params']}`", h["embedding_dim"], h["lr"], h["batch_size"], h["epochs"], h["patience"],
             h.get("first_order", "wide"), "yes" if h["identical_for_both_heads"] else "**NO**"]
            for h in results["hyperparameters"]]
    lines += [md_table(["model", "params", "d", "lr", "batch", "max epochs", "patience", "first order (rating head)",
                        "identical"], rows), "",
              "## Findings (computed from the numbers above)", ""]
    lines += [f"* {f}" for f in _findings(results)]
    return "\n".join(lines) + "\n"
