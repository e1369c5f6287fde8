"""The sweep of Vancouver's parameters (``kind: consensus``): per point it equals Vancouver run
alone, and the CLI writes its tables and plot."""

import math

import jax
import numpy as np

from flame_jax.cli.main import main
from flame_jax.consensus import ConsensusSweepConfig, VancouverConfig, consensus_sweep, vancouver
from flame_jax.consensus._sweep import _review_matrices


def test_consensus_sweep_matches_vancouver_per_point():
    config = ConsensusSweepConfig(
        vignettes=300, seeds=(3,), eps=(1e-4, 1e-2), variance_floor=(0.0, 1e-2),
        init_variance=(1.0,),
    )  # fmt: skip
    rows = consensus_sweep(config)
    assert [r["method"] for r in rows] == ["mean"] + ["vancouver"] * 4
    grades, mask, quality = _review_matrices(config, 3)
    best = quality.argmax(-1)
    for row in rows[1:]:
        vc = VancouverConfig(eps=row["eps"], variance_floor=row["variance_floor"] or None,
                             init_variance=row["init_variance"])  # fmt: skip
        res = jax.jit(jax.vmap(lambda g, m, vc=vc: vancouver(g, m, config=vc)))(grades, mask)
        grade = np.asarray(res.grade, np.float64)
        seen = np.asarray(res.item_count) > 0
        top1 = np.mean(np.where(seen, grade, -np.inf).argmax(-1) == best)
        rmse = np.sqrt(np.mean(np.square(grade - quality)[seen]))
        assert math.isclose(row["top1_mean"], top1, abs_tol=1e-9)
        assert math.isclose(row["rmse_mean"], rmse, rel_tol=1e-4)
        assert row["seeds"] == 1 and row["top1_std"] == 0.0
        # reviewers' reliabilities follow their planted precision (Spearman well above 0)
        assert row["reliability_rank_mean"] > 0.5
    # Vancouver's reviewer model beats the plain mean when reviewers differ in noise
    assert min(r["top1_mean"] for r in rows[1:]) > rows[0]["top1_mean"] + 0.05


def test_consensus_sweep_cli(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "kind: consensus\nvignettes: 50\nseeds: [0, 1]\neps: [1.0e-3]\nvariance_floor: [0.0]\n"
        "init_variance: [1.0]\n"
    )
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "| vancouver | 0.0010 | 0.0000 | 1.0000 | 2 |" in out
    for name in ("consensus.csv", "consensus.md", "consensus.png", "consensus_sweep.json"):
        assert (tmp_path / "c" / name).is_file()
    cfg.write_text("kind: consensus\neps: [-1.0]\n")
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "d")]) == 2
    assert "eps: needs values in range, got [-1.0]" in capsys.readouterr().err
