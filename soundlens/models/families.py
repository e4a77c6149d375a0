"""One FamilySpec per supported transformers family.

Canonical site names are shared across families: ``encoder.layers.{i}``,
``decoder.layers.{i}``, ``….attn``, ``….attn.heads.{h}``, ``….mlp`` and a few named modules
(``encoder.embeddings``…). Layer paths are module-path suffixes, so a family's base model and
its task heads (CTC, classification, generation) resolve to the same names.
"""

from __future__ import annotations

from typing import Any

from soundlens.models.spec import FamilySpec, LayerGroup


def _whisper_encoder(lm: Any, inputs: dict[str, Any]) -> Any:
    return lm.model.get_encoder()(input_features=inputs["input_features"])


def _whisper_valid_fraction(lm: Any, inputs: dict[str, Any], n_samples: list[int]) -> list[float]:
    # The feature extractor pads every clip to its 30 s window (n_samples samples).
    window = lm.processor.feature_extractor.n_samples
    return [min(1.0, n / window) for n in n_samples]


def _whisper_trimmed_encoder(lm: Any, inputs: dict[str, Any], n_samples: list[int]) -> Any:
    """Whisper's own encoder forward on features trimmed to the longest clip.

    The encoder refuses inputs shorter than its 30 s window and adds all 1500 position
    embeddings; for the duration of the call it is given the first positions only (a view of
    the same weights) and a matching window length.
    """
    import math

    import torch

    enc = lm.model.get_encoder()
    hop = lm.processor.feature_extractor.hop_length
    stride = enc.conv1.stride[0] * enc.conv2.stride[0]
    positions = max(1, math.ceil(max(n_samples) / hop / stride))
    available = inputs["input_features"].shape[-1] // stride
    positions = max(1, min(positions, available, enc.embed_positions.num_embeddings))
    features = inputs["input_features"][..., : positions * stride]
    full, window = enc.embed_positions, enc.config.max_source_positions
    enc.embed_positions = torch.nn.Embedding.from_pretrained(full.weight[:positions], freeze=True)
    enc.config.max_source_positions = positions
    try:
        return enc(input_features=features)
    finally:
        enc.embed_positions, enc.config.max_source_positions = full, window


def _two_steps(lm: Any, inputs: dict[str, Any]) -> Any:
    return lm.model.generate(**inputs, max_new_tokens=2)


def _speecht5_smoke(lm: Any, inputs: dict[str, Any]) -> Any:
    import torch

    speaker = torch.zeros(1, lm.model.config.speaker_embedding_dim)
    return lm.model.generate(inputs["input_ids"], speaker_embeddings=speaker, maxlenratio=0.5)


def _bark_smoke(lm: Any, inputs: dict[str, Any]) -> Any:
    # Only the semantic stage takes text directly; the later stages need its codes.
    return lm.model.semantic(input_ids=inputs["input_ids"][:, :16])


def _clap_audio(lm: Any, inputs: dict[str, Any]) -> Any:
    keys = ("input_features", "is_longer")
    return lm.model.get_audio_features(**{k: inputs[k] for k in keys if k in inputs})

_W2V2_ENCODER = LayerGroup(
    "encoder.layers",
    "encoder.layers",
    attn="attention",
    attn_out="attention.out_proj",
    mlp="feed_forward",
)
_W2V2_EXTRA = {
    "feature_extractor": "feature_extractor",
    "encoder.embeddings": "feature_projection",
}


def _speech_encoder(name: str, model_types: tuple[str, ...], model_class: str) -> FamilySpec:
    return FamilySpec(
        name=name,
        model_types=model_types,
        model_class=model_class,
        layer_groups=(_W2V2_ENCODER,),
        extra_sites=dict(_W2V2_EXTRA),
        channels_first_sites=("feature_extractor",),
        # Batches of different lengths: pad, and tell the model which samples are real.
        audio_processor_kwargs={"padding": True, "return_attention_mask": True},
        description="self-supervised speech encoder (CNN feature extractor + transformer)",
    )


def _bart_like(canonical: str, path: str, cross: bool = False) -> tuple[LayerGroup, ...]:
    groups = [
        LayerGroup(canonical, path, attn="self_attn", attn_out="self_attn.out_proj", mlp="fc2")
    ]
    if cross:
        # Cross-attention gets its own group so its heads have their own names.
        groups.append(
            LayerGroup(
                canonical.replace("layers", "cross_layers"),
                path,
                attn="encoder_attn",
                attn_out="encoder_attn.out_proj",
                blocks=False,
            )
        )
    return tuple(groups)


def _musicgen(name: str, model_class: str, *, cross: bool, description: str) -> FamilySpec:
    return FamilySpec(
        name=name,
        model_types=(name.replace("-", "_"),),
        model_class=model_class,
        layer_groups=(
            *_bart_like("decoder.layers", "decoder.model.decoder.layers", cross=cross),
            LayerGroup(
                "text_encoder.layers",
                "text_encoder.encoder.block",
                attn="layer.0.SelfAttention",
                attn_out="layer.0.SelfAttention.o",
                mlp="layer.1.DenseReluDense",
            ),
        ),
        extra_sites={
            "decoder.embeddings": "decoder.model.decoder.embed_tokens",
            "decoder.norm": "decoder.model.decoder.layer_norm",
            "audio_decoder": "audio_encoder.decoder",
        },
        channels_first_sites=("audio_decoder",),
        generates="audio",
        takes=("text", "audio"),
        smoke_forward=_two_steps,
        description=description,
    )


FAMILIES: dict[str, FamilySpec] = {
    s.name: s
    for s in [
        _speech_encoder("wav2vec2", ("wav2vec2",), "Wav2Vec2Model"),
        _speech_encoder("hubert", ("hubert",), "HubertModel"),
        _speech_encoder("wavlm", ("wavlm",), "WavLMModel"),
        _speech_encoder("data2vec-audio", ("data2vec-audio",), "Data2VecAudioModel"),
        FamilySpec(
            name="whisper",
            model_types=("whisper",),
            model_class="WhisperForConditionalGeneration",
            layer_groups=(
                *_bart_like("encoder.layers", "encoder.layers"),
                *_bart_like("decoder.layers", "decoder.layers", cross=True),
            ),
            extra_sites={"encoder.embeddings": "encoder.conv2", "encoder.norm": "encoder.layer_norm"},
            channels_first_sites=("encoder.embeddings",),
            encoder_forward=_whisper_encoder,
            encoder_prefixes=("encoder.",),
            valid_fraction=_whisper_valid_fraction,
            trimmed_encoder_forward=_whisper_trimmed_encoder,
            # With trimmed input the log-mel is computed over the clip only: Whisper's
            # normalisation depends on the spectrogram's maximum, which the padding never sets.
            trim_processor_kwargs={"padding": "longest"},
            smoke_forward=_two_steps,
            generates="text",
            takes=("audio",),
            description="speech recognition encoder-decoder (log-mel input, 30 s windows)",
        ),
        FamilySpec(
            name="ast",
            model_types=("audio-spectrogram-transformer",),
            model_class="ASTForAudioClassification",
            layer_groups=(
                LayerGroup(
                    "encoder.layers",
                    "audio_spectrogram_transformer.layers",
                    attn="attention",
                    attn_out="attention.o_proj",
                    mlp="mlp",
                ),
            ),
            extra_sites={"encoder.embeddings": "audio_spectrogram_transformer.embeddings"},
            description="Audio Spectrogram Transformer (audio tagging)",
        ),
        FamilySpec(
            name="clap",
            model_types=("clap",),
            model_class="ClapModel",
            layer_groups=(
                LayerGroup("audio.stages", "audio_encoder.layers"),
                LayerGroup(
                    "text.layers",
                    "text_model.encoder.layer",
                    attn="attention",
                    attn_out="attention.output.dense",
                    mlp="output.dense",
                ),
            ),
            extra_sites={"audio.projection": "audio_projection", "text.projection": "text_projection"},
            encoder_forward=_clap_audio,
            encoder_prefixes=("audio.",),
            takes=("audio", "text"),
            description="contrastive audio-text model (HTS-AT audio tower, RoBERTa text tower)",
        ),
        FamilySpec(
            name="encodec",
            model_types=("encodec",),
            model_class="EncodecModel",
            layer_groups=(
                LayerGroup("encoder.layers", "encoder.layers", channels_first=True),
                LayerGroup("decoder.layers", "decoder.layers", channels_first=True),
            ),
            extra_sites={"quantizer": "quantizer"},
            generates="audio",
            description="neural audio codec (conv encoder, residual vector quantizer, decoder)",
        ),
        _musicgen("musicgen", "MusicgenForConditionalGeneration", cross=True,
                  description="text-to-music transformer over EnCodec codes (T5 text encoder)"),
        # Melody conditioning is prepended to the decoder input: no cross-attention.
        _musicgen("musicgen-melody", "MusicgenMelodyForConditionalGeneration", cross=False,
                  description="MusicGen conditioned on text and a melody's chromagram"),
        FamilySpec(
            name="bark",
            model_types=("bark",),
            model_class="BarkModel",
            layer_groups=tuple(
                LayerGroup(
                    f"{stage}.layers",
                    f"{module}.layers",
                    attn="attn",
                    attn_out="attn.out_proj",
                    mlp="mlp",
                )
                for stage, module in (
                    ("semantic", "semantic"),
                    ("coarse", "coarse_acoustics"),
                    ("fine", "fine_acoustics"),
                )
            ),
            extra_sites={"audio_decoder": "codec_model.decoder"},
            channels_first_sites=("audio_decoder",),
            generates="audio",
            takes=("text",),
            pad_text=False,
            smoke_forward=_bark_smoke,
            description="text-to-audio GPT cascade (semantic → coarse → fine codes → EnCodec)",
        ),
        FamilySpec(
            name="speecht5",
            model_types=("speecht5",),
            model_class="SpeechT5ForTextToSpeech",
            layer_groups=(
                LayerGroup(
                    "encoder.layers",
                    "encoder.wrapped_encoder.layers",
                    attn="attention",
                    attn_out="attention.out_proj",
                    mlp="feed_forward",
                ),
                LayerGroup(
                    "decoder.layers",
                    "decoder.wrapped_decoder.layers",
                    attn="self_attn",
                    attn_out="self_attn.out_proj",
                    mlp="feed_forward",
                ),
            ),
            extra_sites={"postnet": "speech_decoder_postnet"},
            generates="audio",
            takes=("text",),
            # Text in; 16 kHz out through the SpeechT5 HiFi-GAN vocoder.
            sample_rate=lambda lm: 16000,
            output_sample_rate=lambda lm: 16000,
            smoke_forward=_speecht5_smoke,
            description="text-to-speech encoder-decoder producing mel frames (+ HiFi-GAN vocoder)",
        ),
        FamilySpec(
            name="vits",
            model_types=("vits",),
            model_class="VitsModel",
            layer_groups=(
                LayerGroup(
                    "encoder.layers",
                    "text_encoder.encoder.layers",
                    attn="attention",
                    attn_out="attention.out_proj",
                    mlp="feed_forward",
                ),
                LayerGroup("flow.layers", "flow.flows", channels_first=True),
                LayerGroup("decoder.upsample", "decoder.upsampler", channels_first=True),
            ),
            extra_sites={
                "encoder.embeddings": "text_encoder.embed_tokens",
                "encoder.stats": "text_encoder.project",
                "duration_predictor": "duration_predictor",
                "decoder.conv_pre": "decoder.conv_pre",
                "decoder.conv_post": "decoder.conv_post",
                # The flow's input is where steering moves a VITS voice's pitch (see notes).
                "flow": "flow",
            },
            channels_first_sites=("encoder.stats", "decoder.", "duration_predictor", "flow"),
            generates="audio",
            takes=("text",),
            description="end-to-end TTS (text encoder, flow, HiFi-GAN decoder), e.g. MMS-TTS",
        ),
    ]
}

# MERT checkpoints declare model_type "mert_model" with remote code; their weights follow
# HuBERT's layout, so the HuBERT spec serves them when loaded through a HuBERT config.
_BY_MODEL_TYPE = {t: s for s in FAMILIES.values() for t in s.model_types}


def family_for_model_type(model_type: str) -> FamilySpec | None:
    """The spec for a transformers ``config.model_type``, or None if unsupported."""
    return _BY_MODEL_TYPE.get(model_type)
