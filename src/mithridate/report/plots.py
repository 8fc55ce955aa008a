"""Figures for reports, rendered headless (Agg) to inline PNG so a report is one self-contained file."""

from __future__ import annotations

import base64
import io

import numpy as np
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

FLAG_COLOR, CLEAN_COLOR = "#c0392b", "#7f8c8d"


def to_img(fig) -> str:
    """An ``<img>`` tag holding the figure as base64 PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def subplots(nrows: int = 1, ncols: int = 1, figsize=(6, 3), squeeze: bool = True):
    """Like ``pyplot.subplots`` without pyplot's global state (safe in servers and threads)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def score_histogram(scores: np.ndarray, flagged: np.ndarray, title: str = "Suspicion scores") -> str:
    fig, ax = subplots(figsize=(6, 3))
    bins = np.linspace(0, 1, 41)
    ax.hist(scores[~flagged], bins=bins, color=CLEAN_COLOR, label=f"not flagged ({(~flagged).sum()})")
    ax.hist(scores[flagged], bins=bins, color=FLAG_COLOR, label=f"flagged ({flagged.sum()})")
    ax.set(xlabel="score (higher is more suspicious)", ylabel="rows", title=title, yscale="log")
    ax.legend()
    return to_img(fig)


def detector_histograms(columns: dict[str, np.ndarray], flags: dict[str, np.ndarray]) -> str:
    names = list(columns)
    fig, axes = subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        s, f = columns[name], flags[name]
        bins = np.histogram_bin_edges(s[np.isfinite(s)], bins=40)
        ax.hist(s[~f], bins=bins, color=CLEAN_COLOR)
        ax.hist(s[f], bins=bins, color=FLAG_COLOR)
        ax.set(title=name, yscale="log")
        ax.tick_params(labelsize=7)
    return to_img(fig)


def class_bars(names: list[str], rows: np.ndarray, flagged: np.ndarray) -> str:
    fig, ax = subplots(figsize=(max(4, 0.5 * len(names) + 2), 3))
    x = np.arange(len(names))
    ax.bar(x, rows, color=CLEAN_COLOR, label="rows")
    ax.bar(x, flagged, color=FLAG_COLOR, label="flagged")
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set(ylabel="rows", title="Per class")
    ax.legend()
    return to_img(fig)


def projection(features: np.ndarray, y: np.ndarray, flagged: np.ndarray, max_points: int = 5000,
               seed: int = 0) -> str:
    """PCA to 2-D of the representation, coloured by class, flagged rows ringed in red."""
    rng = np.random.default_rng(seed)
    keep = np.arange(len(features))
    if len(keep) > max_points:  # keep every flagged row, sample the rest
        rest = rng.choice(np.flatnonzero(~flagged), max(0, max_points - flagged.sum()), replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(flagged), rest]))
    xy = PCA(2, random_state=seed).fit_transform(np.asarray(features[keep], dtype=np.float64))
    fig, ax = subplots(figsize=(6, 5))
    ax.scatter(xy[:, 0], xy[:, 1], c=y[keep], cmap="tab10", s=6, alpha=0.6)
    f = flagged[keep]
    ax.scatter(xy[f, 0], xy[f, 1], facecolors="none", edgecolors=FLAG_COLOR, s=40, linewidths=1.2,
               label="flagged")
    ax.set(title="2-D projection of the representation (PCA)", xticks=[], yticks=[])
    ax.legend(loc="best")
    return to_img(fig)


def image_grid(images: np.ndarray, captions: list[str], columns: int = 8) -> str:
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = subplots(rows, columns, figsize=(1.4 * columns, 1.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, caption in zip(axes.ravel(), images, captions, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.set_title(caption, fontsize=7)
    return to_img(fig)


def pair_matrix(names: list[str], given: np.ndarray, suggested: np.ndarray) -> str:
    """Flagged rows by given label (rows) and suggested label (columns): random flips spread over the
    matrix, a targeted flip lights one cell."""
    k = len(names)
    counts = np.zeros((k, k), dtype=int)
    np.add.at(counts, (given, suggested), 1)
    size = min(1.0 + 0.45 * k, 9)
    fig, ax = subplots(figsize=(size + 1.2, size))
    image = ax.imshow(counts, cmap="Reds")
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="suggested label", ylabel="given label", title="Flagged rows by label pair")
    if k <= 12:
        for i, j in zip(*np.nonzero(counts), strict=True):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if counts[i, j] > counts.max() / 2 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return to_img(fig)


def training_curve(history, path, title: str):
    """Test accuracy (and attack success, when the attack has one) per federated round, as a PNG file."""
    from mithridate.data import atomic_path

    fig, ax = subplots(figsize=(6, 3.2))
    rounds = [r.round for r in history]
    ax.plot(rounds, [r.accuracy for r in history], marker="o", ms=3, label="test accuracy")
    if history and history[0].attack_success is not None:
        ax.plot(rounds, [r.attack_success for r in history], marker="x", ms=3, label="attack success")
    ax.set_xlabel("round")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return path
