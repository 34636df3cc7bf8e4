"""PNG figures of the experiment reports (matplotlib, Agg backend: no display needed).

Each function takes the ``results.json`` content, writes one PNG into ``out_dir`` and
returns its file name.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLORS = {"binary": "tab:blue", "rating": "tab:orange", "Base": "tab:gray", "Base+": "tab:purple", "TS": "tab:green",
          "FT": "tab:red", "FT−Base+": "tab:brown"}
LABELS = {"binary": "Original (binary)", "rating": "Smooth (rating)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _arr(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _band(ax, x, mean, std, color, label, **kwargs) -> None:
    mean, std = _arr(mean), np.nan_to_num(_arr(std))
    ax.plot(x, mean, color=color, label=label, **kwargs)
    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _grid(plt, rows: int, cols: int, width: float = 3.4, height: float = 2.8):
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes


def _panels(plt, count: int, max_cols: int):
    """A grid of ``count`` panels, at most ``max_cols`` wide; returns the figure and the panels in order."""
    cols = min(max_cols, count)
    rows = (count + cols - 1) // cols
    fig, axes = _grid(plt, rows, cols)
    flat = [axes[j // cols][j % cols] for j in range(rows * cols)]
    for ax in flat[count:]:
        ax.axis("off")
    return fig, flat[:count]


def _save(plt, fig, out_dir: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def figure2(results: dict, out_dir: Path) -> str:
    plt = _pyplot()
    models = list(results["figure2"])
    fig, axes = _grid(plt, 3, len(models))
    for c, model in enumerate(models):
        heads = results["figure2"][model]
        for r, part in enumerate(("user_grad_norm", "item_grad_norm")):
            ax = axes[r][c]
            for head in ("binary", "rating"):
                curve = heads[head][part]
                _band(ax, np.arange(len(curve["mean"])), curve["mean"], curve["std"], COLORS[head], LABELS[head])
            ax.set_title(f"{model}: {part.split('_')[0]}-id grad L2")
            ax.set_xlabel("epoch")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_yscale("log")
        ax = axes[2][c]
        x = np.arange(2)
        for i, head in enumerate(("binary", "rating")):
            means = [heads[head]["user_weight_norm"][0], heads[head]["item_weight_norm"][0]]
            stds = [heads[head]["user_weight_norm"][1], heads[head]["item_weight_norm"][1]]
            ax.bar(x + (i - 0.5) * 0.38, _arr(means), 0.38, yerr=np.nan_to_num(_arr(stds)), color=COLORS[head],
                   label=LABELS[head])
        ax.set_xticks(x, ["user-id", "item-id"])
        ax.set_title(f"{model}: weight L2 after training")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, out_dir, "figure2_embedding_norms.png")


def figure3(results: dict, out_dir: Path, key: str = "figure3", name: str = "figure3_noise.png",
            xlabel: str = "noise std") -> str:
    """Figure 3 from ``results[key]``: absolute noise (``figure3``) or noise relative to each run's
    embedding RMS (``figure3_scaled``, x = the level)."""
    plt = _pyplot()
    models = list(results[key])
    fig, axes = _grid(plt, 2, len(models))
    for c, model in enumerate(models):
        for r, metric in enumerate(("auc", "logloss")):
            ax = axes[r][c]
            for head in ("binary", "rating"):
                points = results[key][model][head]
                x = [p["std"] for p in points]
                _band(ax, x, [p[metric][0] for p in points], [p[metric][1] for p in points], COLORS[head],
                      LABELS[head], marker="o", markersize=3)
            ax.set_title(f"{model}: test {metric.upper() if metric == 'auc' else metric}")
            ax.set_xlabel(xlabel)
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, out_dir, name)


def figure4(results: dict, out_dir: Path) -> str:
    plt = _pyplot()
    models = list(results["figure4"])
    fig, panels = _panels(plt, len(models), max_cols=4)
    for ax, model in zip(panels, models):
        fig4 = results["figure4"][model]
        x = [p["ratio"] for p in fig4["rating"]]
        ax.errorbar(x, _arr([p["auc_mean"] for p in fig4["rating"]]),
                    yerr=np.nan_to_num(_arr([p["auc_std"] for p in fig4["rating"]])), color=COLORS["rating"],
                    marker="o", capsize=3, label=LABELS["rating"])
        mean, std = fig4["binary"]
        if mean is not None:
            ax.axhline(mean, color=COLORS["binary"], linestyle="--", label=LABELS["binary"])
            if std:
                ax.axhspan(mean - std, mean + std, color=COLORS["binary"], alpha=0.15)
        ax.set_title(model)
        ax.set_xlabel("λr")
        ax.set_ylabel("test AUC")
    panels[0].legend(fontsize=7)
    return _save(plt, fig, out_dir, "figure4_ratio.png")


def connectivity_auc(results: dict, out_dir: Path) -> str:
    """Base / Base+ / TS / FT test AUC against the k-core, one panel per architecture."""
    plt = _pyplot()
    models = results["models"]
    fig, panels = _panels(plt, len(models), max_cols=3)
    ks = results["k_cores"]
    for ax, model in zip(panels, models):
        for mode in [m for m in ("Base", "Base+", "TS", "FT") if m in results["cells"][f"{model}|{ks[0]}"]]:
            cells = [results["cells"][f"{model}|{k}"][mode]["auc"] for k in ks]
            ax.errorbar(ks, _arr([c[0] for c in cells]), yerr=np.nan_to_num(_arr([c[1] for c in cells])),
                        color=COLORS[mode], marker="o", capsize=3, label=mode)
        ax.set_title(model)
        ax.set_xlabel("k-core")
        ax.set_ylabel("test AUC")
        ax.set_xticks(ks)
    panels[0].legend(fontsize=7)
    return _save(plt, fig, out_dir, "auc_by_k.png")


def figure5(results: dict, out_dir: Path) -> str:
    """MCI of TS and FT over Base (and of FT over Base+) per activity group, one panel per (k, architecture)."""
    plt = _pyplot()
    models, ks = results["models"], results["k_cores"]
    fig, axes = _grid(plt, len(ks), len(models), width=2.9, height=2.5)
    groups = ("low", "mid", "high")
    x = np.arange(len(groups))
    for r, k in enumerate(ks):
        for c, model in enumerate(models):
            ax = axes[r][c]
            modes = [m for m in ("TS", "FT", "FT−Base+") if m in results["cells"][f"{model}|{k}"]["mci"]]
            width = 0.76 / len(modes)
            for i, mode in enumerate(modes):
                entries = [results["cells"][f"{model}|{k}"]["mci"][mode][g] for g in groups]
                ax.bar(x + (i - (len(modes) - 1) / 2) * width, _arr([e[0] for e in entries]), width,
                       yerr=np.nan_to_num(_arr([e[1] for e in entries])), color=COLORS[mode], label=mode)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(x, groups)
            ax.set_title(f"{model}, k={k}", fontsize=9)
    axes[0][0].set_ylabel("MCI vs Base (FT−Base+: vs Base+)")
    axes[0][0].legend(fontsize=7)
    return _save(plt, fig, out_dir, "figure5_mci.png")
