"""The model code saved beside exported fine-tuned models whose head needs it (trust_remote_code).

`ser finetune` copies this file verbatim into an exported model directory as ``modeling_ser.py``,
with `classifiers/finetuning/pooling.py` beside it as ``pooling.py`` (the pooling heads ser trained with), for
the heads transformers has no class for (attention, bilstm), so that

    AutoModelForAudioClassification.from_pretrained(model_dir, trust_remote_code=True)

rebuilds the model without ser installed. It imports only torch, transformers and its sibling
``pooling`` module. The mean and layer-weighted heads need none of it: they are exported as the
backbone family's own `*ForSequenceClassification` (`classifiers.finetuning.heads.export_layout`), except
Whisper's (transformers' class averages the 30 s padding too), which come here as well.

Log-mel families (Whisper encoders, w2v-BERT 2.0) take `input_features` and the attention mask the
saved feature extractor returns (Whisper's over mel frames, saved with return_attention_mask=True):
the real output frames are counted from it, as ser does.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .pooling import frame_mask, pooling_module

#: the transformers model_type of exported heads that need this code (trust_remote_code)
REMOTE_MODEL_TYPE = "ser-emotion-classifier"
#: backbones fed log-mel / fbank `input_features` by their own feature extractor
LOGMEL_TYPES = ("whisper", "wav2vec2-bert")


# -- the exported model (trust_remote_code) ------------------------------------------------------

class SerEmotionConfig(PretrainedConfig):
    """An exported ser classifier: the backbone's transformers config (`backbone_config`, a dict),
    the pooling head and its size, the classes (`id2label`), and how to feed it (`sample_rate`,
    `do_normalize`: zero-mean unit-variance per clip, which the saved preprocessor_config.json does)."""

    model_type = REMOTE_MODEL_TYPE

    def __init__(self, backbone_config: dict | None = None, pooling: str = "attention", lstm_size: int = 128,
                 dropout: float = 0.1, sample_rate: int = 16000, do_normalize: bool = True, **kwargs):
        self.backbone_config = dict(backbone_config or {"model_type": "wav2vec2"})
        self.pooling = pooling
        self.lstm_size = lstm_size
        self.dropout = dropout
        self.sample_rate = sample_rate
        self.do_normalize = do_normalize
        super().__init__(**kwargs)


class SerForAudioClassification(PreTrainedModel):
    """Backbone (`AutoModel` of `config.backbone_config`) + pooling head + dropout + linear classifier:
    the module names and weights of ser's `EmotionClassifier`, whose forward it repeats.

    forward(input_values `(batch, samples)` float32, normalised as the feature extractor does,
    attention_mask `(batch, samples)` 1 = real sample, labels `(batch,)`) -> logits `(batch, classes)`;
    a model fine-tuned on dimensions (config `dimensions`): `(batch, classes + dimensions)`, the values
    on [-1, 1] last.
    """

    config_class = SerEmotionConfig
    base_model_prefix = "backbone"
    main_input_name = "input_values"

    def __init__(self, config: SerEmotionConfig):
        super().__init__(config)
        bc = dict(config.backbone_config)
        backbone_config = AutoConfig.for_model(bc.pop("model_type"), **bc)
        if backbone_config.model_type == "whisper":   # the encoder only, as ser trains it
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            self.backbone = WhisperEncoder(backbone_config)
        else:
            self.backbone = AutoModel.from_config(backbone_config)
        if backbone_config.model_type in LOGMEL_TYPES:
            self.main_input_name = "input_features"
        if config.pooling == "layer-weighted":
            self.backbone.config.layerdrop = 0.0  # a dropped layer would leave hidden_states one short
        hidden = self.backbone.config.hidden_size
        self.pooling = pooling_module(config.pooling, hidden, self.backbone.config.num_hidden_layers + 1,
                                      config.lstm_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(self.pooling.output_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # every weight comes from the saved file (or the backbone's own initialisation)

    def forward(self, input_values: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, input_features: torch.Tensor | None = None,
                **kwargs) -> SequenceClassifierOutput:
        if input_features is not None:
            logits = self._logmel_logits(input_features, attention_mask)
            return SequenceClassifierOutput(loss=self._loss(logits, labels), logits=logits)
        batch, samples = input_values.shape
        n = (attention_mask.sum(-1) if attention_mask is not None
             else torch.full((batch,), samples, device=input_values.device)).long()
        if bool((n != samples).any()):
            # ser makes padded batches exact (GroupNorm and positional convolutions over valid frames
            # only); plain transformers models are not, so a padded batch runs clip by clip here
            logits = torch.cat([self._logits(input_values[i:i + 1, :int(n[i])], n[i:i + 1]) for i in range(batch)])
        else:
            logits = self._logits(input_values, n)
        return SequenceClassifierOutput(loss=self._loss(logits, labels), logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Cross-entropy of class `labels` over the class logits. A model fine-tuned on emotion dimensions
        (config `dimensions`, `ser finetune --target`) has its values after the C class logits: they take
        no part here (ser trains them with the CCC loss), and a dimensions-only model has no loss."""
        if labels is None:
            return None
        c = len(getattr(self.config, "labels", None) or []) if getattr(self.config, "dimensions", None) else None
        if c == 0:
            return None
        return nn.functional.cross_entropy(logits[:, :c].float(), labels.long())

    def _logits(self, input_values: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Logits `(batch, classes)` of unpadded clips (`n` samples each)."""
        lengths = self.backbone._get_feat_extract_output_lengths(n)
        layer_weighted = self.config.pooling == "layer-weighted"
        out = self.backbone(input_values, output_hidden_states=layer_weighted)
        states = torch.stack(out.hidden_states) if layer_weighted else out.last_hidden_state
        pooled = self.pooling(states, frame_mask(lengths, states.shape[-2]))
        return self.classifier(self.dropout(pooled))

    def _logmel_logits(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits of log-mel input: Whisper `(batch, mels, 3000)` (every clip padded to 30 s by the feature
        extractor, items independent), w2v-BERT `(batch, frames, features)` with its frame mask."""
        whisper = self.backbone.config.model_type == "whisper"
        frames_in = x.shape[-1] if whisper else x.shape[1]
        n = (attention_mask.sum(-1) if attention_mask is not None
             else torch.full((x.shape[0],), frames_in, device=x.device)).long()
        lengths = self.backbone._get_feat_extract_output_lengths(n)
        kwargs = {} if whisper or attention_mask is None else {"attention_mask": attention_mask}
        layer_weighted = self.config.pooling == "layer-weighted"
        out = self.backbone(x, output_hidden_states=layer_weighted, **kwargs)
        states = torch.stack(out.hidden_states) if layer_weighted else out.last_hidden_state
        pooled = self.pooling(states, frame_mask(lengths, states.shape[-2]))
        return self.classifier(self.dropout(pooled))
