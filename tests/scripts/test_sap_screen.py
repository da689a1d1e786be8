"""The SAP screen on a tiny random Llama: plumbing and algebra only, never a safety claim."""

from __future__ import annotations

import math

import pytest

from sap_core.config import SapConfig
from sap_core.errors import ConfigError
from scripts.sap_screen import (
    Setting,
    parse_floats,
    parse_layers,
    parse_rules,
    render,
    run_screen,
)
from tests.sap_core.test_trainer import lora_tensors, make_data, make_trainer


def _screen(settings: list[Setting], warmup: int = 1):  # type: ignore[no-untyped-def]
    trainer = make_trainer(SapConfig(direction_refresh_every=4), max_steps=10)
    refusals, _ = make_data(n_train=6, seed=3)
    return trainer, run_screen(trainer, settings, warmup=warmup, refusals=refusals)


def test_rho_zero_is_exactly_sft() -> None:
    _, screen = _screen([Setting(0.0, "sgd", 0.05), Setting(0.0, "sign", 0.05)])
    for row in screen.rows:
        assert row.probe_norm == 0.0
        assert row.rel_diff == 0.0
        assert row.cosine == pytest.approx(1.0)
        assert row.safety_rate_sap == pytest.approx(screen.safety_rate_sft)


def test_probe_size_follows_the_rule() -> None:
    trainer, screen = _screen(
        [Setting(1e-3, "sgd", 0.05), Setting(1e-1, "sgd", 0.05), Setting(1e-1, "sign", 0.05)]
    )
    assert trainer.probe is not None
    layers = len(trainer.probe.layer_ids)
    small, large, sign = screen.rows
    # sgd: V* = beta * gap, and the gap grows with rho (about linearly for small rho).
    assert 0 < small.probe_norm < large.probe_norm
    assert large.gap_norm / small.gap_norm == pytest.approx(100, rel=0.5)
    # sign: every coordinate moves by beta, so ||V*|| = beta * sqrt(hidden * probe layers).
    assert sign.probe_norm == pytest.approx(0.05 * math.sqrt(32 * layers), rel=1e-5)
    assert sign.rel_diff > large.rel_diff > small.rel_diff > 0
    assert all(-1.0 <= r.cosine <= 1.0 + 1e-9 for r in screen.rows)
    assert screen.hidden_norm > 0


def test_screen_leaves_the_weights_where_warmup_put_them() -> None:
    trainer = make_trainer(SapConfig(direction_refresh_every=4), max_steps=10)
    before = lora_tensors(trainer)
    refusals, _ = make_data(n_train=4, seed=3)
    run_screen(trainer, [Setting(0.5, "sign", 0.5)], warmup=0, refusals=refusals)
    after = lora_tensors(trainer)
    assert all((a == b).all() for a, b in zip(before, after, strict=True))
    assert trainer.step == 0


def test_render_has_one_row_per_setting() -> None:
    settings = [Setting(0.0, "sgd", 0.05), Setting(0.1, "sign", 0.05)]
    _, screen = _screen(settings)
    text = render(screen, model="tiny", warmup=1, held_out=6)
    assert "ρ=0, sgd β=0.05" in text
    assert "ρ=0.1, sign β=0.05" in text
    assert "6 held-out harmful prompts" in text
    assert len([line for line in text.splitlines() if line.startswith("| ρ=")]) == 2


@pytest.mark.parametrize("text", ["adam_persistent:0.05", "sgd", "sign:-1", "nope:1"])
def test_bad_rules_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rules(text)


def test_floats_parse_and_refuse_negatives() -> None:
    assert parse_floats("2e-5, 0.2") == [2e-5, 0.2]
    with pytest.raises(ConfigError):
        parse_floats("-1")
    with pytest.raises(ConfigError):
        parse_floats("")


def test_layers_parse_placements_and_default() -> None:
    assert parse_layers("6,18; 2,7;default") == [(6, 18), (2, 7), None]
    for bad in ("a,b", "-1", ","):
        with pytest.raises(ConfigError):
            parse_layers(bad)


def test_placements_and_the_relative_rule_are_screened_with_their_own_probe() -> None:
    settings = [
        Setting(0.1, "relative", 0.02, (0,)),
        Setting(0.1, "relative", 0.02, (1, 3)),
        Setting(0.1, "sgd", 0.05),
    ]
    trainer, screen = _screen(settings)
    early, two, default = screen.rows
    # relative: ||V*_j|| is beta times the residual norm at j, whatever the layer
    assert early.probe_rel_norm == pytest.approx(0.02, rel=1e-4)
    assert two.probe_rel_norm == pytest.approx(0.02, rel=1e-4)
    assert early.rel_diff != pytest.approx(two.rel_diff)  # the placement changes the update
    assert default.probe_rel_norm > 0
    assert trainer.probe is not None
    assert trainer.probe.layer_ids == (1,)  # the default placement (~20 % of 4) is restored
    assert "layers 0" in render(screen, model="tiny", warmup=1, held_out=6)


def test_bf16_check_reports_a_cosine_per_setting() -> None:
    trainer = make_trainer(SapConfig(direction_refresh_every=4), max_steps=10)
    refusals, _ = make_data(n_train=6, seed=3)
    screen = run_screen(
        trainer, [Setting(0.2, "relative", 0.02)], warmup=1, refusals=refusals, bf16_check=True
    )
    (row,) = screen.rows
    assert row.bf16_gap_cosine is not None
    assert -1.0 <= row.bf16_gap_cosine <= 1.0 + 1e-9
    assert "bf16 gap cos" in render(screen, model="tiny", warmup=1, held_out=6)
