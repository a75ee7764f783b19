"""The official SemEval-2025 Task 4 formulas on hand-made generations with known answers."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from llm_unlearn.data.records import load_unlearning_data, record_kind
from llm_unlearn.evaluation.metrics.semeval import (
    aggregated_terms,
    final_aggregate,
    harmonic_aggregate,
    knowledge_score,
    mia_score,
    regurgitation_score,
    rouge_recalls,
    score_generation_rows,
    score_row,
    semeval_results,
    split_scores,
)


def row(rid, task, split, expected, generated):
    return {"id": rid, "task": task, "split": split, "expected_output": expected, "model_output": generated}


# ------------------------------------------------------------------------------------------ item scores
def test_rouge_l_recall_matches_hand_computation():
    # expected: 4 tokens; the generation has them in reverse order -> LCS = 1, unigram overlap = 4
    rl, r1 = rouge_recalls("alpha beta gamma delta", "delta gamma beta alpha")
    assert rl == pytest.approx(1 / 4)
    assert r1 == pytest.approx(4 / 4)
    # expected: the cat sat on the mat (6 tokens); LCS with "the cat on a mat" = the cat on mat = 4
    rl, r1 = rouge_recalls("The cat sat on the mat.", "the cat on a mat")
    assert rl == pytest.approx(4 / 6)
    assert r1 == pytest.approx(4 / 6)  # clipped unigram counts: the x1, cat, on, mat
    # recall, not precision: extra generated words do not lower the score
    assert regurgitation_score("blue sky", "the blue sky is very very blue sky") == pytest.approx(1.0)
    # stemming (use_stemmer=True): "running" and "runs" both stem to "run"
    assert regurgitation_score("running dogs", "runs dog") == pytest.approx(1.0)
    assert regurgitation_score("something", "") == 0.0


def test_knowledge_score_normalization():
    assert knowledge_score("Paris", "  paris \n") == 1
    assert knowledge_score(" The City of Deadesius. ", "the city of deadesius.") == 1
    assert knowledge_score("Paris", "Paris.") == 0  # no punctuation stripping
    assert knowledge_score("Paris", "Paris, France") == 0
    assert knowledge_score("1950", "1950") == 1


def test_score_row_uses_official_kind_rule_with_quoted_ids():
    sc = score_row(row('"2ebbbb06-ab81"sc1', "Task1", "forget", "a b c", "a b c"))
    qa = score_row(row('"2ebbbb06-ab81"qa0', "Task1", "forget", "Yes", "yes"))
    other = score_row(row("forget-3", "Task1", "forget", "Yes", "yes"))
    assert sc["kind"] == "sc" and sc["regurgitation_score"] == 1.0 and sc["rouge1_recall"] == 1.0
    assert sc["knowledge_score"] is None
    assert qa["kind"] == "qa" and qa["knowledge_score"] == 1 and qa["regurgitation_score"] is None
    assert other["kind"] is None and other["knowledge_score"] is None and other["regurgitation_score"] is None
    assert record_kind('"2ebb"sc1') == "sc" and record_kind("67148749qa0") == "qa"


# ------------------------------------------------------------------------------------------ aggregates
def _hand_rows():
    # forget Task1: sc recall 0.5, 0.25 -> mean 0.375; qa 1, 0 -> 0.5
    # forget Task2: sc recall 1.0; qa 0
    # retain Task1: sc recall 1.0; qa 1
    # retain Task2: sc recall 0.5; qa 1, 1 -> 1
    return [
        row("a1sc1", "Task1", "forget", "w x y z", "w x"),
        row("a2sc1", "Task1", "forget", "w x y z", "z"),
        row("a3qa1", "Task1", "forget", "Alice", "alice"),
        row("a4qa1", "Task1", "forget", "Bob", "Rob"),
        row("b1sc1", "Task2", "forget", "p q", "p q"),
        row("b2qa1", "Task2", "forget", "7", "8"),
        row("c1sc1", "Task1", "retain", "m n", "m n"),
        row("c2qa1", "Task1", "retain", "Rome", "Rome"),
        row("d1sc1", "Task2", "retain", "k l", "k"),
        row("d2qa1", "Task2", "retain", "Oslo", "oslo"),
        row("d3qa1", "Task2", "retain", "Lima", " Lima "),
    ]


def test_split_scores_and_terms_on_hand_made_rows():
    res = semeval_results(_hand_rows())
    f, r = res["forget-set"], res["retain-set"]
    assert f["overall-regurgitation-score"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert f["overall-knowledge-score"] == pytest.approx(1 / 3)
    assert f["Task1"] == {"regurgitation-score": pytest.approx(0.375), "knowledge-score": pytest.approx(0.5)}
    assert f["Task2"] == {"regurgitation-score": pytest.approx(1.0), "knowledge-score": pytest.approx(0.0)}
    assert r["Task1"] == {"regurgitation-score": pytest.approx(1.0), "knowledge-score": pytest.approx(1.0)}
    assert r["Task2"] == {"regurgitation-score": pytest.approx(0.5), "knowledge-score": pytest.approx(1.0)}
    # official order: forget then retain; tasks sorted; regurgitation then knowledge; forget as 1 - x
    expected_terms = [1 - 0.375, 1 - 0.5, 1 - 1.0, 1 - 0.0, 1.0, 1.0, 0.5, 1.0]
    assert res["aggregated-terms"] == pytest.approx(expected_terms)
    # forget Task2 regurgitation = 1 -> term 0 -> harmonic mean 0 (statistics.harmonic_mean semantics)
    assert res["harmonic-mean-task-aggregate"] == 0.0
    assert res["aggregate-score"] == -1  # no MMLU, no MIA
    assert "mia_final_score" not in res and "mia_loss_acc" not in res


def test_harmonic_mean_value_without_zero_terms():
    rows = [r for r in _hand_rows() if not r["id"].startswith("b")]  # drop forget Task2
    res = semeval_results(rows)
    terms = [1 - 0.375, 1 - 0.5, 1.0, 1.0, 0.5, 1.0]
    assert res["aggregated-terms"] == pytest.approx(terms)
    hand = len(terms) / sum(1 / t for t in terms)
    assert res["harmonic-mean-task-aggregate"] == pytest.approx(hand)
    assert res["harmonic-mean-task-aggregate"] == pytest.approx(statistics.harmonic_mean(terms))


def test_zero_term_and_empty_terms():
    assert harmonic_aggregate([0.9, 0.0, 0.8]) == 0.0
    assert harmonic_aggregate([0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_aggregate([]) is None


def test_missing_task_and_missing_kind_give_fewer_terms():
    rows = [
        row("a1sc1", "Task1", "forget", "w x", "w"),  # forget Task1: sc only, no qa
        row("c1sc1", "Task1", "retain", "m n", "m n"),
        row("c2qa1", "Task1", "retain", "Rome", "Rome"),
        row("e1qa1", "Task3", "retain", "Yes", "no"),  # retain Task3: qa only; forget has no Task3
    ]
    res = semeval_results(rows)
    assert res["forget-set"]["Task1"] == {"regurgitation-score": 0.5, "knowledge-score": None}
    assert "Task3" not in res["forget-set"]
    assert res["retain-set"]["Task3"] == {"regurgitation-score": None, "knowledge-score": 0.0}
    assert res["forget-set"]["overall-knowledge-score"] is None
    assert res["aggregated-terms"] == pytest.approx([0.5, 1.0, 1.0, 0.0])
    assert res["harmonic-mean-task-aggregate"] == 0.0
    # results are valid JSON (None -> null, no NaN)
    json.loads(json.dumps(res, allow_nan=False))


def test_only_one_split_and_rows_without_task():
    rows = [row("x1qa1", None, "forget", "A", "a"), row("x2sc1", "Task2", "forget", "q r", "q r")]
    res = semeval_results(rows)
    assert "retain-set" not in res
    f = res["forget-set"]
    assert f["overall-knowledge-score"] == 1.0  # the task-less row counts in the overall mean
    assert set(f) == {"overall-regurgitation-score", "overall-knowledge-score", "Task2"}
    assert res["aggregated-terms"] == [0.0]  # forget Task2 regurgitation 1 -> 1 - 1


def test_aggregated_terms_skip_nan():
    objs = {
        "forget": {
            "overall-regurgitation-score": 0.1,
            "Task1": {"regurgitation-score": float("nan"), "knowledge-score": 0.25},
        }
    }
    assert aggregated_terms(objs) == [0.75]


def test_mia_score_and_final_aggregate():
    assert mia_score(0.5) == 1.0
    assert mia_score(1.0) == 0.0
    assert mia_score(0.0) == 0.0
    assert mia_score(0.75) == pytest.approx(0.5)
    assert final_aggregate(0.6, 0.45, 0.9) == pytest.approx((0.6 + 0.45 + 0.9) / 3)
    assert final_aggregate(0.6, None, 0.9) == -1
    assert final_aggregate(0.6, 0.45, None) == -1
    assert final_aggregate(None, 0.45, 0.9) == -1
    res = semeval_results(_hand_rows()[6:], mia_auc=0.75, mmlu_average=0.5)
    assert res["mia_loss_acc"] == 0.75 and res["mia_final_score"] == pytest.approx(0.5)
    assert res["mmlu_average"] == 0.5
    hm = res["harmonic-mean-task-aggregate"]
    assert hm == pytest.approx(statistics.harmonic_mean([1.0, 1.0, 0.5, 1.0]))
    assert res["aggregate-score"] == pytest.approx(statistics.mean([hm, 0.5, 0.5]))
    # official key order
    assert list(res) == [
        "retain-set",
        "mia_loss_acc",
        "mmlu_average",
        "aggregated-terms",
        "harmonic-mean-task-aggregate",
        "mia_final_score",
        "aggregate-score",
    ]


def test_prescored_rows_are_not_rescored():
    rows = score_generation_rows(_hand_rows())
    rows[0]["regurgitation_score"] = 0.0  # pretend; split_scores must use the stored value
    assert split_scores([r for r in rows if r["split"] == "forget"])["Task1"][
        "regurgitation-score"
    ] == pytest.approx(0.125)


def test_real_forget_ids_give_342_sc_and_770_qa(semeval_dir):
    bundle = load_unlearning_data(semeval_dir, split="train")
    kinds = [record_kind(r.id) for r in bundle.forget]
    assert len(bundle.forget) == 1112
    assert kinds.count("sc") == 342
    assert kinds.count("qa") == 770
    rows = score_generation_rows(
        {"id": r.id, "task": r.task, "split": r.split, "expected_output": r.output, "model_output": r.output}
        for r in bundle.forget[:50]
    )
    # a perfect model: every sc recall 1, every qa exact
    assert all(r["regurgitation_score"] == 1.0 for r in rows if r["kind"] == "sc")
    assert all(r["knowledge_score"] == 1 for r in rows if r["kind"] == "qa")
    assert not any(math.isnan(x) for x in semeval_results(rows)["aggregated-terms"])
