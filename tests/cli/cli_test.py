"""The flame-jax command end to end on the tiny synthetic cohort, in process and as a script."""

import json
import shutil
import subprocess
import sys

import pytest

from flame_jax.cli import dump_config, main
from flame_jax.data import SyntheticConfig, load_dataset


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    dump_config(SyntheticConfig.tiny(), root / "tiny.yaml")
    status = main(["data", "synth", "--out", str(root / "c"), "--config", str(root / "tiny.yaml"),
                   "--seed", "5", "--quiet"])  # fmt: skip
    assert status == 0
    return root


def test_synth_writes_cohort_and_resolved_config(cohort, capsys):
    out = cohort / "c"
    assert {p.name for p in out.iterdir()} == {"raw", "dataset", "truth", "config.yaml"}
    assert "seed: 5" in (out / "config.yaml").read_text()  # the flag overrides the file
    ds = load_dataset(out / "dataset")
    assert len(ds.patients) == SyntheticConfig.tiny().patients
    assert main(["data", "stats", str(out / "dataset"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["patients"] == len(ds.patients) and 0 < stats["ddi_rate_truth"] < 0.3


def test_eval_reference_table_and_files(cohort, capsys):
    out = cohort / "eval"
    args = ["eval", "reference", "--data", str(cohort / "c" / "dataset"),
            "--truth", str(cohort / "c" / "truth"), "--out", str(out), "--rounds", "4"]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| most-frequent |" in text and "| oracle (planted) |" in text
    saved = json.loads((out / "metrics.json").read_text())
    by_name = {r["name"]: r for r in saved["reports"]}
    assert (
        by_name["oracle (planted)"]["mean"]["jaccard"] > by_name["most-frequent"]["mean"]["jaccard"]
    )
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Results already written are not replaced without --overwrite.
    before = (out / "metrics.json").read_bytes()
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "metrics.json").read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


def test_eval_without_ddi_says_not_available(cohort, tmp_path, capsys):
    data = tmp_path / "noddi"
    shutil.copytree(cohort / "c" / "dataset", data)
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "has_ddi": False}))
    import numpy as np

    with np.load(data / "graphs.npz") as npz:
        np.savez(data / "graphs.npz", ehr=npz["ehr"])
    assert main(["eval", "reference", "--data", str(data), "--rounds", "2"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "most-frequent" in line)
    assert row.count("n/a") == 1  # the DDI column only


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "stats", "/nonexistent/ds"], "not a dataset folder"),
        (["data", "synth", "--out", "{tmp}/x", "--drugs", "3"], "drugs"),
        (
            ["data", "synth", "--out", "{tmp}/x", "--config", "{tmp}/bad.yaml"],
            "colour: unknown key",
        ),
        (["eval", "reference", "--data", "{tmp}"], "dataset.json: missing"),
    ],
)
def test_user_errors_are_messages_not_tracebacks(tmp_path, capsys, argv, message):
    (tmp_path / "bad.yaml").write_text("colour: blue\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flame-jax: error:") and message in err
    assert "Traceback" not in err


def test_console_script_is_installed():
    script = shutil.which("flame-jax", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script is not None
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "data" in result.stdout and "demo" in result.stdout


def test_demo_calls_the_flame_demo(tmp_path, monkeypatch):
    """`flame-jax demo` is a thin layer over flame_jax.flame.run_demo (tested in tests/flame)."""
    import flame_jax.flame

    calls, checks = [], {"grpo_beats_cls": True, "lambda_lowers_ddi": False}

    def fake(out, *, overwrite, seed, progress):
        calls.append((out, overwrite, seed, progress))
        return "table", {"checks": checks}

    monkeypatch.setattr(flame_jax.flame, "run_demo", fake)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet", "--seed", "3", "--overwrite"]) == 0
    assert calls == [(out, True, 3, False)]
    assert main(["demo", "--out", str(out), "--strict"]) == 1
    checks["lambda_lowers_ddi"] = True
    assert main(["demo", "--out", str(out), "--strict"]) == 0
    assert calls[-1] == (out, False, None, True)


def test_demo_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["demo", "--out", str(other), "--quiet"]) == 2
    assert "not a FLAME run folder" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "x"
