import json
import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from lm_inference import cli
from lm_inference.cli import main, run

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--model", "tabular:6", "--prompt-ids", "0,1", "--num-tokens", "3", "--quiet"]


def never(tokens):
    """A potential no sequence satisfies (``phi = 0``): every particle dies."""
    return jnp.full((), -jnp.inf)


def _reject(name):
    raise ValueError(f"not JSON: {name}")


def strict_loads(text: str):
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity``."""
    return json.loads(text, parse_constant=_reject)


@pytest.mark.slow  # the same CLI path as test_cli_end_to_end_embedded_model (34 s on 2 cores)
def test_cli_end_to_end_tabular(tmp_path):
    common = [*COMMON, "--potential", "contains_token:2"]
    s_json = tmp_path / "s.json"
    args = ["sample", *common, "--particles", "8", "--out", str(s_json)]
    assert main([*args, "--plot", str(tmp_path / "ess.png")]) == 0
    out = strict_loads(s_json.read_text())
    assert len(out["samples"]) == 8 and len(out["ess"]) == 3
    assert "non_finite" in out["notes"] and set(out) - {"notes", "warnings"} <= set(out["notes"])
    assert (tmp_path / "ess.png").stat().st_size > 1000
    ck = str(tmp_path / "tw.safetensors")
    t_json = tmp_path / "t.json"
    assert main(["train", *common, "--twist", ck, "--steps", "5", "--out", str(t_json)]) == 0
    assert len(strict_loads(t_json.read_text())["losses"]) == 5
    b_json = tmp_path / "b.json"
    b_args = ["bounds", *common, "--twist", ck, "--particles-list", "2,8", "--runs", "4"]
    assert main([*b_args, "--out", str(b_json), "--plot", str(tmp_path / "b.png")]) == 0
    b = strict_loads(b_json.read_text())
    assert [r["num_particles"] for r in b["bounds"]] == [2, 8]
    assert (tmp_path / "b.png").stat().st_size > 1000
    # a sample run with the trained twist
    x_args = ["sample", *common, "--twist", ck, "--particles", "4"]
    assert main([*x_args, "--out", str(tmp_path / "x.json")]) == 0


def test_cli_train_reports_heldout_diagnostics(tmp_path):
    """train writes the held-out log Z_hat and ESS over training against no twist (strict JSON)
    and plots them, not only the noisy loss."""
    common = [*COMMON, "--potential", "contains_token:2"]
    t_json, png = tmp_path / "t.json", tmp_path / "t.png"
    ck = str(tmp_path / "tw.safetensors")
    args = ["train", *common, "--twist", ck, "--steps", "10", "--batch-size", "8"]
    assert main([*args, "--out", str(t_json), "--plot", str(png)]) == 0
    h = strict_loads(t_json.read_text())["heldout"]
    k = len(h["steps"])
    assert k >= 2 and h["steps"][0] == 0 and h["steps"][-1] == 10
    assert len(h["log_mean_Z"]) == len(h["log_mean_Z_se"]) == len(h["ess"]) == k
    assert {"no_twist_log_mean_Z", "no_twist_ess"} <= set(h)
    assert png.stat().st_size > 1000


def test_console_exit_status_and_streams(tmp_path):
    """The installed entry point exits 0 with the JSON on stdout (strict) and nothing on stderr;
    bad input exits 2 with a one-line message on stderr."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "import sys; from lm_inference.cli import main; sys.exit(main())"]
    ok = subprocess.run(
        [*cmd, "sample", *COMMON, "--potential", "contains_token:2", "--particles", "4"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert "'log_Z'" not in ok.stderr  # the payload dict is not printed to stderr
    assert len(strict_loads(ok.stdout)["samples"]) == 4
    bad = subprocess.run(
        [*cmd, "sample", *COMMON, "--potential", "contains_token:99"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert "error: --potential contains_token:99: token id outside the vocabulary" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_json_is_strict_when_every_particle_dies(tmp_path, capsys):
    out = tmp_path / "s.json"
    pot = "tests.lm_inference.test_cli:never"
    args = ["sample", *COMMON, "--potential", pot, "--particles", "4", "--out", str(out)]
    assert main([*args, "--plot", str(tmp_path / "ess.png")]) == 0
    text = out.read_text()
    payload = strict_loads(text)
    assert payload["log_Z"] == "-inf"
    assert payload["weights"] == [0.0] * 4
    assert '"-inf"' in payload["notes"]["non_finite"] and "null" in payload["notes"]["non_finite"]
    assert "no particle satisfied the potential" in payload["warnings"][0]


def test_to_json_encodes_non_finite_numbers():
    x = {"a": float("nan"), "b": [float("inf"), -np.inf, 1.5], "c": np.array([np.nan, 2.0])}
    y = cli.to_json(x)
    assert y == {"a": None, "b": ["inf", "-inf", 1.5], "c": [None, 2.0]}
    json.dumps(y, allow_nan=False)


def test_plots_say_which_points_they_hide(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    note = cli._curve(ax, [2, 8, 32], [-np.inf, -3.0, -2.5], "SMC lower", xname="N")
    assert note == "SMC lower: -inf at N = 2 (not drawn)"
    ax.legend()
    assert ax.get_legend().get_texts()[0].get_text() == "SMC lower (-inf at N = 2, not drawn)"
    assert cli._curve(ax, [1, 2], [1.0, 2.0], "fine") is None
    plt.close(fig)
    # the note is written on the figure
    texts = []
    real_savefig = matplotlib.figure.Figure.savefig

    def spy(self, *a, **k):
        texts.extend(t.get_text() for ax in self.axes for t in ax.texts)
        return real_savefig(self, *a, **k)

    matplotlib.figure.Figure.savefig = spy
    try:
        cli._plot(tmp_path / "p.png", lambda ax: [cli._curve(ax, [1, 2], [np.nan, 1.0], "loss")])
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    assert texts == ["loss: NaN at x = 1 (not drawn)"]


def test_bounds_with_minus_inf_lower_bound(tmp_path):
    """One particle misses a rare event in most runs: the mean lower bound is -inf, written as
    "-inf" in the JSON, and the plot is still made."""
    out = tmp_path / "b.json"
    args = ["bounds", *COMMON, "--potential", "ends_with:2", "--particles-list", "1"]
    args += ["--runs", "4", "--out", str(out), "--plot", str(tmp_path / "b.png")]
    assert main(args) == 0
    (row,) = strict_loads(out.read_text())["bounds"]
    assert row["lower"][0] == "-inf" and isinstance(row["upper"][0], float)
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_help_shows_defaults_and_explains_potentials(capsys):
    for command in ("sample", "train", "bounds"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "(default: 8)" in text and "(default: none)" in text  # --num-tokens, --potential
        for spec in ("contains_token:ID", "ends_with:ID", "contains_text:WORD", "MODULE:FUNCTION"):
            assert spec in text
        assert "phi = 1 if token id ID occurs among the T new tokens" in text
    with pytest.raises(SystemExit):
        main(["bounds", "--help"])
    assert "(default: 4,16,64)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--potential", "nope:nothing"], "unknown potential 'nope:nothing'"),
        (["--potential", "bogus"], "unknown potential 'bogus'"),
        (["--potential", "contains_token:abc"], "needs an integer token id, got 'abc'"),
        (["--potential", "contains_token"], "needs an argument: contains_token:ID"),
        (["--potential", "ends_with:6"], "outside the vocabulary [0, 6)"),
        (["--potential", "contains_text:dog"], "needs a model with a tokenizer"),
        (["--prompt-ids", "0,x"], "--prompt-ids must be comma-separated integers"),
        (["--prompt-ids", "0,7"], "prompt token ids must be in [0, 6)"),
        (["--twist", "missing.safetensors"], "missing.safetensors not found; train one with"),
    ],
)
def test_user_errors_exit_2_with_a_message(extra, message, capsys, tmp_path):
    args = ["sample", *COMMON, *extra]
    args = [a if a != "missing.safetensors" else str(tmp_path / a) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppl-lm sample: error: ") and message in err


def test_argument_errors_exit_2(capsys):
    for bad in (["--num-tokens", "0"], ["--particles", "x"], ["--ess-threshold", "2"]):
        with pytest.raises(SystemExit) as e:
            main(["sample", *COMMON, *bad])
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["bounds", *COMMON, "--particles-list", "4,0"])
    assert e.value.code == 2
    assert "positive integers" in capsys.readouterr().err


def test_twist_trained_for_another_target_is_refused(tmp_path, capsys):
    ck = str(tmp_path / "tw.safetensors")
    common = [*COMMON, "--potential", "contains_token:2", "--twist", ck]
    assert main(["train", *common, "--steps", "2", "--batch-size", "8", "--prefix-size", "4"]) == 0
    capsys.readouterr()

    def sample(*args):
        return main(
            ["sample", *common, "--particles", "4", "--out", str(tmp_path / "o.json"), *args]
        )

    assert sample() == 0  # head kind and prefix size are read from the checkpoint
    # another T
    assert sample("--num-tokens", "4") == 2
    err = capsys.readouterr().err
    assert "T (num_tokens): trained for 3, this target has 4" in err and "Fix:" in err
    # another model: the tabular LM is drawn with --seed
    assert sample("--seed", "1") == 2
    assert "different weights" in capsys.readouterr().err
    # another potential: refused, or allowed with a warning
    assert sample("--potential", "contains_token:3") == 2
    err = capsys.readouterr().err
    assert "potential: trained for 'contains_token:2', this target's is 'contains_token:3'" in err
    assert "--allow-twist-mismatch" in err
    with pytest.warns(UserWarning, match="allowed"):
        assert sample("--potential", "contains_token:3", "--allow-twist-mismatch") == 0
    # another head
    assert sample("--head", "linear") == 2
    assert (
        "head: trained as mlp, width 128, prefix_size 4, requested linear"
        in capsys.readouterr().err
    )
    # resuming training for another potential
    assert main(["train", *common, "--potential", "ends_with:2", "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "resuming would continue the twist trained for the other target" in err


def test_cli_end_to_end_embedded_model(tmp_path):
    """The default command line: embedded model, text prompt, a host (Python) text potential."""
    common = ["--prompt", "ROMEO.\n", "--num-tokens", "4", "--quiet"]
    common += ["--potential", "contains_text:the"]
    out = run(["sample", *common, "--particles", "16", "--out", str(tmp_path / "s.json")])
    texts = [t for t, w in zip(out["text"], out["weights"], strict=True) if w > 0]
    assert texts and all("the" in t.lower() for t in texts)  # phi is an indicator
    ck = str(tmp_path / "tw.safetensors")
    common += ["--twist", ck, "--prefix-size", "8"]
    assert main(["train", *common, "--steps", "3", "--batch-size", "8"]) == 0
    b = run(["bounds", *common, "--particles-list", "4", "--runs", "2"])
    assert np.isfinite(b["bounds"][0]["upper"][0])
    # the twist was trained on the embedded model for T = 4
    assert main(["sample", *common, "--num-tokens", "5", "--particles", "4"]) == 2


def test_cli_programmable_target_options(tmp_path):
    """--regex, --json-schema, --short-words, --intersect and --forced-eos build the target's
    potential (combined by product) on the embedded model; every weighted sample satisfies the
    constraints."""
    import re

    common = ["--prompt", "ROMEO.\n", "--num-tokens", "6", "--quiet", "--particles", "8"]
    out = run(["sample", *common, "--regex", r"[A-Z][a-z ]*", "--short-words", "4",
               "--intersect", "JULIET.\n", "--intersect-beta", "0.5"])
    texts = [t for t, w in zip(out["text"], out["weights"], strict=True) if w > 0]
    assert texts and all(re.fullmatch(r"[A-Z][a-z ]*", t) for t in texts)
    assert all(max(map(len, t.split()), default=0) <= 4 for t in texts)
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "boolean"}')
    out = run(["sample", *common, "--json-schema", str(schema), "--forced-eos"])
    texts = [t for t, w in zip(out["text"], out["weights"], strict=True) if w > 0]
    assert texts and set(texts) <= {"true", "false"}
    assert main(["sample", *common, "--regex", "(a"]) == 2  # a bad pattern: a clear error
