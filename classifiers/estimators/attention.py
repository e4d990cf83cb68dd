"""Attention pooling over stored frames: a small torch head and its speaker-independent fold runner.

`AttentionProbe` is a scikit-learn style estimator over variable-length frame sequences:

    frames (T, L, D) of L stored layers
      -> standardise each layer (training-frame mean/std)           (T, L, D)
      -> softmax-weighted sum over layers (SUPERB-style; L > 1)     (T, D)
      -> Linear(D, H) + GELU                                        (T, H)
      -> per head (H/heads dims): learned query . frame,
         masked softmax over the T valid frames                     (heads, T)
      -> attention-weighted sum of the frames, LayerNorm, dropout   (H,)
      -> Linear(H, classes)

Training: AdamW, class-weighted cross-entropy ("balanced" by default, i.e. optimising UAR),
batches of clips of similar length, at most `max_epochs` epochs with early stopping on validation
UAR. A batch's frames are gathered unpadded and projected (the standardisation folded into the
layer mix and the projection); only the small projected frames are padded for the attention.
The validation set must come from speakers that are not in the training set: pass `val=` (the
fold runner passes the fold's `val` or draws one with `featstore.folds.validation_split`), or
`groups=` (speaker per clip) and the estimator draws whole validation speakers itself. With
neither, it trains for `max_epochs` without early stopping. Seeded and deterministic on CPU
(same seed, same result); the global torch RNG is left as it was.

`AttentionRegressorProbe` is the same pooling with a regression head (dimensional targets: MSE or
CCC loss, early stopping on validation CCC; issue 25).

`probe_attention` runs the estimator over `Fold`s and returns one record per (fold, seed), in
the format of the other probes (`classifiers.runs.crossval`).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
from torch import nn

from featstore.corpora.base import Utterance
from featstore.device import resolve_device
from featstore.errors import SerError

__all__ = ["AttentionProbe", "AttentionRegressorProbe", "ccc_loss", "AttentionHead", "probe_attention", "layer_key", "AttentionError", "pack_frames", "Packed"]


class AttentionError(SerError, ValueError):
    """Inputs the attention probe cannot use; the message names the fix."""


# ---------------------------------------------------------------------------------------------
# frames, packed
# ---------------------------------------------------------------------------------------------

@dataclass
class Packed:
    """Variable-length clips in one tensor per layer, rows addressed by (start, length).

    layers: L tensors (total_frames, D), float16 or float32, on CPU or the training device.
    start, length: (N,) int64 numpy: clip i is rows start[i]:start[i] + length[i].
    sums: None, or per layer (s1, s2), each (N, D) float64 on CPU: clip i's sum of frames and of
    squared frames (`with_sums`), so that folds read their standardisation without a pass over frames.
    """

    layers: list[torch.Tensor]
    start: np.ndarray
    length: np.ndarray
    sums: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.start)

    @property
    def dim(self) -> int:
        return int(self.layers[0].shape[1])

    def subset(self, rows) -> Packed:
        rows = np.asarray(rows, dtype=np.int64)
        sums = None if self.sums is None else [(s1[rows], s2[rows]) for s1, s2 in self.sums]
        return Packed(self.layers, self.start[rows], self.length[rows], sums)

    def select(self, layers: Sequence[int]) -> Packed:
        """The same clips with only the layers at positions `layers`."""
        sums = None if self.sums is None else [self.sums[k] for k in layers]
        return Packed([self.layers[k] for k in layers], self.start, self.length, sums)

    def to(self, device: torch.device) -> Packed:
        return Packed([x.to(device) for x in self.layers], self.start, self.length, self.sums)

    def with_sums(self, chunk: int = 1 << 11) -> Packed:
        """This Packed with per-clip sums (one pass over the frames, in float64 as the statistics)."""
        if self.sums is not None:
            return self
        order = np.argsort(self.start, kind="stable")
        rows = self.rows(order)                                       # every frame once, in storage order
        clip = torch.as_tensor(np.repeat(order, self.length[order]))
        # read contiguous slices (no gather): cut where the rows jump, and every `chunk` rows
        cuts = np.union1d(np.flatnonzero(np.diff(rows) != 1) + 1, np.arange(chunk, len(rows), chunk))
        bounds = np.unique(np.concatenate([[0], cuts, [len(rows)]])).tolist()
        sums = []
        for x in self.layers:
            s1 = torch.zeros(len(self), x.shape[1], dtype=torch.float64, device=x.device)
            s2 = torch.zeros(len(self), x.shape[1], dtype=torch.float64, device=x.device)
            on = clip.to(x.device)
            for a, b in zip(bounds[:-1], bounds[1:]):
                v = x[int(rows[a]):int(rows[a]) + b - a].to(torch.float64)
                s1.index_add_(0, on[a:b], v)
                s2.index_add_(0, on[a:b], v * v)
            sums.append((s1.cpu(), s2.cpu()))
        return Packed(self.layers, self.start, self.length, sums)

    def rows(self, clips: np.ndarray) -> np.ndarray:
        """(sum of their lengths,) int64: the frame rows of `clips`, clip after clip."""
        length = self.length[clips]
        ends = np.cumsum(length)
        return np.arange(int(ends[-1]) if len(ends) else 0) + np.repeat(self.start[clips] - (ends - length), length)

    def frames(self, clips: np.ndarray, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Unpadded batch: L tensors (frames, D) as stored (float16 or float32) on `device`, clip after
        clip, and the clips' lengths (B,) int64 on the CPU (sizes known without a device sync)."""
        idx = torch.as_tensor(self.rows(clips), device=self.layers[0].device)
        xs = [x.index_select(0, idx).to(device, non_blocking=True) for x in self.layers]
        return xs, torch.as_tensor(self.length[clips])

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Padded batch: L tensors (B, T, D) float32 on `device` and mask (B, T) bool (True = frame)."""
        length = torch.as_tensor(self.length[rows], device=device)
        T = int(self.length[rows].max())
        t = torch.arange(T, device=device)
        idx = torch.as_tensor(self.start[rows], device=device)[:, None] + torch.minimum(t[None], length[:, None] - 1)
        idx_src = idx.to(self.layers[0].device)
        xs = [x[idx_src].to(device=device, dtype=torch.float32, non_blocking=True) for x in self.layers]
        return xs, t[None] < length[:, None]


def pack_frames(frames: Sequence[np.ndarray] | np.ndarray, lengths: Sequence[int] | None = None) -> Packed:
    """Pack clips into a `Packed` (float16 input stays float16, anything else becomes float32).

    frames: a sequence of N arrays (T_i, D) (one layer) or (T_i, L, D) (L layers); or a padded
    array (N, T, D) / (N, T, L, D), with `lengths` (N,) giving each clip's valid frames (all T
    when None).
    """
    if isinstance(frames, Packed):
        return frames
    if isinstance(frames, np.ndarray) or torch.is_tensor(frames):
        arr = np.asarray(frames)
        if arr.ndim not in (3, 4):
            raise AttentionError(f"padded frames must be (N, T, D) or (N, T, L, D), got shape {arr.shape}")
        n, T = arr.shape[:2]
        lens = np.full(n, T, dtype=np.int64) if lengths is None else np.asarray(lengths, dtype=np.int64)
        if lens.shape != (n,) or (lens < 1).any() or (lens > T).any():
            raise AttentionError(f"lengths must be (N,) = ({n},) with values in 1..{T}")
        frames = [arr[i, :lens[i]] for i in range(n)]
    elif lengths is not None:
        frames = [np.asarray(f)[:int(n)] for f, n in zip(frames, lengths)]
    frames = [np.asarray(f) for f in frames]
    if not frames:
        raise AttentionError("no clips given")
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) not in (1, 2):
        raise AttentionError(f"every clip must be (T, D) or (T, L, D) with the same L and D; got shapes {sorted(shapes)[:4]}")
    lens = np.array([len(f) for f in frames], dtype=np.int64)
    if (lens < 1).any():
        bad = int(np.flatnonzero(lens < 1)[0])
        raise AttentionError(f"clip {bad} has no frames")
    dtype = np.float16 if all(f.dtype == np.float16 for f in frames) else np.float32
    data = np.concatenate([f.reshape(len(f), -1, f.shape[-1]) for f in frames]).astype(dtype, copy=False)
    if not np.isfinite(data).all():
        raise AttentionError("frames contain NaN or infinite values")
    start = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    layers = [torch.from_numpy(np.ascontiguousarray(data[:, k])) for k in range(data.shape[1])]
    return Packed(layers, start, lens)


def _frame_stats(packed: Packed) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer mean and std over the clips' frames: two (L, D) float32 tensors."""
    n = float(packed.length.sum())
    means, stds = [], []
    for s1, s2 in packed.with_sums().sums:
        m = s1.sum(0) / n
        means.append(m)
        stds.append((s2.sum(0) / n - m * m).clamp_min(0).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float().clamp_min(1e-4)


# ---------------------------------------------------------------------------------------------
# the module
# ---------------------------------------------------------------------------------------------

class AttentionHead(nn.Module):
    """L layers of (batch, frames, D) + mask (batch, frames) -> logits (batch, classes).

    mean, std: (L, D) standardisation of each input layer (fixed buffers).
    """

    def __init__(self, n_layers: int, dim: int, n_classes: int, hidden: int = 128, heads: int = 4,
                 dropout: float = 0.1, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        if hidden % heads:
            raise AttentionError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.register_buffer("mean", torch.zeros(n_layers, dim) if mean is None else mean.clone())
        self.register_buffer("std", torch.ones(n_layers, dim) if std is None else std.clone())
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.randn(heads, hidden // heads) / math.sqrt(hidden // heads))
        self.norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)

    def layer_weights(self) -> torch.Tensor:
        """(L,) softmax weights of the layers."""
        return torch.softmax(self.layer_logits, 0)

    def projected(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """proj of the weighted sum of the standardised layers: L tensors (..., D) -> (..., hidden).

        The standardisation is folded into the mix weights and the projection's bias (one pass over
        the frames instead of three); with one layer, whose softmax weight is 1 and has no gradient,
        into the projection itself.
        """
        if len(xs) == 1:
            weight = self.proj.weight / self.std[0]                           # (H, D)
            return nn.functional.linear(xs[0].to(weight.dtype), weight, self.proj.bias - weight @ self.mean[0])
        scale = self.layer_weights()[:, None] / self.std                      # (L, D)
        x = xs[0].to(scale.dtype) * scale[0]
        for k in range(1, len(xs)):
            x = torch.addcmul(x, xs[k].to(scale.dtype), scale[k])
        return nn.functional.linear(x, self.proj.weight, self.proj.bias - self.proj.weight @ (scale * self.mean).sum(0))

    def pool(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GELU frames (B, T, H) + mask (B, T) -> pooled (B, H) and attention (B, heads, T), zero on padding."""
        B, T, H = h.shape
        hh = h.view(B, T, self.heads, H // self.heads)                        # (B, T, heads, dh)
        scores = torch.einsum("bthd,hd->bht", hh, self.query)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        att = torch.softmax(scores, dim=-1)                                  # (B, heads, T)
        pooled = torch.einsum("bht,bthd->bhd", att, hh).reshape(B, H)
        return pooled, att

    def attend(self, xs: Sequence[torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled clip vectors (B, hidden) and attention weights (B, heads, T), zero on padding."""
        return self.pool(nn.functional.gelu(self.projected(xs)), mask)

    def forward(self, xs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.attend(xs, mask)
        return self.out(self.drop(self.norm(pooled)))

    def forward_frames(self, xs: Sequence[torch.Tensor], length: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of unpadded clips: L tensors (frames, D), clip after clip, and length (B,)
        on the CPU.

        Only the small (frames, hidden) activations are padded, after the projection, so no padding
        frame is gathered, standardised or projected.
        """
        h = nn.functional.gelu(self.projected(xs))                           # (frames, H)
        B, T = len(length), int(length.max())
        length = length.to(h.device)
        clip = torch.repeat_interleave(torch.arange(B, device=h.device), length, output_size=len(h))
        first = torch.cumsum(length, 0) - length
        t = torch.arange(len(h), device=h.device) - first[clip]
        padded = h.new_zeros(B, T, h.shape[1]).index_put((clip, t), h)
        pooled, _ = self.pool(padded, torch.arange(T, device=h.device)[None] < length[:, None])
        return self.out(self.drop(self.norm(pooled)))


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------

@contextmanager
def _threads(n: int | None):
    """torch's CPU thread count set to `n` inside, restored after (None: unchanged)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """UAR of class codes over the classes present in `y` (scikit-learn's macro recall)."""
    from sklearn.metrics import recall_score

    present = [c for c in range(n_classes) if (y == c).any()]
    return float(recall_score(y, pred, labels=present, average="macro", zero_division=0))


class AttentionProbe(ClassifierMixin, BaseEstimator):
    """Attention pooling over frames (optionally a learned mix of several layers) + linear.

    X is N clips (see `fit`); a 2-D array (N, D) is N clips of one frame each (pooled features), so
    the probe also runs where scikit-learn passes plain feature matrices (Pipeline, GridSearchCV).

    Hyper-parameters (keyword-only, stored as given, validated by `fit`):
      hidden, heads, dropout  size of the head (hidden must be a multiple of heads)
      lr, weight_decay        AdamW
      batch_size, max_epochs  batches of clips; epochs at most
      patience                epochs without a better validation UAR before stopping
      class_weight            "balanced" (inverse class frequency), {class: weight} or None
      val_fraction            share of training speakers moved to validation when only
                              `groups` is given to `fit`
      random_state            int: parameters, shuffling, dropout and the validation draw
      device                  "auto" (CUDA when available), "cpu", "cuda", ...
      threads                 torch CPU threads while fitting/predicting (None: leave torch's
                              setting); 1 is fastest for small heads on a busy machine
      seed                    deprecated alias of random_state

    Fitted attributes: classes_ (C,), n_features_in_ (D), layer_weights_ (L,), best_epoch_,
    n_epochs_, history_ (one dict per epoch: epoch, train_loss, val_loss, val_uar), val_uar_.
    """

    _parameter_constraints: dict = {
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "heads": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "patience": [Interval(Integral, 0, None, closed="left")],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "val_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "device": [str, None],
        "threads": [Interval(Integral, 1, None, closed="left"), None],
        "seed": [Hidden(StrOptions({"deprecated"})), Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, hidden: int = 128, heads: int = 4, dropout: float = 0.1, lr: float = 5e-3,
                 weight_decay: float = 1e-2, batch_size: int = 16, max_epochs: int = 40, patience: int = 10,
                 class_weight: str | None = "balanced", val_fraction: float = 0.15, random_state: int = 0,
                 device: str = "auto", threads: int | None = None, seed="deprecated"):
        self.hidden = hidden
        self.heads = heads
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.class_weight = class_weight
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.seed = seed

    def _random_state(self) -> int:
        """`random_state`, or the deprecated `seed` when that was set."""
        if isinstance(self.seed, str) and self.seed == "deprecated":
            return self.random_state
        warnings.warn("AttentionProbe(seed=...) is deprecated; use random_state=...", DeprecationWarning,
                      stacklevel=3)
        return self.seed

    @staticmethod
    def _is_clips(X) -> bool:
        """True for clips (a Packed, padded 3-/4-D frames, a sequence of 2-D clips); False for a 2-D matrix."""
        if isinstance(X, Packed):
            return True
        if isinstance(X, np.ndarray) or torch.is_tensor(X):
            return X.ndim in (3, 4)
        return isinstance(X, (list, tuple)) and len(X) > 0 and np.ndim(X[0]) >= 2

    def _packed(self, X, lengths=None) -> Packed:
        """Clips to predict on, checked against the fitted D and L."""
        packed = (pack_frames(X, lengths) if self._is_clips(X)
                  else pack_frames(validate_data(self, X, dtype=np.float32, reset=False)[:, None, :]))
        if packed.dim != self.n_features_in_ or len(packed.layers) != len(self.layer_weights_):
            raise AttentionError(f"clips have {len(packed.layers)} layer(s) of dimension {packed.dim}; the probe was "
                                 f"fitted on {len(self.layer_weights_)} of dimension {self.n_features_in_}")
        return packed

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X, y, groups: Sequence | None = None, val: tuple | None = None, lengths=None) -> AttentionProbe:
        """Fit on clips `X` with labels `y` (N,).

        X: N arrays (T_i, D) or (T_i, L, D), or a padded (N, T, D) / (N, T, L, D) array with
        `lengths` (N,); or a 2-D (N, D) array of one-frame clips. groups: (N,) speaker of each
        clip; used to draw validation speakers when `val` is not given. val: (X_val, y_val) or
        (X_val, y_val, lengths_val), speakers disjoint from the training clips'.
        """
        self._validate_params()
        if self._is_clips(X):
            packed = pack_frames(X, lengths)
            y = column_or_1d(y, warn=True)
        else:
            X, y = validate_data(self, X, y, dtype=np.float32)
            packed = pack_frames(X[:, None, :])
        check_classification_targets(y)
        if len(y) != len(packed):
            raise AttentionError(f"{len(packed)} clips but {len(y)} labels")
        val_packed = y_val = None
        if val is not None:
            val_packed = (pack_frames(val[0], val[2] if len(val) > 2 else None) if self._is_clips(val[0])
                          else pack_frames(np.asarray(val[0], dtype=np.float32)[:, None, :]))
            y_val = np.asarray(val[1])
        elif groups is not None and self.patience:
            from featstore.folds import validation_split

            groups = np.asarray(groups, dtype=object)
            if len(groups) != len(y):
                raise AttentionError(f"{len(y)} labels but {len(groups)} groups")
            records = [SimpleNamespace(speaker=str(g), label=str(lab)) for g, lab in zip(groups, y)]
            tr, va = validation_split(records, np.arange(len(y)), fraction=self.val_fraction,
                                     seed=self._random_state())
            val_packed, y_val = packed.subset(va), y[va]
            packed, y = packed.subset(tr), y[tr]
        return self._fit_packed(packed, y, val_packed, y_val)

    def _fit_packed(self, packed: Packed, y: np.ndarray, val_packed: Packed | None, y_val: np.ndarray | None):
        self._validate_params()
        with _threads(self.threads):
            return self._fit(packed, y, val_packed, y_val)

    def _fit(self, packed: Packed, y: np.ndarray, val_packed: Packed | None, y_val: np.ndarray | None):
        self.classes_ = np.unique(y)
        self.n_features_in_ = packed.dim
        seed = self._random_state()
        code = {c: i for i, c in enumerate(self.classes_.tolist())}
        yc = np.array([code[c] for c in y.tolist()], dtype=np.int64)
        if len(self.classes_) < 2:
            raise AttentionError(f"training labels hold one class only ({self.classes_[0]!r})")
        yv = None
        if val_packed is not None:
            keep = np.array([c in code for c in y_val.tolist()], dtype=bool)  # classes unseen in training cannot be scored
            val_packed, yv = val_packed.subset(np.flatnonzero(keep)), np.array([code[c] for c in y_val[keep].tolist()], dtype=np.int64)
            if not len(yv):
                val_packed = yv = None
        dev = resolve_device(self.device)
        C = len(self.classes_)
        counts = np.bincount(yc, minlength=C).astype(np.float64)
        weight = None
        if isinstance(self.class_weight, dict):
            weight = torch.tensor([float(self.class_weight.get(c, 1.0)) for c in self.classes_.tolist()],
                                  dtype=torch.float32, device=dev)
        elif self.class_weight == "balanced":
            weight = torch.tensor(len(yc) / (C * np.maximum(counts, 1)), dtype=torch.float32, device=dev)

        def validate(logits: torch.Tensor) -> tuple[float, float]:
            v_loss = float(nn.functional.cross_entropy(logits, torch.as_tensor(yv, device=dev), weight=weight))
            return _balanced_accuracy(yv, logits.argmax(1).cpu().numpy(), C), v_loss

        self.val_uar_ = _train_head(self, packed, val_packed, outputs=C, target=torch.as_tensor(yc, device=dev),
                                    loss_fn=nn.CrossEntropyLoss(weight=weight), validate=validate,
                                    score_name="val_uar", seed=seed, dev=dev)
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _outputs(self, X, lengths, then, model: nn.Module | None = None) -> np.ndarray:
        """The fitted head's outputs for clips `X` (N, C logits or T standardised targets) as numpy, `then`
        (tensor -> tensor) applied first; computed on the model's device under `threads`. model: the head
        to run (default: the fitted `model_`), e.g. a float64 copy of it."""
        check_is_fitted(self)
        model = self.model_ if model is None else model
        packed = self._packed(X, lengths)
        dev = next(model.parameters()).device
        with _threads(self.threads):
            return then(_logits(model, _to_device(packed, dev), dev)).cpu().numpy()

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """Class probabilities (N, C), columns in `classes_` order."""
        return self._outputs(X, lengths, lambda logits: torch.softmax(logits, 1))

    def predict(self, X, lengths=None) -> np.ndarray:
        """Predicted labels (N,), values of `classes_`."""
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X, lengths).argmax(1)]

    def attention(self, X, lengths=None) -> list[np.ndarray]:
        """Attention weights per clip: N arrays (T_i, heads), each column summing to 1."""
        check_is_fitted(self)
        packed = self._packed(X, lengths)
        dev = next(self.model_.parameters()).device
        packed = _to_device(packed, dev)
        out: list[np.ndarray | None] = [None] * len(packed)
        with torch.no_grad(), _threads(self.threads):
            for a in range(0, len(packed), self.batch_size):
                rows = np.arange(a, min(a + self.batch_size, len(packed)))
                xs, mask = packed.batch(rows, dev)
                _, att = self.model_.attend(xs, mask)
                for j, r in enumerate(rows):
                    out[r] = att[j, :, :packed.length[r]].T.cpu().numpy()
        return out


def _to_device(packed: Packed, dev: torch.device) -> Packed:
    """Frames on the training device when they fit comfortably (else batches are copied over)."""
    if dev.type != "cuda" or packed.layers[0].device == dev:
        return packed
    need = sum(x.numel() * x.element_size() for x in packed.layers)
    free, _ = torch.cuda.mem_get_info(dev)
    return packed.to(dev) if need < 0.5 * free else packed


def _batches(length: np.ndarray, batch_size: int, rng: np.random.Generator):
    """Shuffled batches of row indices, clips of similar length together (less padding)."""
    order = rng.permutation(len(length))
    pool = batch_size * 16
    batches = []
    for a in range(0, len(order), pool):
        chunk = order[a:a + pool]
        chunk = chunk[np.argsort(length[chunk], kind="stable")]
        batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
    for i in rng.permutation(len(batches)):
        yield batches[i]


def _train_head(est, packed: Packed, val_packed: Packed | None, *, outputs: int, target: torch.Tensor, loss_fn,
                validate, score_name: str, seed: int, dev: torch.device) -> float | None:
    """Train an `AttentionHead` with `outputs` outputs for `est` (`AttentionProbe` or
    `AttentionRegressorProbe`): the one training loop of both, so they cannot drift apart.

    target: (N,) class codes or (N, T) standardised targets on `dev`, rows as `packed`'s; loss_fn(out, target
    rows) -> scalar loss; validate(out of the whole of `val_packed`) -> (score, loss), higher score better,
    ties to the lower loss; score_name: its key in `history_`. AdamW, batches of similar length from a
    numpy generator seeded `seed`, torch seeded `seed` inside `fork_rng` (the global RNG left as it was);
    with `val_packed`, early stopping after `est.patience` epochs without a better score and the best
    epoch's weights restored. Sets est.best_epoch_, history_, n_epochs_, model_ (eval mode) and
    layer_weights_; returns the best validation score (None without validation).
    """
    moved = _to_device(packed, dev)
    if val_packed is not None:  # subsets of one Packed share its tensors: move them once
        val_packed = (Packed(moved.layers, val_packed.start, val_packed.length)
                      if val_packed.layers is packed.layers else _to_device(val_packed, dev))
    packed = moved
    rng = np.random.default_rng(seed)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        mean, std = _frame_stats(packed)
        model = AttentionHead(len(packed.layers), packed.dim, outputs, est.hidden, est.heads, est.dropout,
                              mean, std).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=est.lr, weight_decay=est.weight_decay)
        best = (-np.inf, np.inf)
        best_state, est.best_epoch_, since, est.history_ = None, 0, 0, []
        for epoch in range(1, est.max_epochs + 1):
            model.train()
            total = torch.zeros((), dtype=torch.float64, device=dev)  # summed on the device: no sync per step
            for rows in _batches(packed.length, est.batch_size, rng):
                xs, length = packed.frames(rows, dev)
                loss = loss_fn(model.forward_frames(xs, length), target[torch.as_tensor(rows, device=dev)])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(rows)
            entry = {"epoch": epoch, "train_loss": float(total) / len(packed)}
            if val_packed is not None:
                v_score, v_loss = validate(_logits(model, val_packed, dev))
                entry.update({"val_loss": v_loss, score_name: v_score})
                if (v_score, -v_loss) > (best[0], -best[1]):
                    best, est.best_epoch_, since = (v_score, v_loss), epoch, 0
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                else:
                    since += 1
            est.history_.append(entry)
            if val_packed is not None and since >= est.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            est.best_epoch_ = len(est.history_)
    est.n_epochs_ = len(est.history_)
    est.model_ = model.eval()
    est.layer_weights_ = model.layer_weights().detach().cpu().numpy()
    return None if val_packed is None else float(best[0])


def _logits(model: AttentionHead, packed: Packed, dev: torch.device, frames: int = 1 << 14) -> torch.Tensor:
    """(N, C) logits in row order, eval mode, no autograd; batches of up to `frames` frames, by length."""
    was_training = model.training
    model.eval()
    order = np.argsort(packed.length, kind="stable")
    ends = np.cumsum(packed.length[order])
    out = torch.empty(len(packed), model.out.out_features, dtype=model.out.weight.dtype, device=dev)
    with torch.inference_mode():
        a = 0
        while a < len(order):
            b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + frames, side="right")))
            rows = order[a:b]
            out[torch.as_tensor(rows, device=dev)] = model.forward_frames(*packed.frames(rows, dev))
            a = b
    model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# fold runner
# ---------------------------------------------------------------------------------------------

def _load(source, utterances: Sequence[Utterance], rows: np.ndarray, layers: Sequence[int]) -> list[np.ndarray]:
    """Frames of `rows`: list of (T, L, D) arrays, from a FeatureStore or a per-utterance sequence."""
    if hasattr(source, "frames") and hasattr(source, "frame_layers"):
        missing = [k for k in layers if k % source.num_layers not in source.frame_layers]
        if missing:
            raise AttentionError(f"layers {missing} have no frame-level features in this store (it has "
                                 f"{source.frame_layers or 'none'}); re-extract with --frames, or pick those layers")
        return [np.stack([source.frames(k, int(i)) for k in layers], axis=1) for i in rows]
    if len(source) != len(utterances):
        raise AttentionError(f"{len(source)} frame arrays for {len(utterances)} utterances")
    out = []
    for i in rows:
        f = np.asarray(source[int(i)])
        if f.ndim == 2:
            f = f[:, None, :]
        if f.ndim != 3:
            raise AttentionError(f"utterance {utterances[int(i)].id}: frames must be (T, D) or (T, L, D), got {f.shape}")
        out.append(f if layers is None or f.shape[1] == len(layers) else f[:, list(layers)])
    return out


def layer_key(layers: Sequence[int]) -> int | str:
    """The `layer` value of a record: the layer itself, or "a+b+c" for a learned mix of layers."""
    return int(layers[0]) if len(layers) == 1 else "+".join(str(int(k)) for k in layers)


def probe_attention(source, utterances: Sequence[Utterance], folds: Sequence, layers: Sequence[int] | int = (-1,), *,
                    seeds: Sequence[int] = (0,), mix_layers: bool = False, val_fraction: float = 0.15,
                    shuffle_labels: bool = False, train_set: str = "", test_set: str = "", policy: str | None = None,
                    shared: set[str] | None = None, progress=None, **params):
    """Speaker-independent evaluation of `AttentionProbe` over `folds`, one record per (layer, fold, seed).

    source: a `FeatureStore` with frame-level features of `layers`, or a sequence of N frame
    arrays aligned with `utterances`, each (T, D) or (T, L, D) (then `layers` names the stored
    layers, for the records; a (T, L, D) array with L > len(layers) is indexed by `layers`).
    mix_layers: False = a sweep, one head per layer (records per layer, as `probe_layers`);
    True = one head over the learned softmax mix of all `layers` (SUPERB-style weighted sum).
    folds: `featstore.folds.Fold`s; validation (early stopping) uses fold.val when set, else whole
    training speakers drawn by `validation_split(fraction=val_fraction, seed=seed)`.
    Labels are harmonised by `classifiers.results.records.harmonise(policy, shared)`, as for every probe.
    shuffle_labels permutes the training and validation labels (scores must fall to chance).
    params: `AttentionProbe` hyper-parameters (seed is set per run). progress: called per fit.
    Returns `ProbeResults` of `classifiers.results.records.make_record` records (classifier="attention")
    plus layers, n_val, best_epoch, epochs, layer_weights, seconds. `layer` is
    `layer_key(layers)`; n_train counts the rows trained on (validation excluded).
    """
    from classifiers.results.predictions import block
    from classifiers.results.records import ProbeResults, harmonise, make_record
    from featstore.folds import validation_split

    layers = [layers] if isinstance(layers, int) else list(layers)
    if hasattr(source, "num_layers"):
        layers = [k % source.num_layers if -source.num_layers <= k < source.num_layers else k for k in layers]
    used = np.unique(np.concatenate([np.concatenate([f.train, f.test] + ([] if f.val is None else [f.val]))
                                     for f in folds])).astype(np.int64)
    packed_all = pack_frames(_load(source, utterances, used, layers)).with_sums()  # every fold's statistics in one pass
    packed_all = _to_device(packed_all, resolve_device(params.get("device", "auto")))
    where = np.full(len(utterances), -1, dtype=np.int64)
    where[used] = np.arange(len(used))
    labels = np.asarray([u.label for u in utterances], dtype=object)
    results = ProbeResults(meta={"classifier": "attention", "layers": layers, "mix_layers": mix_layers,
                                 "seeds": list(seeds), "val_fraction": val_fraction,
                                 "params": AttentionProbe(**params).get_params()})
    runs = [layers] if mix_layers or len(layers) == 1 else [[k] for k in layers]
    for run_layers, seed in [(r, s) for r in runs for s in seeds]:
        frames = packed_all.select([layers.index(k) for k in run_layers])
        rng = np.random.default_rng(seed)
        for f in folds:
            t0 = time.perf_counter()
            if f.val is not None:
                train, val = np.asarray(f.train), np.asarray(f.val)
            else:
                train, val = validation_split(utterances, f.train, fraction=val_fraction, seed=seed)
            y = labels.copy()
            if shuffle_labels:
                learn = np.concatenate([train, val])
                y[learn] = rng.permutation(y[learn])
            h = harmonise(y, train, f.test, policy=policy, shared=shared)
            results.add(f.name, h)
            val = val[np.isin(y[val], h.classes)] if policy == "shared" else val
            est = AttentionProbe(**{**params, "random_state": seed})
            est._fit_packed(frames.subset(where[h.train]), y[h.train], frames.subset(where[val]), y[val])
            proba = est.predict_proba(frames.subset(where[h.test]))
            y_pred = est.classes_[proba.argmax(1)]
            results.predictions.append(block(utterances, h.test, y_pred, proba=proba, classes=list(est.classes_),
                                             labels=y[h.test], layer=layer_key(run_layers), fold=f.name, seed=seed,
                                             classifier="attention", train_set=train_set, test_set=test_set))
            results.records.append(make_record(
                layer=layer_key(run_layers), fold=f.name, y_true=y[h.test], y_pred=y_pred,
                labels=h.scored, n_train=len(h.train), classifier="attention", seed=seed, train_set=train_set,
                test_set=test_set, shuffled=shuffle_labels, C=None, classes=policy or "train", layers=run_layers,
                n_val=len(val), best_epoch=est.best_epoch_, epochs=est.n_epochs_,
                layer_weights=est.layer_weights_.round(4).tolist(), seconds=round(time.perf_counter() - t0, 3)))
            if progress:
                progress()
    return results


# ---------------------------------------------------------------------------------------------
# the regression head (dimensional emotion, issue 25)
# ---------------------------------------------------------------------------------------------

def ccc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - CCC per output, averaged over outputs: pred, target (B, T), moments over the batch
    (population, as `classifiers.estimators.regression.ccc`), the loss of the Odyssey 2024 baselines."""
    mp, my = pred.mean(0), target.mean(0)
    dp, dy = pred - mp, target - my
    cov = (dp * dy).mean(0)
    den = (dp * dp).mean(0) + (dy * dy).mean(0) + (mp - my) ** 2
    return (1 - 2 * cov / (den + eps)).mean()


REGRESSION_LOSSES = ("mse", "ccc")


class AttentionRegressorProbe(RegressorMixin, BaseEstimator):
    """`AttentionProbe`'s attention pooling over frames with a regression head: T outputs (arousal,
    valence, dominance, ...) instead of class logits.

    The module is `AttentionHead` with T outputs; the targets are standardised with the training
    rows' mean and std (so one learning rate suits any scale) and predictions mapped back. The loss
    is the mean squared error of the standardised targets (`loss="mse"`) or 1 - CCC per output,
    averaged (`loss="ccc"`, `ccc_loss`, over each batch). Early stopping on the validation rows'
    mean CCC over outputs (ties: the lower validation MSE), from held-out speakers as for the
    classifier: `val=` (clips and targets of speakers not in the training rows), or `groups=`
    (speaker per clip: whole speakers drawn by `classifiers.estimators.regression.speaker_validation`, as
    `XGBRegressorProbe` draws them); with neither, `max_epochs` without early stopping.
    Seeded and deterministic on CPU; the global torch RNG is left as it was.

    X is clips (N arrays (T_i, D) or (T_i, L, D), a padded (N, T, D) / (N, T, L, D) array with
    `lengths`, or a `Packed`), or a 2-D (N, D) matrix of one-frame clips: on such matrices the
    estimator passes scikit-learn's `check_estimator` (tests/test_regressors.py), whose checks feed
    2-D arrays only; the frame path is tested with the same API (fit, predict, get_params, clone).

    Hyper-parameters (keyword-only, stored as given, validated by `fit`): hidden, heads, dropout,
    lr, weight_decay, batch_size, max_epochs, patience, val_fraction, random_state, device,
    threads (as `AttentionProbe`), and loss ("mse" or "ccc").

    Fitted attributes: n_features_in_ (D), n_outputs_ (T), layer_weights_ (L,), y_mean_ and
    y_scale_ (T,), best_epoch_, n_epochs_, history_ (one dict per epoch: epoch, train_loss,
    val_loss (MSE of the standardised targets), val_ccc), val_ccc_ (None without validation).
    """

    _parameter_constraints: dict = {
        **{k: v for k, v in AttentionProbe._parameter_constraints.items() if k not in ("class_weight", "seed")},
        "loss": [StrOptions(set(REGRESSION_LOSSES))],
    }

    def __init__(self, *, hidden: int = 128, heads: int = 4, dropout: float = 0.1, lr: float = 5e-3,
                 weight_decay: float = 1e-2, batch_size: int = 16, max_epochs: int = 40, patience: int = 10,
                 loss: str = "mse", val_fraction: float = 0.15, random_state: int = 0, device: str = "auto",
                 threads: int | None = None):
        self.hidden = hidden
        self.heads = heads
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.loss = loss
        self.val_fraction = val_fraction
        self.random_state = random_state
        self.device = device
        self.threads = threads

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.non_deterministic = False
        return tags

    _is_clips = staticmethod(AttentionProbe._is_clips)
    _packed = AttentionProbe._packed
    _outputs = AttentionProbe._outputs

    @staticmethod
    def _targets(y, n: int) -> np.ndarray:
        """(n, T) float64 targets of clips, checked."""
        Y = np.asarray(y, dtype=np.float64)
        if Y.ndim not in (1, 2) or len(Y) != n:
            raise AttentionError(f"{n} clips need targets of shape ({n},) or ({n}, outputs), got {Y.shape}")
        if not np.isfinite(Y).all():
            raise AttentionError("targets hold NaN or infinite values: drop those clips first")
        return Y

    def fit(self, X, y, groups: Sequence | None = None, val: tuple | None = None,
            lengths=None) -> AttentionRegressorProbe:
        """Fit on clips `X` (see the class docstring) and targets y (N,) or (N, T); groups (N,):
        speaker per clip, to draw validation speakers when `val` is not given; val: (X_val, y_val)
        or (X_val, y_val, lengths_val), speakers disjoint from the training clips'."""
        from classifiers.estimators.regression import speaker_validation

        self._validate_params()
        if self._is_clips(X):
            packed = pack_frames(X, lengths)
            y = self._targets(y, len(packed))
        else:
            X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True)
            packed = pack_frames(X[:, None, :])
        self._one_d = y.ndim == 1
        Y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        val_packed = y_val = None
        if val is not None:
            val_packed = (pack_frames(val[0], val[2] if len(val) > 2 else None) if self._is_clips(val[0])
                          else pack_frames(np.asarray(val[0], dtype=np.float32)[:, None, :]))
            y_val = self._targets(val[1], len(val_packed)).reshape(len(val_packed), -1)
            if y_val.shape[1] != Y.shape[1]:
                raise AttentionError(f"validation targets have {y_val.shape[1]} output(s), the training ones {Y.shape[1]}")
        elif groups is not None and self.patience:
            split = speaker_validation(groups, len(Y), self.val_fraction, self.random_state)
            if split is not None:
                tr, va = split
                val_packed, y_val = packed.subset(va), Y[va]
                packed, Y = packed.subset(tr), Y[tr]
        with _threads(self.threads):
            return self._fit(packed, Y, val_packed, y_val)

    def _fit(self, packed: Packed, Y: np.ndarray, val_packed: Packed | None, y_val: np.ndarray | None):
        from classifiers.estimators.regression import ccc

        self.n_features_in_ = packed.dim
        self.n_outputs_ = Y.shape[1]
        self.y_mean_ = Y.mean(0)
        sd = Y.std(0)
        self.y_scale_ = np.where(sd > 1e-12 * np.maximum(1.0, np.abs(self.y_mean_)), sd, 1.0)
        seed = int(self.random_state)
        dev = resolve_device(self.device)
        z = torch.as_tensor((Y - self.y_mean_) / self.y_scale_, dtype=torch.float32, device=dev)
        zv = None if val_packed is None else (y_val - self.y_mean_) / self.y_scale_

        def validate(out: torch.Tensor) -> tuple[float, float]:
            pv = out.double().cpu().numpy()
            return float(np.mean(ccc(zv, pv))), float(((pv - zv) ** 2).mean())

        self.val_ccc_ = _train_head(self, packed, val_packed, outputs=self.n_outputs_, target=z,
                                    loss_fn=ccc_loss if self.loss == "ccc" else nn.functional.mse_loss,
                                    validate=validate, score_name="val_ccc", seed=seed, dev=dev)
        return self

    def predict(self, X, lengths=None) -> np.ndarray:
        """(N,) or (N, T) predictions, as the training targets' shape, on their scale.

        Computed in float64 (a float64 copy of the trained head): scikit-learn wants float64 predictions,
        and a float32 forward would give them digits that move with the batch a clip is computed in."""
        check_is_fitted(self)
        z = self._outputs(X, lengths, lambda out: out, model=copy.deepcopy(self.model_).double())
        pred = z * self.y_scale_ + self.y_mean_
        return pred[:, 0] if self._one_d else pred
