"""User audio → Dataset: folder + CSV, audiofolder, datasets.Dataset, arrays; bad files; policies."""

from __future__ import annotations

import csv

import datasets
import numpy as np
import pytest
import soundfile as sf

from soundlens.data import ClipPolicy, DataError, SkippedAudioWarning, from_arrays, load_audio
from soundlens.errors import AudioInputError


def tone(sr, seconds, f=220.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def folder(tmp_path):
    sf.write(tmp_path / "a.wav", tone(44100, 1.0, channels=2), 44100)
    sf.write(tmp_path / "b.flac", tone(22050, 2.5, 330), 22050)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    nan = tone(16000, 1.0)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "genre", "bpm"])
        for name, genre, bpm in [("a.wav", "rock", 120), ("b.flac", "jazz", 90), ("broken.wav", "rock", 1),
                                 ("empty.wav", "jazz", 2), ("silent.wav", "rock", 3), ("nan.wav", "jazz", 4),
                                 ("missing.wav", "rock", 5)]:  # fmt: skip
            w.writerow([name, genre, bpm])
    return tmp_path


def test_folder_with_csv_skips_bad_files_by_name(folder):
    with pytest.warns(SkippedAudioWarning) as rec:
        ds, report = load_audio(folder, 16000, labels=folder / "labels.csv", return_report=True)
    msg = str(rec[0].message)
    for bad in ["broken.wav", "empty.wav", "silent.wav", "nan.wav", "missing.wav"]:
        assert bad in msg
    assert {n for n, _ in report.skipped} == {"broken.wav", "empty.wav", "silent.wav", "nan.wav", "missing.wav"}
    assert dict(report.skipped)["nan.wav"].startswith("contains NaN")
    assert len(ds) == 2 and ds["source"] == ["a.wav", "b.flac"]
    assert ds.features["genre"].names == ["jazz", "rock"]  # string labels become classes
    assert ds["bpm"] == [120, 90]
    a = ds[0]["audio"]
    assert a["sampling_rate"] == 16000 and a["array"].ndim == 1 and len(a["array"]) == 16000
    # the same call through the CSV path alone
    with pytest.warns(SkippedAudioWarning):
        assert len(load_audio(folder / "labels.csv", 16000)) == 2


def test_missing_label_column_is_an_error(folder):
    with pytest.raises(DataError, match="'genres'.*did you mean 'genre'"):
        load_audio(folder, 16000, labels=folder / "labels.csv", label_columns=["genres"])
    with pytest.raises(DataError, match="file column"):
        load_audio(folder, 16000, labels=folder / "labels.csv", file_column="wav")


def test_everything_bad_is_an_error(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(1600, np.float32), 16000)
    with pytest.warns(SkippedAudioWarning), pytest.raises(AudioInputError, match="silent.wav"):
        load_audio(tmp_path / "silent.wav", 16000)


def test_audiofolder_labels_from_subfolders(tmp_path):
    for label, f in [("cat", 300.0), ("dog", 500.0)]:
        (tmp_path / label).mkdir()
        for i in range(2):
            sf.write(tmp_path / label / f"{i}.wav", tone(8000, 0.5, f), 8000)
    sf.write(tmp_path / "dog" / "bad.wav", np.zeros(800, np.float32), 8000)
    with pytest.warns(SkippedAudioWarning, match="bad.wav"):
        ds = load_audio(tmp_path, 16000)
    assert len(ds) == 4
    assert ds.features["label"].names == ["cat", "dog"]
    assert sorted(ds["label"]) == [0, 0, 1, 1]
    assert len(ds[0]["audio"]["array"]) == 8000


def test_dataset_source_and_chunk_policy():
    src = datasets.Dataset.from_dict(
        {"audio": [{"array": tone(8000, 5.0), "sampling_rate": 8000}], "speaker": ["x"]}
    ).cast_column("audio", datasets.Audio(sampling_rate=8000))
    policy = ClipPolicy(mode="chunk", max_seconds=2.0, min_seconds=0.5)
    ds = load_audio(src, 16000, policy=policy)
    assert ds["start_seconds"] == [0.0, 2.0, 4.0] and ds["chunk_index"] == [0, 1, 2]
    assert [len(a["array"]) for a in ds["audio"]] == [32000, 32000, 16000]
    assert ds["speaker"] == ["x"] * 3


def test_crop_policies_and_arrays():
    x = np.arange(10 * 100, dtype=np.float32) / 1000 + 0.01
    assert ClipPolicy(max_seconds=2, crop_at="center").apply(x, 100)[0][0] == 4.0
    assert ClipPolicy(max_seconds=2).apply(x, 100)[0][1].shape == (200,)
    r1 = ClipPolicy(max_seconds=2, crop_at="random", seed=1).apply(x, 100, key="k")
    r2 = ClipPolicy(max_seconds=2, crop_at="random", seed=1).apply(x, 100, key="k")
    assert r1[0][0] == r2[0][0]
    assert len(ClipPolicy(mode="none", max_seconds=None).apply(x, 100)[0][1]) == 1000
    with pytest.raises(DataError):
        ClipPolicy(mode="chop")
    stereo = tone(22050, 1.0, channels=2).T  # (channels, samples)
    ds = from_arrays([tone(8000, 1.0), stereo], [8000, 22050], labels={"y": [0, 1]}, target_rate=16000)
    assert [len(a["array"]) for a in ds["audio"]] == [16000, 16000] and ds["y"] == [0, 1]
    with pytest.warns(SkippedAudioWarning, match=r"array\[1\]"):
        ds = from_arrays([tone(8000, 1.0), np.full(800, np.nan, np.float32)], 8000, labels={"y": [0, 1]})
    assert ds["y"] == [0]
    with pytest.raises(DataError, match="3 arrays"):
        from_arrays([tone(8000, 1.0)] * 3, 8000, labels={"y": [0]})


def test_hub_failure_is_a_clear_error(monkeypatch):
    def offline(*a, **k):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="Hugging Face hub.*local folder"):
        load_audio("someone/some-dataset", 16000)
    with pytest.raises(DataError, match="no such file"):
        load_audio("./not/here.wav", 16000)
