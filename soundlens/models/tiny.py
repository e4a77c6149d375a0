"""Tiny random-weight models, one per family, built from small configs and saved to a folder.

They make the test suite run offline in minutes and serve benchmarks that need a model of a
given shape. ``size="small"`` gives real-size widths for the families where benchmarks need
them (e.g. a MusicGen-small-sized decoder). EnCodec codebooks are zero buffers until real
weights load, so a random codec would decode every code sequence to the same audio: they are
filled with random values here (buffers survive save/load).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers as T
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

_WORDS = (
    "a the and of with in music song drums bass guitar piano violin jazz rock pop calm fast "
    "slow happy sad loud quiet hello world one two three four five six seven eight nine ten "
    "speech voice high low pitch"
).split()


def _word_tokenizer(cls: type = T.PreTrainedTokenizerFast, **special: str) -> Any:
    """A word-level tokenizer over a small English vocabulary, with the given special tokens."""
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*special.values(), *_WORDS]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=special.get("unk_token", "<unk>")))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return cls(tokenizer_object=tk, **special)


def _t5_tokenizer() -> T.T5Tokenizer:
    """T5's Unigram tokenizer over the same small vocabulary (whole words, then letters)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("\u2581" + w, -1.0) for w in _WORDS]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]
    return T.T5Tokenizer(vocab=pieces, unk_id=2, pad_token="<pad>", eos_token="</s>",
                         unk_token="<unk>", extra_ids=0)


def _speech_extractor(sr: int = 16000) -> T.Wav2Vec2FeatureExtractor:
    return T.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=sr, padding_value=0.0, do_normalize=True,
        return_attention_mask=True,
    )


def _conv_stack(**overrides: Any) -> dict[str, Any]:
    return dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **overrides,
    )


def _encodec_config(sr: int = 16000, **overrides: Any) -> T.EncodecConfig:
    # frame rate sr/160 = 100 Hz at 16 kHz; num_quantizers = bandwidth(kbps)*1000/(frame_rate*10)
    kw = dict(
        sampling_rate=sr, audio_channels=1, hidden_size=16, num_filters=4,
        num_residual_layers=1, upsampling_ratios=[8, 5, 4], codebook_size=64, codebook_dim=16,
        compress=2, num_lstm_layers=1, target_bandwidths=[4 * sr / 160 * 10 / 1000],
    )
    kw.update(overrides)
    return T.EncodecConfig(**kw)


def fill_codebooks(model: torch.nn.Module, seed: int = 0) -> int:
    """Give every zero EnCodec codebook random entries; returns how many were filled."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    for name, buf in model.named_buffers():
        if name.endswith("codebook.embed") and not buf.any():
            buf.copy_(torch.randn(buf.shape, generator=g))
            n += 1
    return n


def _wav2vec2(size: str) -> tuple[torch.nn.Module, list[Any]]:
    return T.Wav2Vec2Model(T.Wav2Vec2Config(**_conv_stack())), [_speech_extractor()]


def _hubert(size: str) -> tuple[torch.nn.Module, list[Any]]:
    return T.HubertModel(T.HubertConfig(**_conv_stack())), [_speech_extractor()]


def _wavlm(size: str) -> tuple[torch.nn.Module, list[Any]]:
    return T.WavLMModel(T.WavLMConfig(**_conv_stack(num_buckets=16, max_bucket_distance=32))), [
        _speech_extractor()
    ]


def _data2vec_audio(size: str) -> tuple[torch.nn.Module, list[Any]]:
    stack = {**_conv_stack(), "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 5}
    cfg = T.Data2VecAudioConfig(**stack)
    return T.Data2VecAudioModel(cfg), [_speech_extractor()]


def _whisper(size: str) -> tuple[torch.nn.Module, list[Any]]:
    cfg = T.WhisperConfig(
        vocab_size=64, num_mel_bins=80, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_source_positions=1500, max_target_positions=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    )
    model = T.WhisperForConditionalGeneration(cfg)
    model.generation_config = T.GenerationConfig(
        decoder_start_token_id=1, eos_token_id=2, pad_token_id=0, max_length=16
    )
    tok = _word_tokenizer(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return model, [T.WhisperFeatureExtractor(feature_size=80), tok]


def _ast(size: str) -> tuple[torch.nn.Module, list[Any]]:
    cfg = T.ASTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_length=64, num_mel_bins=32, frequency_stride=10, time_stride=10,
        id2label={0: "speech", 1: "music"}, label2id={"speech": 0, "music": 1},
    )
    fe = T.ASTFeatureExtractor(num_mel_bins=32, max_length=64)
    return T.ASTForAudioClassification(cfg), [fe]


def _clap(size: str) -> tuple[torch.nn.Module, list[Any]]:
    text = T.ClapTextConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=40, projection_dim=16,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    audio = T.ClapAudioConfig(
        window_size=4, num_mel_bins=16, spec_size=32, patch_size=2, patch_stride=(2, 2),
        hidden_size=32, patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
        projection_dim=16, num_hidden_layers=2,
    )
    cfg = T.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    fe = T.ClapFeatureExtractor(feature_size=16, sampling_rate=48000, max_length_s=1,
                                fft_window_size=1024, hop_length=960,
                                truncation="rand_trunc")
    tok = _word_tokenizer(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return T.ClapModel(cfg), [fe, tok]


def _encodec(size: str) -> tuple[torch.nn.Module, list[Any]]:
    model = T.EncodecModel(_encodec_config())
    fill_codebooks(model)
    return model, [T.EncodecFeatureExtractor(feature_size=1, sampling_rate=16000)]


def _musicgen_parts(size: str, melody: bool) -> tuple[torch.nn.Module, list[Any]]:
    sr = 16000
    codec = _encodec_config(sr)
    n_q = codec.num_quantizers
    text = T.T5Config(vocab_size=len(_WORDS) + 32, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                      num_heads=2)
    dims = (
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, ffn_dim=4096)
        if size == "small"
        else dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=37)
    )
    dec_cls = T.MusicgenMelodyDecoderConfig if melody else T.MusicgenDecoderConfig
    dec = dec_cls(
        vocab_size=codec.codebook_size, num_codebooks=n_q, max_position_embeddings=512,
        pad_token_id=codec.codebook_size, bos_token_id=codec.codebook_size, **dims,
    )
    if melody:
        cfg = T.MusicgenMelodyConfig(text_encoder=text, audio_encoder=codec, decoder=dec,
                                     num_chroma=12, chroma_length=64)
        model = T.MusicgenMelodyForConditionalGeneration(cfg)
    else:
        cfg = T.MusicgenConfig(text_encoder=text, audio_encoder=codec, decoder=dec)
        model = T.MusicgenForConditionalGeneration(cfg)
    fill_codebooks(model)
    model.generation_config = T.GenerationConfig(
        decoder_start_token_id=codec.codebook_size, pad_token_id=codec.codebook_size,
        bos_token_id=codec.codebook_size, do_sample=True, guidance_scale=3.0, max_new_tokens=16,
    )
    tok = _t5_tokenizer()
    if melody:
        # MusicgenMelodyFeatureExtractor needs torchaudio, whose native library does not load
        # against torch 2.13 here: the melody fixture carries the tokenizer only.
        return model, [tok]
    return model, [T.EncodecFeatureExtractor(feature_size=1, sampling_rate=sr), tok]


def _musicgen(size: str) -> tuple[torch.nn.Module, list[Any]]:
    return _musicgen_parts(size, melody=False)


def _musicgen_melody(size: str) -> tuple[torch.nn.Module, list[Any]]:
    return _musicgen_parts(size, melody=True)


def _bark(size: str) -> tuple[torch.nn.Module, list[Any]]:
    def gpt(cls: type, **kw: Any) -> Any:
        return cls(hidden_size=32, num_layers=2, num_heads=2, block_size=128, **kw)

    codec = _encodec_config(24000, upsampling_ratios=[8, 5, 3, 2], target_bandwidths=[6.0])
    cfg = T.BarkConfig(
        semantic_config=gpt(T.BarkSemanticConfig, input_vocab_size=129600,
                            output_vocab_size=10048).to_dict(),
        coarse_acoustics_config=gpt(T.BarkCoarseConfig, input_vocab_size=12096,
                                    output_vocab_size=12096).to_dict(),
        fine_acoustics_config=gpt(T.BarkFineConfig, input_vocab_size=1056, output_vocab_size=1056,
                                  n_codes_total=8, n_codes_given=1).to_dict(),
        codec_config=codec.to_dict(),
    )
    model = T.BarkModel(cfg)
    fill_codebooks(model)
    tok = _word_tokenizer(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                          sep_token="[SEP]")
    return model, [tok]


def _speecht5(size: str) -> tuple[torch.nn.Module, list[Any]]:
    cfg = T.SpeechT5Config(
        vocab_size=len(_WORDS) + 4, hidden_size=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_ffn_dim=37, speech_decoder_prenet_units=16, speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=2, num_mel_bins=8, speaker_embedding_dim=8,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, max_speech_positions=256,
        max_text_positions=64, reduction_factor=2,
    )
    tok = _word_tokenizer(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    return T.SpeechT5ForTextToSpeech(cfg), [tok]


def _vits(size: str) -> tuple[torch.nn.Module, list[Any]]:
    cfg = T.VitsConfig(
        vocab_size=len(_WORDS) + 4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        ffn_dim=20, flow_size=8, spectrogram_bins=17, upsample_initial_channel=16,
        upsample_rates=[4, 4], upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]], duration_predictor_filter_channels=16,
        prior_encoder_num_flows=2, prior_encoder_num_wavenet_layers=2,
        posterior_encoder_num_wavenet_layers=2, depth_separable_num_layers=2,
        duration_predictor_num_flows=2, sampling_rate=16000,
    )
    tok = _word_tokenizer(pad_token="<pad>", unk_token="<unk>")
    return T.VitsModel(cfg), [tok]


BUILDERS: dict[str, Callable[[str], tuple[torch.nn.Module, list[Any]]]] = {
    "wav2vec2": _wav2vec2,
    "hubert": _hubert,
    "wavlm": _wavlm,
    "data2vec-audio": _data2vec_audio,
    "whisper": _whisper,
    "ast": _ast,
    "clap": _clap,
    "encodec": _encodec,
    "musicgen": _musicgen,
    "musicgen-melody": _musicgen_melody,
    "bark": _bark,
    "speecht5": _speecht5,
    "vits": _vits,
}


def build_tiny(family: str, out_dir: str | Path, *, seed: int = 0, size: str = "tiny") -> Path:
    """Build a random-weight model of ``family``, save it with its preprocessors, return the folder."""
    if family not in BUILDERS:
        raise KeyError(f"no tiny fixture for {family!r}; known: {', '.join(BUILDERS)}")
    torch.manual_seed(seed)
    model, parts = BUILDERS[family](size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for part in parts:
        part.save_pretrained(out)
    return out
