"""soundlens.steering.vectors: build, save/load and apply steering vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soundlens.hooks.capture import Capture
from soundlens.hooks.interventions import Intervene, cfg_conditional_rows
from soundlens.models import load
from soundlens.probing.directions import mean_difference
from soundlens.steering.vectors import SteeringVector, SteeringVectorError


def _contrast(d: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    shift = np.zeros(d)
    shift[3] = 2.0
    pos = {"decoder.layers.1": rng.standard_normal((20, d)) + shift,
           "decoder.layers.0.attn.heads.1": rng.standard_normal((20, 16))}
    neg = {"decoder.layers.1": rng.standard_normal((30, d)),
           "decoder.layers.0.attn.heads.1": rng.standard_normal((30, 16)) - 1.0}
    return pos, neg


def test_from_contrast_is_unit_mean_difference_with_sigma() -> None:
    pos, neg = _contrast()
    sv = SteeringVector.from_contrast(pos, neg, alpha=4.0,
                                      provenance={"model": "tiny", "dataset": "abc123"})
    site = "decoder.layers.1"
    theta = sv.directions[site]
    expected = pos[site].mean(0) - neg[site].mean(0)
    assert np.isclose(np.linalg.norm(theta), 1.0, atol=1e-6)
    assert np.allclose(theta, expected / np.linalg.norm(expected), atol=1e-6)
    assert np.argmax(np.abs(theta)) == 3
    proj = np.concatenate([pos[site], neg[site]]) @ theta.astype(np.float64)
    assert np.isclose(sv.sigma[site], proj.std(), rtol=1e-5)
    assert sv.provenance["dataset"] == "abc123" and sv.provenance["method"] == "mean_difference"


def test_from_contrast_rejects_mismatches() -> None:
    pos, neg = _contrast()
    with pytest.raises(SteeringVectorError, match="same sites"):
        SteeringVector.from_contrast(pos, {"decoder.layers.1": neg["decoder.layers.1"]})
    with pytest.raises(SteeringVectorError, match="same D"):
        SteeringVector.from_contrast({"s": np.ones((3, 4))}, {"s": np.ones((3, 5))})
    with pytest.raises(SteeringVectorError, match="same mean"):
        SteeringVector.from_contrast({"s": np.ones((3, 4))}, {"s": np.ones((2, 4))})


def test_from_directions_keeps_provenance_and_sigma() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 8))
    y = np.array(["drums", "piano"] * 20)
    x[y == "drums", 0] += 3
    dirs = mean_difference("decoder.layers.1", x, y, provenance={"model": "m", "dataset": "fp"})
    sv = SteeringVector.from_directions(dirs, "drums", alpha=2.0)
    assert sv.sites == ["decoder.layers.1"]
    assert np.allclose(sv.directions["decoder.layers.1"], dirs.vector("drums"))
    assert np.isclose(sv.sigma["decoder.layers.1"], dirs.sigma[0])
    assert sv.provenance == {"model": "m", "dataset": "fp", "site": "decoder.layers.1",
                             "concept": "drums", "method": "mean_difference"}
    with pytest.raises(Exception, match="no direction for 'violin'"):
        SteeringVector.from_directions(dirs, "violin")


def test_save_load_round_trip(tmp_path) -> None:
    pos, neg = _contrast()
    sv = SteeringVector.from_contrast(pos, neg, alpha=1.5, provenance={"model": "tiny"})
    base = sv.save(tmp_path / "vec" / "drums.decoder.layers.1")
    assert (tmp_path / "vec" / "drums.decoder.layers.1.safetensors").is_file()
    assert (tmp_path / "vec" / "drums.decoder.layers.1.json").is_file()
    back = SteeringVector.load(base)
    assert back.sites == sv.sites and back.alpha == 1.5
    assert back.sigma == pytest.approx(sv.sigma)
    assert back.provenance == sv.provenance
    for s in sv.sites:
        assert np.array_equal(back.directions[s], sv.directions[s])


def test_load_missing_or_foreign_files(tmp_path) -> None:
    with pytest.raises(SteeringVectorError, match="missing .*nothing.json"):
        SteeringVector.load(tmp_path / "nothing")
    (tmp_path / "x.json").write_text('{"site": "a"}')
    (tmp_path / "x.safetensors").write_bytes(b"")
    with pytest.raises(SteeringVectorError, match="not describe"):
        SteeringVector.load(tmp_path / "x")


def test_bad_vectors_rejected() -> None:
    with pytest.raises(SteeringVectorError, match="at least one site"):
        SteeringVector({})
    with pytest.raises(SteeringVectorError, match="zero vector"):
        SteeringVector({"a": np.zeros(4)})
    with pytest.raises(SteeringVectorError, match="1-D"):
        SteeringVector({"a": np.ones((2, 2))})


def test_to_edits_apply_on_musicgen(tiny_dir) -> None:
    lm = load(tiny_dir("musicgen"))
    pos, neg = _contrast()
    sv = SteeringVector.from_contrast(pos, neg, alpha=3.0)
    edits = sv.to_edits(rows=cfg_conditional_rows(1), steps=range(2))
    assert [e.site for e in edits] == sv.sites
    assert all(e.alpha == 3.0 and e.op == "add" for e in edits)
    assert edits[0].sigma == pytest.approx(sv.sigma["decoder.layers.1"])
    assert sv.to_edits(alpha=0.5)[0].alpha == 0.5
    x = lm.inputs(text=["jazz drums"])
    site = "decoder.layers.1"
    with torch.no_grad(), Capture(lm, [site], "none", every_call=True) as base:
        torch.manual_seed(0)
        lm.model.generate(**x, max_new_tokens=3, do_sample=True)
    with (
        torch.no_grad(),
        Intervene(lm, edits) as iv,
        Capture(lm, [site], "none", every_call=True) as cap,
    ):
        torch.manual_seed(0)
        lm.model.generate(**x, max_new_tokens=3, do_sample=True)
    assert iv.applied == [[0, 1], [0, 1]]
    b0, c0 = base.activations[site][0], cap.activations[site][0]
    assert torch.equal(b0[1:], c0[1:])  # the unconditional row at step 0
    assert not torch.allclose(b0[:1], c0[:1])
