"""Safety evaluation: generation, judges, evaluator, statistics, plots and the policy verdict."""

from sap_core.evaluation.benign_prompts import BENIGN_LOOKALIKE_PROMPTS, benign_prompts
from sap_core.evaluation.evaluator import SafetyEvalConfig, evaluate_safety, finalize_report
from sap_core.evaluation.generation import generate_from_messages, generate_replies
from sap_core.evaluation.judge_validation import (
    LabelledExample,
    confusion_counts,
    judge_agreement,
    load_validation_set,
)
from sap_core.evaluation.judges import (
    GCG_REFUSAL_PREFIXES,
    Judge,
    JudgeLabel,
    KeywordJudge,
    LlmRubricJudge,
    SequenceClassifierJudge,
    is_refusal,
    make_judge,
)
from sap_core.evaluation.plots import render_figures
from sap_core.evaluation.policy import PolicyThresholds, Verdict, decide
from sap_core.evaluation.stats import Proportion, proportion, wilson_interval
from sap_core.evaluation.task_framing import TaskFraming, framing_from_profile

__all__ = [
    "BENIGN_LOOKALIKE_PROMPTS",
    "GCG_REFUSAL_PREFIXES",
    "Judge",
    "JudgeLabel",
    "KeywordJudge",
    "LabelledExample",
    "LlmRubricJudge",
    "PolicyThresholds",
    "Proportion",
    "SafetyEvalConfig",
    "SequenceClassifierJudge",
    "TaskFraming",
    "Verdict",
    "benign_prompts",
    "confusion_counts",
    "decide",
    "evaluate_safety",
    "finalize_report",
    "framing_from_profile",
    "generate_from_messages",
    "generate_replies",
    "is_refusal",
    "judge_agreement",
    "load_validation_set",
    "make_judge",
    "proportion",
    "render_figures",
    "wilson_interval",
]
