"""An endpoint's evaluation on a labelled split (in process, no endpoint): the metrics equal
a plain computation written here, hand-made cases give their known answers, the
consistency check with the job's test_accuracy warns when they differ, and the page is
one self-contained, escaped file."""

from __future__ import annotations

import base64
import json
import random

import pytest

from launcher.evaluation import Scored, evaluate, print_summary, write_page

CLASSES = ["Affenpinscher", "Beagle", "Collie", "Dalmatian", "Eskimo_dog"]


def answer(class_ids: list[int], probabilities: list[float],
           names: list[str] = CLASSES) -> list[dict]:
    return [{"label": names[c], "class_id": c, "probability": p}
            for c, p in zip(class_ids, probabilities)]


def scored(file: str, truth: int, class_ids: list[int], probabilities: list[float] | None = None,
           names: list[str] = CLASSES) -> Scored:
    probabilities = probabilities or [0.9, 0.05, 0.03, 0.01, 0.01][:len(class_ids)]
    return Scored(file, truth, answer(class_ids, probabilities, names))


def random_records(count: int = 60, seed: int = 0) -> list[Scored]:
    """Top-5 answers that are right about half the time, with random probabilities."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        truth = rng.randrange(len(CLASSES))
        order = rng.sample(range(len(CLASSES)), len(CLASSES))
        if rng.random() < 0.5:  # put the truth first
            order.remove(truth)
            order.insert(0, truth)
        probabilities = sorted((rng.random() for _ in order), reverse=True)
        total = sum(probabilities)
        records.append(Scored(f"{truth:03d}.{CLASSES[truth]}/photo_{index}.jpg", truth,
                              answer(order, [p / total for p in probabilities])))
    return records


# ---- an independent computation, with plain loops ---------------------------------------

def plain_metrics(records: list[Scored], classes: int) -> dict:
    top1 = [r.predictions[0]["class_id"] for r in records]
    accuracy = sum(p == r.truth for p, r in zip(top1, records)) / len(records)
    top5 = sum(r.truth in [p["class_id"] for p in r.predictions[:5]]
               for r in records) / len(records)
    precision, recall, f1 = {}, {}, {}
    for c in range(classes):
        tp = sum(1 for p, r in zip(top1, records) if p == c and r.truth == c)
        predicted = sum(1 for p in top1 if p == c)
        support = sum(1 for r in records if r.truth == c)
        precision[c] = tp / predicted if predicted else None
        recall[c] = tp / support if support else None
        if predicted or support:
            p, q = precision[c] or 0.0, recall[c] or 0.0
            f1[c] = 2 * p * q / (p + q) if p + q else 0.0
    ece = 0.0
    for b in range(10):
        lower, upper = b / 10, (b + 1) / 10
        members = [r for r in records
                   if lower <= r.predictions[0]["probability"] < upper
                   or (b == 9 and r.predictions[0]["probability"] == 1.0)]
        if members:
            right = sum(r.predictions[0]["class_id"] == r.truth for r in members)
            confidence = sum(r.predictions[0]["probability"] for r in members)
            ece += len(members) / len(records) * abs(right / len(members)
                                                     - confidence / len(members))
    return {"top1": accuracy, "top5": top5, "precision": precision, "recall": recall,
            "f1": f1, "macro_f1": sum(f1.values()) / len(f1), "ece": ece}


def test_metrics_equal_a_plain_computation_on_random_answers():
    records = random_records()
    result = evaluate(records, CLASSES)
    expected = plain_metrics(records, len(CLASSES))
    assert result["images"] == 60
    assert result["top1_accuracy"] == pytest.approx(expected["top1"])
    assert result["top5_accuracy"] == pytest.approx(expected["top5"]) == 1.0  # all 5 given
    assert result["top_k"] == 5
    assert result["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert result["calibration"]["ece"] == pytest.approx(expected["ece"])
    for row in result["per_class"]:
        c = row["class_id"]
        assert row["label"] == CLASSES[c]
        assert row["precision"] == pytest.approx(expected["precision"][c])
        assert row["recall"] == pytest.approx(expected["recall"][c])
        assert row["f1"] == pytest.approx(expected["f1"][c])
    assert sum(row["support"] for row in result["per_class"]) == 60
    assert sum(map(sum, result["confusion"])) == 60
    assert sum(b["count"] for b in result["calibration"]["bins"]) == 60
    json.dumps(result)  # serialisable as it is


def test_top5_counts_among_fewer_answers_when_fewer_were_asked_for():
    records = [scored("a.jpg", 2, [0, 1, 2]), scored("b.jpg", 3, [0, 1, 2]),
               scored("c.jpg", 4, [4])]
    result = evaluate(records, CLASSES)
    assert result["top5_accuracy"] == pytest.approx(2 / 3)
    assert result["top1_accuracy"] == pytest.approx(1 / 3)
    assert result["top_k"] == 1


def test_perfect_answers_score_one_and_confuse_nothing():
    records = [scored(f"{c}/{i}.jpg", c, [c, (c + 1) % 5]) for c in range(5) for i in range(3)]
    result = evaluate(records, CLASSES)
    assert result["top1_accuracy"] == 1.0 and result["macro_f1"] == 1.0
    assert result["confused_pairs"] == [] and result["worst_mistakes"] == []
    assert all(row["precision"] == row["recall"] == row["f1"] == 1.0
               for row in result["per_class"])


def test_a_known_confusion_is_counted_and_absent_breeds_are_left_out_of_macro_f1():
    records = [scored("b1.jpg", 1, [1]), scored("b2.jpg", 1, [2], [0.95]),
               scored("b3.jpg", 1, [2], [0.6]), scored("c1.jpg", 2, [2])]
    result = evaluate(records, CLASSES)
    assert result["confused_pairs"] == [{"truth": "Beagle", "predicted": "Collie", "count": 2}]
    assert result["confusion"][1][2] == 2 and result["confusion"][2][2] == 1
    beagle, collie, dalmatian = (result["per_class"][c] for c in (1, 2, 3))
    assert (beagle["support"], beagle["predicted"], beagle["precision"]) == (3, 1, 1.0)
    assert beagle["recall"] == pytest.approx(1 / 3) and beagle["f1"] == pytest.approx(0.5)
    assert collie["precision"] == pytest.approx(1 / 3) and collie["recall"] == 1.0
    assert dalmatian == {"class_id": 3, "label": "Dalmatian", "support": 0, "predicted": 0,
                         "precision": None, "recall": None, "f1": None}
    assert result["macro_f1"] == pytest.approx((0.5 + 0.5) / 2)  # Beagle and Collie only
    # The most confident mistake first, with at most 3 of its answers.
    assert [m["file"] for m in result["worst_mistakes"]] == ["b2.jpg", "b3.jpg"]
    assert result["worst_mistakes"][0]["truth"] == "Beagle"
    assert result["worst_mistakes"][0]["predictions"][0]["label"] == "Collie"
    assert "Beagle -> Collie (2)" in print_summary(result)


def test_a_breed_never_right_has_f1_zero():
    records = [scored("a.jpg", 0, [1]), scored("b.jpg", 1, [0])]
    result = evaluate(records, CLASSES)
    assert result["per_class"][0]["f1"] == 0.0 and result["per_class"][0]["precision"] == 0.0
    assert result["macro_f1"] == 0.0


def test_a_perfectly_calibrated_set_has_no_calibration_error():
    # Said 80 % sure ten times and right eight; 30 % sure ten times and right three.
    records = ([scored(f"h{i}.jpg", 0, [0 if i < 8 else 1], [0.8]) for i in range(10)]
               + [scored(f"l{i}.jpg", 2, [2 if i < 3 else 3], [0.3]) for i in range(10)])
    calibration = evaluate(records, CLASSES)["calibration"]
    assert calibration["ece"] == pytest.approx(0.0, abs=1e-12)
    bins = {b["lower"]: b for b in calibration["bins"]}
    assert len(bins) == 10 and bins[0.8]["count"] == 10 and bins[0.3]["count"] == 10
    assert bins[0.8]["accuracy"] == pytest.approx(0.8)
    assert bins[0.3]["confidence"] == pytest.approx(0.3)
    assert bins[0.5] == {"lower": 0.5, "upper": 0.6, "count": 0, "accuracy": None,
                         "confidence": None}


def test_an_overconfident_set_has_the_gap_as_its_error():
    records = [scored(f"{i}.jpg", 0, [0 if i < 5 else 1], [1.0]) for i in range(10)]
    calibration = evaluate(records, CLASSES)["calibration"]
    assert calibration["ece"] == pytest.approx(0.5)
    assert calibration["bins"][-1]["count"] == 10  # a confidence of 1 is in the last bin


# ---- consistency with the job's test_accuracy --------------------------------------------

def two_hundred_records(right: int) -> list[Scored]:
    return [scored(f"{i}.jpg", 0, [0 if i < right else 1]) for i in range(200)]


def test_equal_accuracies_are_consistent():
    result = evaluate(two_hundred_records(140), CLASSES, job_test_accuracy=0.7)
    consistency = result["consistency"]
    assert consistency == {"job_test_accuracy": 0.7, "endpoint_top1_accuracy": 0.7,
                           "tolerance": 0.005, "difference": 0.0, "consistent": True}
    summary = print_summary(result)
    assert "endpoint top-1 0.7000 = job test_accuracy 0.7000" in summary
    assert "WARNING" not in summary


def test_one_image_apart_is_within_the_default_tolerance():
    # 50 images: one image is 0.02, more than the 0.005 floor.
    records = [scored(f"{i}.jpg", 0, [0 if i < 35 else 1]) for i in range(50)]
    consistency = evaluate(records, CLASSES, job_test_accuracy=0.72)["consistency"]
    assert consistency["tolerance"] == pytest.approx(0.02)
    assert consistency["consistent"] is True
    two_apart = evaluate(records, CLASSES, job_test_accuracy=0.74)["consistency"]
    assert two_apart["consistent"] is False


def test_accuracies_further_apart_than_the_tolerance_warn():
    result = evaluate(two_hundred_records(140), CLASSES, job_test_accuracy=0.75,
                      tolerance=0.01)
    consistency = result["consistency"]
    assert consistency["consistent"] is False
    assert consistency["difference"] == pytest.approx(0.05)
    summary = print_summary(result)
    assert ("WARNING: endpoint top-1 0.7000 differs from the job's test_accuracy 0.7500 by "
            "0.0500 (tolerance 0.0100)") in summary
    assert "preprocess" in summary or "decodes" in summary


def test_without_the_jobs_accuracy_consistency_is_unknown():
    result = evaluate(two_hundred_records(140), CLASSES)
    assert result["consistency"]["consistent"] is None
    assert result["consistency"]["difference"] is None
    assert "WARNING" not in print_summary(result)


# ---- refusals ----------------------------------------------------------------------------

def test_nothing_to_evaluate_is_an_error():
    with pytest.raises(ValueError, match="no scored images to evaluate"):
        evaluate([], CLASSES)


def test_a_true_class_out_of_range_names_its_file():
    records = [scored("ok.jpg", 0, [0]), scored("006.Mystery/odd.jpg", 7, [0])]
    with pytest.raises(ValueError, match="006.Mystery/odd.jpg"):
        evaluate(records, CLASSES)


# ---- the page ----------------------------------------------------------------------------

def test_the_page_is_one_escaped_file_with_sortable_table_plots_and_gallery(tmp_path):
    names = CLASSES[:4] + ["<b>Evil</b>"]
    records = [scored("e1.jpg", 4, [1, 4, 0], [0.7, 0.2, 0.1], names),
               scored("b1.jpg", 1, [4, 1], [0.6, 0.4], names),
               scored("a1.jpg", 0, [0], [0.9], names)]
    result = evaluate(records, names, job_test_accuracy=0.9)
    thumbnail = b"\xff\xd8\xff\xe0 a small jpeg"
    page = write_page(result, tmp_path / "out", {"e1.jpg": thumbnail}, title="Test <split>")
    assert page == tmp_path / "out" / "evaluation.html"
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text()) == result
    html = page.read_text(encoding="utf-8")
    assert 'class="sortable"' in html and 'addEventListener("click"' in html
    assert html.count("data:image/png;base64,") == 2
    assert "data:image/jpeg;base64," + base64.b64encode(thumbnail).decode() in html
    assert "no thumbnail" in html  # b1.jpg has none
    assert "<b>Evil</b>" not in html and "&lt;b&gt;Evil&lt;/b&gt;" in html
    assert "<split>" not in html
    assert 'class="warning"' in html  # 1/3 right against the job's 0.9
    assert "<script src" not in html and "https://" not in html  # offline


def test_the_page_for_all_133_breeds(tmp_path):
    names = [f"{i:03d}.Breed_{i}" for i in range(1, 134)]
    rng = random.Random(1)
    records = []
    for index in range(400):
        truth = rng.randrange(133)
        top = [truth if rng.random() < 0.7 else rng.randrange(133)]
        top += [c for c in rng.sample(range(133), 6) if c != top[0]][:4]
        records.append(Scored(f"{index}.jpg", truth,
                              answer(top, [0.6, 0.2, 0.1, 0.05, 0.05], names)))
    result = evaluate(records, names, job_test_accuracy=None)
    assert len(result["confusion"]) == 133 and len(result["per_class"]) == 133
    assert len(result["confused_pairs"]) <= 20 and len(result["worst_mistakes"]) <= 24
    html = write_page(result, tmp_path).read_text(encoding="utf-8")
    assert html.count("<tr>") >= 133
    assert 'class="warning"' not in html
