import json

import numpy as np
import pytest

from lm_inference.cli import main


def test_cli_end_to_end_tabular(tmp_path):
    common = [
        "--model",
        "tabular:6",
        "--prompt-ids",
        "0,1",
        "--num-tokens",
        "3",
        "--quiet",
        "--potential",
        "contains_token:2",
    ]
    out = main(
        [
            "sample",
            *common,
            "--particles",
            "8",
            "--out",
            str(tmp_path / "s.json"),
            "--plot",
            str(tmp_path / "ess.png"),
        ]
    )
    assert len(out["samples"]) == 8 and len(out["ess"]) == 3
    assert json.loads((tmp_path / "s.json").read_text())["log_Z"] == out["log_Z"]
    assert (tmp_path / "ess.png").stat().st_size > 1000
    ck = str(tmp_path / "tw.safetensors")
    tr = main(["train", *common, "--twist", ck, "--steps", "5", "--out", str(tmp_path / "t.json")])
    assert len(tr["losses"]) == 5
    b = main(
        [
            "bounds",
            *common,
            "--twist",
            ck,
            "--particles-list",
            "2,8",
            "--runs",
            "4",
            "--out",
            str(tmp_path / "b.json"),
            "--plot",
            str(tmp_path / "b.png"),
        ]
    )
    assert [r["num_particles"] for r in b["bounds"]] == [2, 8]
    assert (tmp_path / "b.png").stat().st_size > 1000
    # a sample run with the trained twist
    main(["sample", *common, "--twist", ck, "--particles", "4", "--out", str(tmp_path / "x.json")])


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit, match="unknown potential"):
        main(["sample", "--model", "tabular", "--prompt-ids", "0", "--potential", "nope:nothing"])
    with pytest.raises(SystemExit, match="not found"):
        main(
            [
                "sample",
                "--model",
                "tabular",
                "--prompt-ids",
                "0",
                "--twist",
                str(tmp_path / "missing.safetensors"),
            ]
        )


def test_cli_end_to_end_embedded_model(tmp_path):
    """The default command line: embedded model, text prompt, a host (Python) text potential."""
    common = ["--prompt", "ROMEO.\n", "--num-tokens", "4", "--quiet"]
    common += ["--potential", "contains_text:the"]
    out = main(["sample", *common, "--particles", "16", "--out", str(tmp_path / "s.json")])
    texts = [t for t, w in zip(out["text"], out["weights"], strict=True) if w > 0]
    assert texts and all("the" in t.lower() for t in texts)  # phi is an indicator
    ck = str(tmp_path / "tw.safetensors")
    common += ["--twist", ck, "--prefix-size", "8"]
    main(["train", *common, "--steps", "3", "--batch-size", "8"])
    b = main(["bounds", *common, "--particles-list", "4", "--runs", "2"])
    assert np.isfinite(b["bounds"][0]["upper"][0])
