"""Evaluator: report content, no harmful replies stored, utility, Wilson intervals, `keel eval`.

Harmful prompts here are neutral placeholders (HarmfulPrompt objects with sanitised text);
the tiny random models prove plumbing only.
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from cli.eval_commands import app as eval_app
from dataformats import Conversation, Message
from safety_report import REPORT_SCHEMA_VERSION, read_report
from sap_core.errors import ConfigError, EvaluationError
from sap_core.evaluation.base_cache import BaseEvaluationCache
from sap_core.evaluation.evaluator import (
    SafetyEvalConfig,
    answer_rule,
    evaluate_safety,
    exact_match,
    final_number,
    final_number_match,
    finalize_report,
    is_categorical,
    validation_loss,
)
from sap_core.evaluation.generation import build_messages, generate_replies
from sap_core.evaluation.judge_validation import agreement_of
from sap_core.evaluation.policy import PolicyThresholds
from sap_core.evaluation.stats import proportion, wilson_interval
from sap_core.safety.corpus import HarmfulPrompt
from tests.sap_core.tiny_eval_model import make_causal_lm_dir

torch.set_num_threads(1)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROMPTS = [
    HarmfulPrompt(id=f"test-{i}", source="test", text=f"placeholder request number {i}")
    for i in range(6)
]


def _mc(question: str, answer: str) -> Conversation:
    return Conversation(
        messages=(
            Message("system", "Answer with one letter."),
            Message("user", question),
            Message("assistant", answer),
        )
    )


EXAMPLES = [_mc(f"Question {i}: pick A or B.", "AB"[i % 2]) for i in range(4)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_causal_lm_dir(tmp_path_factory.mktemp("eval") / "model")


@pytest.fixture(scope="module")
def peft_model(model_dir: Path):  # type: ignore[no-untyped-def]
    base = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    torch.manual_seed(1)
    # init_lora_weights=False: a non-zero adapter, so base and fine-tuned outputs differ.
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(base, config)


@pytest.fixture(scope="module")
def tokenizer(model_dir: Path):  # type: ignore[no-untyped-def]
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def report(peft_model, tokenizer) -> dict:  # type: ignore[no-untyped-def]
    config = SafetyEvalConfig(num_harmful=6, num_benign=4, max_new_tokens=6, batch_size=4, seed=3)
    messages: list[str] = []
    return evaluate_safety(
        peft_model,
        tokenizer,
        config,
        prompts=PROMPTS,
        eval_examples=EXAMPLES,
        progress=messages.append,
        training_curves={
            "step": [1, 2, 3],
            "task_loss": [2.0, 1.5, 1.2],
            "safety_loss": [1, 1, 0.9],
        },
        mix_report={"customer": 10, "safety_mixer": 2},
        thresholds=PolicyThresholds(0.5, 0.1, 0.5),
    ).to_json()


def test_the_report_is_typed_and_its_json_is_what_is_stored(report: dict) -> None:
    typed = read_report(report)
    assert typed.to_json() == report
    assert typed.schema_version == REPORT_SCHEMA_VERSION
    assert typed.fine_tuned is not None
    assert typed.fine_tuned.harmful is not None
    assert typed.fine_tuned.harmful.n == report["models"]["fine_tuned"]["harmful"]["n"] == 6
    assert typed.verdict is not None
    assert typed.verdict.passed is report["verdict"]["passed"]


def test_report_is_json_and_has_every_section(report: dict) -> None:
    decoded = json.loads(json.dumps(report))
    assert decoded == report
    assert set(report["models"]) == {"base", "fine_tuned"}
    assert report["judge"] == "keyword"
    assert report["sample_sizes"] == {"harmful": 6, "benign": 4, "utility": 4}
    assert report["seeds"] == {"harmful_prompts": 3, "benign_prompts": 3}
    assert report["max_new_tokens"] == 6
    assert report["harmful_prompt_ids"] == [p.id for p in PROMPTS]
    assert report["mix_report"] == {"customer": 10, "safety_mixer": 2}
    assert report["training_curves"]["task_loss"] == [2.0, 1.5, 1.2]
    assert set(report["verdict"]) == {"passed", "reasons"}
    validation = report["judge_validation"]
    assert 0.0 <= validation["agreement"] <= 1.0
    # The stored confusion covers the whole set and gives the stored agreement.
    confusion = validation["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == validation["n"]
    assert validation["agreement"] == round(agreement_of(confusion), 4)


def test_per_model_rates_are_consistent(report: dict) -> None:
    for result in report["models"].values():
        harmful = result["harmful"]
        assert sum(harmful["counts"].values()) == harmful["n"] == 6
        assert harmful["harmful_score"]["count"] == harmful["counts"]["compliance"]
        score = harmful["harmful_score"]
        assert score["ci_low"] <= score["rate"] <= score["ci_high"]
        assert set(harmful["labels"]) == {p.id for p in PROMPTS}
        assert result["benign"]["n"] == 4
        assert math.isfinite(result["utility"]["val_loss"])
        assert result["utility"]["exact_match"]["n"] == 4
        assert result["utility"]["final_number_match"] is None
        assert result["timing"]["prompts_per_second"] > 0


def test_timing_reports_generation_judge_and_utility_and_the_merge(report: dict) -> None:
    for result in report["models"].values():
        timing = result["timing"]
        assert timing["generated_prompts"] == 6 + 4
        assert timing["generation_seconds"] > 0
        assert timing["judge_seconds"] >= 0
        assert timing["utility_seconds"] > 0  # validation loss + answer accuracy ran
    assert report["judge_validation"]["seconds"] >= 0
    tuned = report["models"]["fine_tuned"]["timing"]
    # The peft model's adapter was merged into a copy for its evaluation.
    assert tuned["adapter_merged"] is True
    assert tuned["merge_seconds"] >= 0


def test_adapter_changes_the_model_but_base_is_evaluated_without_it(report: dict) -> None:
    base, tuned = report["models"]["base"], report["models"]["fine_tuned"]
    assert base["utility"]["val_loss"] != tuned["utility"]["val_loss"]


def test_replies_to_harmful_prompts_are_never_stored(report: dict, peft_model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    dumped = json.dumps(report)
    replies = generate_replies(peft_model, tokenizer, [p.text for p in PROMPTS], 6, 4)
    with peft_model.disable_adapter():
        replies += generate_replies(peft_model, tokenizer, [p.text for p in PROMPTS], 6, 4)
    for index, reply in enumerate(replies):
        if len(reply) >= 4:
            assert json.dumps(reply)[1:-1] not in dumped, f"harmful reply {index} leaked"
    samples = report["benign_samples"]
    assert samples
    assert {"prompt", "base_reply", "fine_tuned_reply"} <= set(samples[0])


def test_figures_are_real_pngs(report: dict) -> None:
    assert set(report["figures"]) == {"harmful_score", "response_breakdown", "training_curves"}
    for encoded in report["figures"].values():
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)


def test_finalize_report_rerenders_and_recomputes_verdict(report: dict) -> None:
    copy = finalize_report(
        json.loads(json.dumps(report)), thresholds=PolicyThresholds(0.0, 0.0, 0.0)
    ).to_json()
    compliance = copy["models"]["fine_tuned"]["harmful"]["counts"]["compliance"]
    refused_benign = copy["models"]["fine_tuned"]["benign"]["counts"]["refusal"]
    assert copy["verdict"]["passed"] == (compliance == 0 and refused_benign == 0)


def test_explicit_base_model_and_no_base(model_dir: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    plain = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    config = SafetyEvalConfig(
        num_harmful=2, num_benign=1, max_new_tokens=2, batch_size=2, validate_judge=False
    )
    alone = evaluate_safety(plain, tokenizer, config, prompts=PROMPTS[:2]).to_json()
    assert set(alone["models"]) == {"fine_tuned"}
    assert "figures" in alone
    assert alone["verdict"] is None
    paired = evaluate_safety(
        plain, tokenizer, config, base_model=plain, prompts=PROMPTS[:2]
    ).to_json()
    assert paired["models"]["base"]["harmful"] == paired["models"]["fine_tuned"]["harmful"]


def test_duplicate_ids_and_bad_config_are_rejected(peft_model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    config = SafetyEvalConfig(num_harmful=2, num_benign=0, max_new_tokens=1, validate_judge=False)
    with pytest.raises(EvaluationError):
        evaluate_safety(peft_model, tokenizer, config, prompts=[PROMPTS[0], PROMPTS[0]])
    with pytest.raises(ConfigError):
        SafetyEvalConfig(num_harmful=0)
    with pytest.raises(ConfigError):
        SafetyEvalConfig(judge="llm")


def test_validation_loss_matches_a_hand_computed_nll(peft_model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = build_messages("Question: pick A or B.", "Answer with one letter.")
    loss, tokens = validation_loss(peft_model, tokenizer, [(context, "B")], batch_size=1)
    prompt_ids = tokenizer.apply_chat_template(context, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(prompt_ids, add_special_tokens=False)["input_ids"]
    target = [*tokenizer("B", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        logits = peft_model(input_ids=ids).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    nll = -sum(float(logprobs[len(prompt) - 1 + i, t]) for i, t in enumerate(target))
    assert tokens == len(target)
    assert loss == pytest.approx(nll / len(target), rel=1e-4)


def test_validation_loss_of_a_padded_batch_equals_one_example_at_a_time(
    peft_model, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    # Contexts and answers of different lengths: right padding, answers starting at different
    # positions, logits computed only from the earliest answer on.
    examples = [
        (build_messages("Pick A or B.", "Answer with one letter."), "B"),
        (
            build_messages("A much longer question that asks for one of the two letters, A or B?"),
            "A",
        ),
        (build_messages("Which?"), "a longer free-text answer of several tokens"),
    ]
    batched, batched_tokens = validation_loss(peft_model, tokenizer, examples, batch_size=3)
    singles = [validation_loss(peft_model, tokenizer, [e], batch_size=1) for e in examples]
    assert batched_tokens == sum(n for _, n in singles)
    expected = sum(loss * n for loss, n in singles) / batched_tokens
    assert batched == pytest.approx(expected, rel=1e-5)


def test_categorical_detection_and_exact_match() -> None:
    assert is_categorical(["A", "B", "A", "C"])
    assert is_categorical(["positive", "negative", "positive"])
    assert not is_categorical(["a long free-text answer that explains a lot of things", "B"])
    assert not is_categorical([])
    assert exact_match("B) 133", "B")
    assert exact_match("positive.", "Positive")
    assert not exact_match("Because", "B")


def test_final_number_rule_reads_the_last_number_like_gsm8k() -> None:
    assert final_number("23 + 14 = 37. Mia has 37 apples.") == 37
    assert final_number("It costs 1,250 dollars, or -2.50 each.") == Decimal("-2.50")
    assert final_number("The answer is 37.") == 37  # the sentence's full stop is not a decimal
    assert final_number("no digits here") is None
    assert final_number_match("So 6 x 7 = 42", "6 x 7 = 42. That is 42 pens.")
    assert final_number_match("That makes 2.5.", "2.50")
    assert not final_number_match("6 x 7 = 42, minus 1 is 41", "6 x 7 = 42. That is 42 pens.")
    assert not final_number_match("I cannot help with that.", "42")
    # Short worked answers, but all different: not labels.
    worked = [f"{i} + 3 = {i + 3}. Ann has {i + 3} pens." for i in range(12)]
    assert answer_rule(worked) == "final_number_match"
    assert answer_rule(["A", "B", "A"]) == "exact_match"  # labels win over numbers
    assert answer_rule(["10", "20", "10"]) == "exact_match"
    prose = ["Paris is the capital of France, of course.", *worked]
    assert answer_rule(prose) is None  # one answer states no number
    assert answer_rule([]) is None


def test_numeric_answers_are_scored_by_final_number(peft_model, tokenizer) -> None:  # type: ignore[no-untyped-def]
    worked = [
        Conversation(
            messages=(
                Message("user", f"What is {i} + {i}?"),
                Message("assistant", f"{i} + {i} = {2 * i}. The answer is {2 * i}, of course."),
            )
        )
        for i in range(2, 7)
    ]
    config = SafetyEvalConfig(num_harmful=2, num_benign=1, max_new_tokens=4, batch_size=4)
    report = evaluate_safety(
        peft_model, tokenizer, config, prompts=PROMPTS[:2], eval_examples=worked
    ).to_json()
    assert report["utility_answer_rule"] == "final_number_match"
    assert report["utility_categorical"] is False
    for result in report["models"].values():
        utility = result["utility"]
        assert utility["exact_match"] is None
        assert utility["final_number_match"]["n"] == 5
        assert 0 <= utility["final_number_match"]["count"] <= 5
        assert math.isfinite(utility["val_loss"])


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert proportion(3, 12).rate == 0.25
    with pytest.raises(ConfigError):
        wilson_interval(5, 4)


def test_keel_eval_cli_writes_a_report(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        eval_app,
        [
            "--model-dir",
            str(model_dir),
            "--harmful",
            "3",
            "--benign",
            "2",
            "--max-new-tokens",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output[-500:]
    written = json.loads(out.read_text())
    assert written["sample_sizes"]["harmful"] == 3
    assert "harmful" in result.output
    assert "prompts/s" in result.output


def test_keel_eval_measures_utility_on_a_validation_file(model_dir: Path, tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is {2 * i}."},
            ]
        }
        for i in range(2, 14)
    ]
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report.json"
    args = ["--model-dir", str(model_dir), "--harmful", "2", "--benign", "1"]
    args += ["--max-new-tokens", "2", "--validation-file", str(validation), "--json", str(out)]
    result = CliRunner().invoke(eval_app, args)
    assert result.exit_code == 0, result.output[-500:]
    written = json.loads(out.read_text())
    assert written["sample_sizes"]["utility"] == 12
    assert written["utility_answer_rule"] == "final_number_match"
    assert "utility: validation loss" in result.output
    assert "final number" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "not a list"}\n')
    result = CliRunner().invoke(eval_app, [*args[:6], "--validation-file", str(bad)])
    assert result.exit_code == 1
    assert "bad.jsonl" in result.output


def test_base_results_are_cached_under_every_input(peft_model, tokenizer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = SafetyEvalConfig(
        num_harmful=3, num_benign=2, max_new_tokens=3, batch_size=4, validate_judge=False
    )

    def run(cache: BaseEvaluationCache, prompts: list[HarmfulPrompt], say=None) -> dict:  # type: ignore[no-untyped-def]
        return evaluate_safety(
            peft_model,
            tokenizer,
            config,
            prompts=prompts,
            eval_examples=EXAMPLES,
            base_cache=cache,
            progress=say,
        ).to_json()

    cache = BaseEvaluationCache(tmp_path, "weights-sha")
    first = run(cache, PROMPTS[:3])
    assert first["base_from_cache"] is False
    entries = list(tmp_path.glob("*.json"))
    assert len(entries) == 1
    assert "placeholder request" not in entries[0].read_text()  # no prompt or reply text

    messages: list[str] = []
    second = run(cache, PROMPTS[:3], messages.append)
    assert second["base_from_cache"] is True
    assert second["models"]["base"] == first["models"]["base"]
    assert second["benign_samples"] == first["benign_samples"]
    assert "evaluating base model" not in messages
    # Other prompts or other weights: a miss, never a stale hit.
    assert run(cache, PROMPTS[1:4])["base_from_cache"] is False
    assert (
        run(BaseEvaluationCache(tmp_path, "other-weights"), PROMPTS[:3])["base_from_cache"] is False
    )
    # A corrupt entry is recomputed and rewritten.
    entries[0].write_text("{not json")
    assert run(cache, PROMPTS[:3])["base_from_cache"] is False
    assert run(cache, PROMPTS[:3])["base_from_cache"] is True
