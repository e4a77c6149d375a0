"""soundlens.models.loading: every family loads from a folder; errors name the culprit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers

from soundlens.errors import HubUnavailableError, ModelFolderError, ModelNotFoundError
from soundlens.models import EMBEDDED, FAMILIES, load
from soundlens.models.tiny import BUILDERS


def test_every_family_has_a_fixture() -> None:
    assert set(BUILDERS) == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_fixture_loads_through_load(family: str, tiny_dir) -> None:
    folder = tiny_dir(family)
    lm = load(folder)
    assert lm.spec.name == family
    assert type(lm.model).__name__ == json.loads((folder / "config.json").read_text())[
        "architectures"
    ][0]
    assert not lm.model.training
    assert lm.source == f"local:{folder.resolve()}"
    assert lm.processor is not None
    assert lm.sample_rate > 0
    # Weights really come from the folder: a fresh load equals the saved tensors.
    again = load(folder)
    for (k, a), b in zip(lm.model.state_dict().items(), again.model.state_dict().values()):
        assert a.shape == b.shape and bool((a == b).all()), k


def test_local_folder_uses_transformers_from_pretrained(tiny_dir, monkeypatch) -> None:
    """The hub path and the folder path are one: both call from_pretrained with the name."""
    seen = []
    original = transformers.Wav2Vec2Model.from_pretrained.__func__

    def spy(cls, name, *a, **kw):
        seen.append(str(name))
        return original(cls, name, *a, **kw)

    monkeypatch.setattr(transformers.Wav2Vec2Model, "from_pretrained", classmethod(spy))
    load(tiny_dir("wav2vec2"))
    assert seen == [str(tiny_dir("wav2vec2"))]


def test_model_class_override_and_task_head(tiny_dir, tmp_path: Path) -> None:
    lm = load(tiny_dir("wav2vec2"), model_class="Wav2Vec2ForCTC")
    assert type(lm.model).__name__ == "Wav2Vec2ForCTC"
    # Site names do not change with the head class.
    assert lm.site("encoder.layers.1").module_path == "wav2vec2.encoder.layers.1"
    with pytest.raises(ModelNotFoundError, match="WhisperModel"):
        load(tiny_dir("wav2vec2"), model_class="WhisperModel")


def test_unknown_name_lists_known_names_and_closest() -> None:
    with pytest.raises(ModelNotFoundError) as e:
        load("whisper-tiny")
    msg = str(e.value)
    assert "'whisper-tiny.en'" in msg
    for name in EMBEDDED:
        assert name in msg


def test_hub_id_without_hub_says_so_and_how_to_pass_a_folder() -> None:
    with pytest.raises(HubUnavailableError) as e:
        load("facebook/musicgen-small")
    msg = str(e.value)
    assert "facebook/musicgen-small" in msg
    assert "hub" in msg and "--local-dir" in msg and "pass DIR" in msg


def test_missing_folder() -> None:
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        load("./does/not/exist")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="no config.json"):
        load(tmp_path)


def test_folder_with_broken_config(tiny_dir, tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(tiny_dir("hubert"), bad)
    (bad / "config.json").write_text("{ not json")
    with pytest.raises(ModelFolderError, match="config.json is not valid JSON"):
        load(bad)


def test_folder_without_weights(tiny_dir, tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(tiny_dir("hubert"), bad)
    (bad / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="no weights"):
        load(bad)


def test_folder_with_truncated_weights(tiny_dir, tmp_path: Path) -> None:
    bad = tmp_path / "m"
    shutil.copytree(tiny_dir("hubert"), bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match=str(bad)):
        load(bad)


def test_unsupported_family_is_named(tmp_path: Path) -> None:
    cfg = transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                  intermediate_size=8, vocab_size=10)
    transformers.BertModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(ModelNotFoundError, match="'bert' is not a supported family"):
        load(tmp_path)


def _as_mert(src: Path, dst: Path, **extra) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(model_type="mert_model", architectures=["MERTModel"],
               auto_map={"AutoModel": "modeling_MERT.MERTModel"}, feature_extractor_cqt=False,
               deepnorm=False, attention_relax=-1.0, sample_rate=24000)
    cfg.update(extra)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_mert_loads_through_hubert(tiny_dir, tmp_path: Path) -> None:
    folder = _as_mert(tiny_dir("hubert"), tmp_path / "mert")
    lm = load(folder)
    assert type(lm.model).__name__ == "HubertModel" and lm.spec.name == "hubert"
    ref = load(tiny_dir("hubert")).model.state_dict()
    for k, v in lm.model.state_dict().items():
        assert bool((v == ref[k]).all()), k


def test_mert_with_extras_hubert_lacks_is_refused(tiny_dir, tmp_path: Path) -> None:
    folder = _as_mert(tiny_dir("hubert"), tmp_path / "mert", feature_extractor_cqt=True)
    with pytest.raises(ModelNotFoundError, match="feature_extractor_cqt.*trust_remote_code"):
        load(folder)
