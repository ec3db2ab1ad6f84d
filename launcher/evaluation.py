"""How well an endpoint answers a labelled split: metrics from its scored photos, a
self-contained report page and a few lines for the terminal.

The photos are scored elsewhere (a transform job or a local endpoint); this module only
counts. It stays free of torch and `dogbreed` so the launcher starts fast on a laptop.
The page is templates/evaluation.html.j2 (Jinja2, autoescaped); its plots are drawn with
matplotlib's object API (Agg, no pyplot) and inlined as base64 so the page is one file.
"""

from __future__ import annotations

import base64
import io
import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader

__all__ = ["Scored", "evaluate", "write_page", "print_summary"]

TOP_K = 5
BINS = 10
EDGES = [index / BINS for index in range(BINS + 1)]  # exact tenths, unlike a linspace
MAX_CONFUSED_PAIRS = 20
MAX_MISTAKES = 24
MISTAKE_PREDICTIONS = 3
MAX_TICK_LABELS = 40  # more breeds than this and the names overlap: class indices instead
TEMPLATES = Path(__file__).parent / "templates"
PREPROCESSING_HINT = ("the endpoint and the job should score the same images identically; "
                      "check that the serving path decodes, resizes, crops and normalises "
                      "as the job's evaluation does")


@dataclass(frozen=True)
class Scored:
    """One photo of a labelled split and the endpoint's answer for it."""

    file: str  # relative to the split folder, e.g. "003.Airedale_terrier/Airedale_00123.jpg"
    truth: int  # index of the true class (from the folder name)
    predictions: list[dict]  # top-k, most likely first: label, class_id, probability


# ---- metrics ----------------------------------------------------------------------------

def evaluate(scored: list[Scored], class_names: list[str],
             job_test_accuracy: float | None = None, tolerance: float | None = None) -> dict:
    """Every metric the page and the terminal show, as a JSON-serialisable dict."""
    if not scored:
        raise ValueError("no scored images to evaluate")
    for record in scored:
        _check_record(record, len(class_names))
    confusion = _confusion(scored, len(class_names))
    top1 = _accuracy(scored, 1)
    per_class = _per_class(confusion, class_names)
    return {
        "images": len(scored),
        "top1_accuracy": top1,
        "top5_accuracy": _accuracy(scored, TOP_K),
        "top_k": min(TOP_K, min(len(record.predictions) for record in scored)),
        "macro_f1": _macro_f1(per_class),
        "per_class": per_class,
        "confused_pairs": _confused_pairs(confusion, class_names),
        "confusion": confusion.tolist(),
        "calibration": _calibration(scored),
        "worst_mistakes": _worst_mistakes(scored, class_names),
        "consistency": _consistency(top1, len(scored), job_test_accuracy, tolerance),
    }


def _check_record(record: Scored, classes: int) -> None:
    """Refuse a record the counts cannot place, naming its file so it can be found."""
    if not 0 <= record.truth < classes:
        raise ValueError(f"{record.file}: true class {record.truth} is not one of the "
                         f"{classes} classes")
    if not record.predictions:
        raise ValueError(f"{record.file}: no predictions")
    predicted = record.predictions[0]["class_id"]
    if not 0 <= predicted < classes:
        raise ValueError(f"{record.file}: predicted class {predicted} is not one of the "
                         f"{classes} classes")


def _top1(record: Scored) -> int:
    return int(record.predictions[0]["class_id"])


def _confidence(record: Scored) -> float:
    return float(record.predictions[0]["probability"])


def _accuracy(scored: list[Scored], k: int) -> float:
    """Share of photos whose truth is among the first k answers (fewer when fewer given)."""
    hits = sum(any(int(p["class_id"]) == record.truth for p in record.predictions[:k])
               for record in scored)
    return hits / len(scored)


def _confusion(scored: list[Scored], classes: int) -> np.ndarray:
    """Rows: true class; columns: top-1 prediction."""
    confusion = np.zeros((classes, classes), dtype=np.int64)
    for record in scored:
        confusion[record.truth, _top1(record)] += 1
    return confusion


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _per_class(confusion: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision and recall are None where undefined (nothing predicted, no support); F1 is
    2tp / (2tp + fp + fn), 0 when precision + recall is 0, None for a class never seen."""
    rows = []
    for class_id, label in enumerate(class_names):
        hits = int(confusion[class_id, class_id])
        support = int(confusion[class_id].sum())
        predicted = int(confusion[:, class_id].sum())
        rows.append({"class_id": class_id, "label": label, "support": support,
                     "predicted": predicted, "precision": _ratio(hits, predicted),
                     "recall": _ratio(hits, support),
                     "f1": _ratio(2 * hits, support + predicted)})
    return rows


def _macro_f1(per_class: list[dict]) -> float:
    """Mean F1 over the classes in the truth or the top-1 answers: breeds absent from the
    split and never predicted say nothing about the model."""
    scores = [row["f1"] for row in per_class if row["support"] or row["predicted"]]
    return sum(scores) / len(scores)


def _confused_pairs(confusion: np.ndarray, class_names: list[str]) -> list[dict]:
    """The commonest wrong (truth, top-1) pairs, most frequent first."""
    pairs = [(-int(confusion[t, p]), t, p) for t, p in zip(*np.nonzero(confusion)) if t != p]
    return [{"truth": class_names[t], "predicted": class_names[p], "count": -negative}
            for negative, t, p in sorted(pairs)[:MAX_CONFUSED_PAIRS]]


def _bin_of(confidence: float) -> int:
    """Bins [lower, upper), the last one closed so a confidence of 1 has a bin."""
    clamped = min(max(confidence, 0.0), 1.0)  # float32 softmax may give 1.0000001
    return min(bisect_right(EDGES, clamped) - 1, BINS - 1)


def _calibration(scored: list[Scored]) -> dict:
    """Expected calibration error over equal-width bins of the top-1 probability: how far
    "90 % sure" is from being right 90 % of the time, weighted by how often it is said."""
    members: list[list[Scored]] = [[] for _ in range(BINS)]
    for record in scored:
        members[_bin_of(_confidence(record))].append(record)
    bins, ece = [], 0.0
    for index, records in enumerate(members):
        accuracy = _ratio(sum(_top1(r) == r.truth for r in records), len(records))
        confidence = _ratio(sum(_confidence(r) for r in records), len(records))
        if records:
            ece += len(records) / len(scored) * abs(accuracy - confidence)
        bins.append({"lower": EDGES[index], "upper": EDGES[index + 1], "count": len(records),
                     "accuracy": accuracy, "confidence": confidence})
    return {"ece": ece, "bins": bins}


def _plain_prediction(prediction: dict) -> dict:
    return {"label": str(prediction["label"]), "class_id": int(prediction["class_id"]),
            "probability": float(prediction["probability"])}


def _worst_mistakes(scored: list[Scored], class_names: list[str]) -> list[dict]:
    """Wrong top-1 answers, most confident first: these are the ones worth looking at."""
    wrong = [record for record in scored if _top1(record) != record.truth]
    wrong.sort(key=lambda record: (-_confidence(record), record.file))
    return [{"file": record.file, "truth": class_names[record.truth],
             "predictions": [_plain_prediction(p)
                             for p in record.predictions[:MISTAKE_PREDICTIONS]]}
            for record in wrong[:MAX_MISTAKES]]


def _consistency(top1: float, images: int, job_test_accuracy: float | None,
                 tolerance: float | None) -> dict:
    """Does the endpoint score the test split as the training job did?"""
    if tolerance is None:
        # The two numbers come from the same images and the same preprocessing, so they
        # should be equal (the job's test decodes large JPEGs at reduced scale as serving
        # does); float rounding of a different batch or memory layout may still flip an
        # exact near-tie: allow one image's worth, and at least 0.5 %.
        tolerance = max(1 / images, 0.005)
    difference = consistent = None
    if job_test_accuracy is not None:
        difference = abs(job_test_accuracy - top1)
        consistent = difference <= tolerance + 1e-12  # 0.705 - 0.704 is a hair over 0.001
    return {"job_test_accuracy": job_test_accuracy, "endpoint_top1_accuracy": top1,
            "tolerance": tolerance, "difference": difference, "consistent": consistent}


# ---- the terminal -----------------------------------------------------------------------

def _consistency_line(consistency: dict) -> str:
    endpoint, job = consistency["endpoint_top1_accuracy"], consistency["job_test_accuracy"]
    if consistency["consistent"] is None:
        return f"endpoint top-1 {endpoint:.4f} (no job test_accuracy to compare with)"
    if consistency["consistent"]:
        sign = "=" if consistency["difference"] == 0 else "~"
        return f"endpoint top-1 {endpoint:.4f} {sign} job test_accuracy {job:.4f}"
    return (f"WARNING: endpoint top-1 {endpoint:.4f} differs from the job's test_accuracy "
            f"{job:.4f} by {consistency['difference']:.4f} (tolerance "
            f"{consistency['tolerance']:.4f}): {PREPROCESSING_HINT}")


def print_summary(evaluation: dict) -> str:
    """A few lines for the terminal (returned, not printed, so the CLI decides where)."""
    lines = [f"images          {evaluation['images']}",
             f"top-1 accuracy  {evaluation['top1_accuracy']:.4f}",
             f"top-{evaluation['top_k']} accuracy  {evaluation['top5_accuracy']:.4f}",
             f"macro F1        {evaluation['macro_f1']:.4f}",
             f"ECE             {evaluation['calibration']['ece']:.4f}",
             _consistency_line(evaluation["consistency"])]
    pairs = evaluation["confused_pairs"][:3]
    lines.append("most confused: " + ("; ".join(
        f"{p['truth']} -> {p['predicted']} ({p['count']})" for p in pairs) or "none"))
    return "\n".join(lines)


# ---- the page ---------------------------------------------------------------------------

def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # only when a page is drawn: the CLI starts fast
    return Figure(figsize=(width, height), dpi=100)


def _png_b64(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def confusion_png(evaluation: dict, class_names: list[str]) -> str:
    """The confusion matrix as a heatmap (base64 PNG), each row as shares of its breed's
    photos so a breed with few photos shows as clearly as one with many. No numbers in
    the cells: 133 x 133 would be unreadable."""
    counts = np.asarray(evaluation["confusion"], dtype=float)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    classes = len(class_names)
    side = 5.0 if classes <= 10 else 10.0
    figure = _new_figure(side + 1.5, side)
    axis = figure.subplots()
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    figure.colorbar(image, ax=axis, label="share of the true breed's photos")
    axis.set(xlabel="predicted (top-1)", ylabel="true breed", title="Confusion matrix")
    if classes <= MAX_TICK_LABELS:
        axis.set_xticks(range(classes), class_names, rotation=90, fontsize=7)
        axis.set_yticks(range(classes), class_names, fontsize=7)
    else:
        axis.set(xlabel="predicted class index (top-1)", ylabel="true class index")
    figure.tight_layout()
    return _png_b64(figure)


def reliability_png(calibration: dict) -> str:
    """Accuracy per confidence bin against the diagonal a calibrated model would follow,
    with each bin's photo count above its bar (base64 PNG)."""
    figure = _new_figure(6.0, 5.0)
    axis = figure.subplots()
    width = 1 / BINS
    for row in calibration["bins"]:
        if not row["count"]:
            continue
        axis.bar(row["lower"], row["accuracy"], width=width, align="edge", color="tab:blue",
                 edgecolor="black", alpha=0.8)
        axis.text(row["lower"] + width / 2, row["accuracy"] + 0.01, str(row["count"]),
                  ha="center", va="bottom", fontsize=8)
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="perfectly calibrated")
    axis.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence (top-1 probability)",
             ylabel="accuracy", title=f"Reliability (ECE {calibration['ece']:.4f})")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return _png_b64(figure)


def _gallery(evaluation: dict, thumbnails: dict[str, bytes]) -> list[dict]:
    """The worst mistakes with their thumbnails as data URIs (None when there is none)."""
    return [dict(mistake, thumbnail=(
                "data:image/jpeg;base64," + base64.b64encode(thumbnails[mistake["file"]]).decode()
                if mistake["file"] in thumbnails else None))
            for mistake in evaluation["worst_mistakes"]]


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True,
                       trim_blocks=True, lstrip_blocks=True)


def write_page(evaluation: dict, out_dir: Path, thumbnails: dict[str, bytes] | None = None,
               title: str = "Evaluation") -> Path:
    """`out_dir/evaluation.json` (the dict) and `out_dir/evaluation.html` (one self-contained
    page, readable offline); returns the page's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    class_names = [row["label"] for row in evaluation["per_class"]]
    html = _environment().get_template("evaluation.html.j2").render(
        title=title, ev=evaluation, confusion_png=confusion_png(evaluation, class_names),
        reliability_png=reliability_png(evaluation["calibration"]),
        gallery=_gallery(evaluation, thumbnails or {}))
    page = out_dir / "evaluation.html"
    page.write_text(html, encoding="utf-8")
    return page
