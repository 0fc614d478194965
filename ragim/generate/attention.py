"""AttentionGenerator: the RAG-IM hypernetwork.

The query is the target description's embedding. Keys are the neighbours'
[parameters ‖ description embedding ‖ similarity]; values are their parameters.
Several multi-head cross-attention blocks with bottleneck residual updates
refine the query token; a final attention read-out gives one weight per
neighbour, and the generated parameters are the weighted mean of the
neighbours' parameters plus a learned correction from the query token::

    theta = sum_j alpha_j * theta_j + W_out h        (in standardised parameter space)

When the target has its own fitted model (few-shot), a learned gate mixes it in.

Provenance (``metadata["provenance"]``) says which tasks shaped the returned parameters, and
how much. Without a base model it is the read-out's attention weights. With one (below) the
model is the base moved a share ``move`` (``metadata["base"]["move"]``, the gate's mean over
the parameters) towards the attention mixture, so each task's weight is ``(1 - move)`` times
its weight in the base model's provenance plus ``move`` times its attention weight: with a
gate that barely opens, the base model's tasks dominate.

Intervals (``std`` and ``correlation`` of the generated :class:`~ragim.params.ModelParams`):

* ``base="statistical"`` (the default): the generated model is the statistical generator's
  model plus a learned move (the gated step towards the mixture and, with ``residual``, the
  correction ``W_out h``), so its errors are the base model's plus the move's. ``std`` is
  ``sqrt(base SD**2 + move SD**2)``: the base model's predictive SDs (what the index does not
  say about a new task, calibrated on held-out tasks), plus the spread of the generated
  parameters when the neighbours are resampled with the base held fixed (a neighbour
  bootstrap, ``n_bootstrap`` draws; none with a single neighbour). ``correlation`` is the base
  model's, with the move's variance added on the diagonal. The intervals are never narrower
  than the base model's, whether or not the network moved away from it.
* ``base="none"``: ``std`` is None (no interval). A mixture of neighbours' point estimates
  has no estimate of how far a new task departs from them; the spread of the mixture under
  resampling the neighbours is near zero whenever they agree (subgroups of one cohort), and
  would pass for certainty.

Training is episodic: each index task is a target whose neighbours are
retrieved with the task itself (and every task sharing its patients) excluded,
and the loss is the binary cross-entropy on the target's own rows. Validation
tasks give early stopping.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> from ragim.generate.attention import AttentionGenerator, AttentionConfig
>>> tasks = datasets.synthetic_family(n_tasks=40, n_features=4, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = AttentionGenerator(AttentionConfig(max_epochs=5)).fit(index, progress=False)
>>> model = gen.generate(tasks.descriptions[0], exclude=[tasks.ids[0]])
>>> len(model.provenance) > 0
True
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ragim.checks import check_bool, check_int, check_number, setting
from ragim.generate.base import (
    check_task_index,
    mix_provenance,
    provenance_records,
    record_fit_state,
    register_generator,
)
from ragim.generate.hypernetwork import HypernetworkConfig, HypernetworkGenerator
from ragim.params import ModelParams, std_and_correlation

FORMAT = "ragim.attention-generator"
BASES = ("statistical", "none")


#: the most neighbour bootstrap draws a config may ask for (each draw runs the network once)
MAX_BOOTSTRAP = 10_000


@dataclass
class AttentionConfig(HypernetworkConfig):
    """Hyper-parameters of the RAG-IM hypernetwork and its episodic training (``k``,
    ``hidden``, ``heads``, ``blocks``, ``seed`` and ``device`` as
    :class:`~ragim.generate.hypernetwork.HypernetworkConfig`)."""

    bottleneck: int = setting(16, "width of the residual bottleneck")
    dropout: float = setting(0.1, "dropout in the blocks")
    query_dropout: float = setting(0.5, "dropout on the query embedding (against memorising tasks)")
    residual: bool = setting(False, "add a learned per-task correction W_out h to the output")
    base: str = setting(
        "statistical",
        "'statistical': start from the StatisticalGenerator's model and learn a gated move "
        "towards the attention mixture plus a correction (it can leave the neighbours' "
        "hull); 'none': the paper-style mixture of neighbours",
    )
    precision_key: bool = setting(
        True,
        "add each neighbour's fit precision (log of its effective sample size n p (1 - p)) "
        "to its key",
    )
    lr: float = setting(3e-3, "AdamW learning rate")
    weight_decay: float = setting(1e-3, "AdamW weight decay")
    max_epochs: int = setting(300, "upper bound on training epochs")
    patience: int = setting(30, "epochs without validation improvement before stopping")
    batch_tasks: int = setting(64, "target tasks per optimisation step")
    max_rows: int = setting(512, "rows per target task and step (subsampled)")
    val_fraction: float = setting(0.2, "share of tasks held out for early stopping")
    neighbor_dropout: float = setting(0.1, "share of neighbours hidden per episode")
    n_bootstrap: int = setting(
        32,
        "neighbour bootstrap draws for the uncertainty of the move away from the base model "
        "(added to the base model's SDs; base='statistical' only)",
    )

    def field_rules(self, problems: list[str]) -> dict[str, Any]:
        if self.base not in BASES:
            problems.append(f"base must be one of {list(BASES)}, got {self.base!r}")
        ints = ("bottleneck", "max_epochs", "patience", "batch_tasks", "max_rows", "n_bootstrap")
        fractions = ("dropout", "query_dropout", "val_fraction", "neighbor_dropout")
        return {
            **dict.fromkeys(ints, partial(check_int, ge=1)),
            "n_bootstrap": partial(check_int, ge=1, le=MAX_BOOTSTRAP),
            **dict.fromkeys(fractions, partial(check_number, ge=0, lt=1)),
            "lr": partial(check_number, gt=0),
            "weight_decay": partial(check_number, ge=0),
            "precision_key": check_bool,
            "residual": check_bool,
        }


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, bottleneck: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, bottleneck),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(bottleneck, hidden),
        )
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, h, keys, values, pad_mask):
        a, w = self.attn(
            h,
            keys,
            values,
            key_padding_mask=pad_mask,
            need_weights=True,
            average_attn_weights=False,
        )
        h = self.norm1(h + a)
        return self.norm2(h + self.ff(h)), w


class RagimHypernetwork(nn.Module):
    """Cross-attention from a description embedding to neighbour models (see module docstring)."""

    def __init__(self, n_params: int, emb_dim: int, cfg: AttentionConfig):
        super().__init__()
        h = cfg.hidden
        self.q_in = nn.Linear(emb_dim, h)
        self.n_features = 3 if cfg.precision_key else 2
        self.k_in = nn.Linear(n_params + emb_dim + self.n_features, h)
        self.v_in = nn.Linear(n_params, h)
        self.blocks = nn.ModuleList(
            _Block(h, cfg.heads, cfg.bottleneck, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.read_q = nn.Linear(h, h)
        self.read_k = nn.Linear(h, h)
        self.sim_scale = nn.Parameter(torch.tensor(5.0))
        self.size_weight = nn.Parameter(torch.tensor(0.0))
        self.shrink = nn.Parameter(torch.zeros(n_params))
        self.shift = nn.Parameter(torch.zeros(n_params))
        self.out_drop = nn.Dropout(cfg.dropout)
        self.q_drop = nn.Dropout(cfg.query_dropout)
        self.out = nn.Linear(h, n_params)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.gate = nn.Linear(h + 1, 1)
        self.residual = cfg.residual
        # how far each parameter moves from the base model towards the attention mixture:
        # sigmoid(-4) = 0.02, so training starts at the base
        self.base_gate = nn.Parameter(torch.full((n_params,), -4.0))

    def forward(self, q, nb_params, nb_emb, nb_feat, pad_mask, own=None, own_n=None, base=None):
        """Shapes: q (B,E); nb_params (B,K,P); nb_emb (B,K,E); nb_feat (B,K,F) = [similarity,
        log rows / 5, (log effective rows / 5)]; pad_mask (B,K) True = absent; base (B,P), the
        base model in the same standardised parameter space, or None."""
        keys = self.k_in(torch.cat([nb_params, nb_emb, nb_feat], dim=-1))
        values = self.v_in(nb_params)
        x = self.q_in(self.q_drop(q)).unsqueeze(1)
        head_w = None
        for blk in self.blocks:
            x, head_w = blk(x, keys, values, pad_mask)
        x = x.squeeze(1)
        logits = (self.read_k(keys) @ self.read_q(x).unsqueeze(-1)).squeeze(-1) / math.sqrt(
            x.shape[-1]
        )
        logits = logits + self.sim_scale * nb_feat[..., 0] + self.size_weight * nb_feat[..., 1]
        logits = logits.masked_fill(pad_mask, float("-inf"))
        alpha = torch.softmax(logits, dim=-1)
        pooled = (alpha.unsqueeze(-1) * nb_params).sum(1)
        theta = pooled * (1 + self.shrink) + self.shift
        if base is not None:
            theta = base + torch.sigmoid(self.base_gate) * (theta - base)
        if self.residual:
            theta = theta + self.out(self.out_drop(x))
        if own is not None:
            g = torch.sigmoid(self.gate(torch.cat([x, torch.log1p(own_n).unsqueeze(-1)], dim=-1)))
            theta = g * theta + (1 - g) * own
        return theta, alpha, head_w


def _add_variance(
    std: np.ndarray | None, correlation: np.ndarray | None, var: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(std, correlation)`` of a model whose errors are those of a model with ``std`` and
    ``correlation`` (None: independent) plus independent ones of variance ``var`` (P,);
    ``(None, None)`` when ``std`` is None (nothing to add to).

    >>> s, r = _add_variance(np.array([3.0, 4.0]), np.array([[1.0, 0.5], [0.5, 1.0]]),
    ...                      np.array([16.0, 0.0]))
    >>> s.tolist(), round(float(r[0, 1]), 4)
    ([5.0, 4.0], 0.3)
    >>> _add_variance(np.array([3.0]), None, np.array([16.0]))[0].tolist()
    [5.0]
    """
    if std is None:
        return None, None
    std = np.asarray(std, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    if correlation is None:
        return np.sqrt(std**2 + var), None
    cov = np.asarray(correlation, dtype=np.float64) * np.outer(std, std)
    cov[np.diag_indices_from(cov)] += var
    return std_and_correlation(cov)


@dataclass
class _Episodes:
    q: torch.Tensor  # (T, E)
    nb_rows: np.ndarray  # (T, K) index rows, -1 = none
    nb_sim: np.ndarray  # (T, K)
    D: torch.Tensor  # (R, P-1) design rows of all tasks, concatenated
    y: torch.Tensor  # (R,)
    start: np.ndarray  # (T,) first row of each task in D
    count: np.ndarray  # (T,) rows per task
    base: torch.Tensor | None = None  # (T, P) each target's base model (standardised), leak-free

    def rows(self, b: np.ndarray, max_rows: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers for the tasks ``b`` (subsampled to ``max_rows`` when ``rng``) and
        the position in ``b`` each row belongs to."""
        parts, owner = [], []
        for j, t in enumerate(b):
            r = np.arange(self.start[t], self.start[t] + self.count[t])
            if rng is not None and len(r) > max_rows:
                r = rng.choice(r, max_rows, replace=False)
            parts.append(r)
            owner.append(np.full(len(r), j))
        return np.concatenate(parts), np.concatenate(owner)


@register_generator("attention")
class AttentionGenerator(HypernetworkGenerator):
    """RAG-IM hypernetwork generator.

    :meth:`generate_params` takes ``uncertainty=True``: with ``base="statistical"`` a SD per
    coefficient in ``std`` (and ``correlation``), the base model's predictive SDs plus a
    neighbour-bootstrap SD of the move away from it; with ``base="none"`` ``std`` is None (see
    the module docstring); ``metadata["provenance"]`` weighs the base model's tasks by how
    little the gate moved it (the module docstring). Saving and loading:
    :class:`~ragim.generate.hypernetwork.HypernetworkGenerator`
    (the artifact also holds the statistical base generator under ``base/``).

    Parameters
    ----------
    config : :class:`AttentionConfig`; keyword overrides are accepted too
        (``AttentionGenerator(k=5, max_epochs=100)``).
    """

    FORMAT = FORMAT
    config_class = AttentionConfig
    block_lists = ("net.blocks",)

    def __init__(self, config: AttentionConfig | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.base_ = None

    # ------------------------------------------------------------------ data
    def _neighbors(self, index, vectors: np.ndarray, excludes, k: int):
        scores, rows = [], []
        hits = index.search_vectors(vectors, k, exclude=excludes)
        for hs in hits:
            r = [index.row(h.task_id) for h in hs] + [-1] * (k - len(hs))
            s = [h.score for h in hs] + [0.0] * (k - len(hs))
            rows.append(r)
            scores.append(s)
        return np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def _batch_inputs(self, nb_rows: np.ndarray, nb_sim: np.ndarray):
        dev = self._device
        P = self._norm_params  # (N, P) standardised
        E = self._embeddings  # (N, E)
        safe = np.where(nb_rows < 0, 0, nb_rows)
        pad = torch.as_tensor(nb_rows < 0, device=dev)
        nbp = torch.as_tensor(P[safe], dtype=torch.float32, device=dev)
        nbe = torch.as_tensor(E[safe], dtype=torch.float32, device=dev)
        cols = [nb_sim, self._log_rows[safe]] + (
            [self._log_info[safe]] if self.config.precision_key else []
        )
        feat = np.stack(cols, axis=-1)
        return nbp, nbe, torch.as_tensor(feat, dtype=torch.float32, device=dev), pad

    def _prepare(self, index):
        from ragim.index import leak_free

        ids = self.episode_ids(index)
        self._stack_index(index)
        k = min(self.config.k, len(index) - 1)
        records = [index.record(t) for t in ids]
        vecs = self._embeddings[[index.row(t) for t in ids]]
        nb_rows, nb_sim = self._neighbors(index, vecs, [leak_free(r) for r in records], k)
        usable = self.usable_episodes(ids, nb_rows)
        ids, vecs, nb_rows, nb_sim = (
            [t for t, u in zip(ids, usable, strict=True) if u],
            vecs[usable],
            nb_rows[usable],
            nb_sim[usable],
        )
        D, y, start, count = self.episode_rows(index, ids)
        dev = self._device
        base = None
        if (
            self.base_ is not None
        ):  # each target's base model, as the base generator makes it without the target
            held = self.base_.heldout_params_
            rows = [
                held[t]
                if t in held
                else self.base_.generate_params(
                    index.record(t)["description"],
                    index,
                    uncertainty=False,
                    exclude=leak_free(index.record(t)),
                ).vector
                for t in ids
            ]
            base = torch.as_tensor(
                (np.asarray(rows) - self.param_mean_) / self.param_scale_,
                dtype=torch.float32,
                device=dev,
            )
        return ids, _Episodes(
            torch.as_tensor(vecs, dtype=torch.float32, device=dev),
            nb_rows,
            nb_sim,
            D,
            y,
            start,
            count,
            base,
        )

    def _stack_index(self, index):
        from ragim.device import resolve_device

        self._device = resolve_device(self.config.device)
        raw = index.row_params.astype(np.float32)
        if self.net_ is None or not hasattr(self, "param_mean_"):
            self.param_mean_ = raw.mean(0)
            self.param_scale_ = np.maximum(raw.std(0), 0.05).astype(np.float32)
        self._norm_params = (raw - self.param_mean_) / self.param_scale_
        self._embeddings = index.store.reconstruct_all().astype(np.float32)
        stats = [(r or {}).get("stats", {}) for r in index.row_records]
        n_rows = np.asarray([st.get("n_rows") or 0 for st in stats], dtype=np.float32)
        n_pos = np.asarray([st.get("n_positive") or 0 for st in stats], dtype=np.float32)
        self._log_rows = (np.log1p(n_rows) / 5.0).astype(np.float32)
        # the fit's precision: the effective sample size of a logistic fit, n p (1 - p)
        info = n_pos * (n_rows - n_pos) / np.maximum(n_rows, 1.0)
        self._log_info = (np.log1p(info) / 5.0).astype(np.float32)

    # ------------------------------------------------------------------ training
    refit_command = "train a new one on it: ragim train attention --index INDEX --out NEW-GENERATOR"

    def fit(self, index, *, progress: bool = True, base_generator=None) -> AttentionGenerator:
        """Train episodically on the tasks of ``index`` (see module docstring).

        With ``config.base == "statistical"`` a
        :class:`~ragim.generate.statistical.StatisticalGenerator` is fitted on the index first (or
        ``base_generator``, one already fitted on it, is used); every episode starts from its
        leak-free validation model of the target, and the network learns how far to move from it
        (early stopping keeps the base when moving does not help).
        """
        from tqdm.auto import tqdm

        check_task_index(index)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self.net_ = None
        self.base_ = None
        if cfg.base == "statistical":
            if base_generator is None or getattr(base_generator, "index_", None) is not index:
                from ragim.generate.statistical import StatisticalGenerator

                base_generator = StatisticalGenerator(seed=cfg.seed).fit(index, progress=False)
            self.base_ = base_generator
        ids, ep = self._prepare(index)
        n = len(ids)
        n_val = max(1, int(round(cfg.val_fraction * n))) if n >= 5 else 0
        order = rng.permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        record_fit_state(self, index)
        net = RagimHypernetwork(len(self.param_names_), ep.q.shape[1], cfg).to(self._device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scale = torch.as_tensor(self.param_scale_, device=self._device)
        mean = torch.as_tensor(self.param_mean_, device=self._device)
        self.history_ = []
        net.eval()
        with torch.no_grad():  # the untrained network: a similarity-weighted neighbour mean
            best = (
                float(self._episode_loss(net, ep, val, ep.nb_rows[val], mean, scale, None))
                if len(val)
                else math.inf
            )
        self.initial_val_loss_ = best
        best_state, bad_epochs = copy.deepcopy(net.state_dict()), 0
        t0 = time.perf_counter()
        bar = tqdm(
            range(cfg.max_epochs),
            desc="train attention generator",
            disable=None if progress else True,
            leave=False,
        )
        for epoch in bar:
            net.train()
            perm = rng.permutation(train)
            losses = []
            for start in range(0, len(perm), cfg.batch_tasks):
                b = perm[start : start + cfg.batch_tasks]
                nb_rows = ep.nb_rows[b].copy()
                if cfg.neighbor_dropout > 0:
                    drop = rng.random(nb_rows.shape) < cfg.neighbor_dropout
                    drop[:, 0] = False  # always keep at least one neighbour
                    nb_rows[drop] = -1
                loss = self._episode_loss(net, ep, b, nb_rows, mean, scale, rng)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 5.0)
                opt.step()
                losses.append(loss.item())
            net.eval()
            with torch.no_grad():
                vloss = (
                    float(self._episode_loss(net, ep, val, ep.nb_rows[val], mean, scale, None))
                    if len(val)
                    else float(np.mean(losses))
                )
            self.history_.append(
                {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": vloss}
            )
            bar.set_postfix(train=f"{np.mean(losses):.4f}", val=f"{vloss:.4f}")
            if vloss < best - 1e-5:
                best, best_state, bad_epochs = vloss, copy.deepcopy(net.state_dict()), 0
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.net_ = net
        self.index_ = index
        self.train_seconds_ = time.perf_counter() - t0
        self.best_val_loss_ = best
        self.n_train_tasks_, self.n_val_tasks_ = len(train), len(val)
        return self

    def _episode_loss(self, net, ep: _Episodes, b: np.ndarray, nb_rows, mean, scale, rng):
        """Mean over the tasks ``b`` of each task's mean binary cross-entropy on its own rows."""
        dev = self._device
        nbp, nbe, sim, pad = self._batch_inputs(nb_rows, ep.nb_sim[b])
        theta_n, _, _ = net(
            ep.q[b], nbp, nbe, sim, pad, base=None if ep.base is None else ep.base[b]
        )
        theta = theta_n * scale + mean
        rows, owner = ep.rows(b, self.config.max_rows, rng)
        rows_t, owner_t = torch.as_tensor(rows, device=dev), torch.as_tensor(owner, device=dev)
        th = theta[owner_t]
        logit = th[:, 0] + (ep.D[rows_t] * th[:, 1:]).sum(1)
        bce = nn.functional.binary_cross_entropy_with_logits(logit, ep.y[rows_t], reduction="none")
        per_task = torch.zeros(len(b), device=dev).index_add_(0, owner_t, bce)
        counts = torch.bincount(owner_t, minlength=len(b)).clamp_min(1)
        return (per_task / counts).mean()

    # ------------------------------------------------------------------ generation
    def _is_fitted(self) -> bool:
        return self.net_ is not None

    def _generate(
        self, index, vecs: np.ndarray, items: list, single: bool, *, k, exclude, uncertainty=True
    ) -> list[ModelParams]:
        """:meth:`generate_params`: the attention mixture of each query's ``k`` neighbours
        (default ``config.k``), moved from the base model when there is one.

        ``metadata["provenance"]``: without a base model, the neighbours' attention weights;
        with one, the base model's provenance weighted by ``1 - move`` and the attention
        weights by ``move`` (:func:`~ragim.generate.base.mix_provenance`), ``move`` the gate's
        mean step from the base towards the attention mixture (``metadata["base"]["move"]``),
        so a task's weight is its share of what shaped the returned parameters (the learned
        correction ``W_out h`` is no task's). ``k`` counts the neighbours attended to.

        With ``uncertainty`` and a base model: ``std`` and ``correlation`` are the base
        model's (:meth:`StatisticalGenerator.generate_params
        <ragim.generate.statistical.StatisticalGenerator.generate_params>` with
        ``uncertainty=True``) with the variance of the move added (:meth:`_move_var`; zero
        with one neighbour). Without a base model ``std`` is None: the neighbours' point
        estimates say nothing of how far a new task departs from them."""
        if getattr(self, "_stacked_for", None) is not index or len(self._norm_params) != len(
            index.row_params
        ):
            self._stack_index(index)
            self._stacked_for = index
        k = check_int(
            k, "k", ge=1, allow_none=True, note="the attention generator needs neighbours"
        )
        uncertainty = check_bool(uncertainty, "uncertainty")
        k = min(self.config.k if k is None else int(k), len(index))
        hits = self._search(index, vecs, k, exclude)
        rows = np.full((len(hits), k), -1, dtype=np.int64)
        sims = np.zeros((len(hits), k), dtype=np.float32)
        for qi, hs in enumerate(hits):
            rows[qi, : len(hs)] = [index.row(h.task_id) for h in hs]
            sims[qi, : len(hs)] = [h.score for h in hs]
        base, made = None, None
        if self.base_ is not None:
            made = self.base_.generate_params(
                list(items), index, exclude=exclude, uncertainty=uncertainty
            )
            base = (np.stack([p.vector for p in made]) - self.param_mean_) / self.param_scale_
        theta, alpha = self._forward(vecs, rows, sims, base)
        # how far the gate moves the base towards the attention mixture (the mean over the
        # parameters of sigmoid(base_gate)): the mixture's share of the model, the base's 1 - it
        mixed = 1.0
        if made is not None:
            mixed = float(torch.sigmoid(self.net_.base_gate.detach()).mean())
        out = []
        for qi, hs in enumerate(hits):
            n = len(hs)
            std = corr = None
            if uncertainty and made is not None:
                move = (
                    self._move_var(vecs[qi], rows[qi, :n], sims[qi, :n], base[qi])
                    if n > 1
                    else np.zeros(len(theta[qi]))
                )
                std, corr = _add_variance(made[qi].std, made[qi].correlation, move)
            prov = provenance_records(hs, alpha[qi, :n])
            if made is not None:
                prov = mix_provenance(
                    [(1.0 - mixed, made[qi].metadata.get("provenance", [])), (mixed, prov)]
                )
            meta = {
                "source": "generated",
                "generator": "attention",
                "k": n,
                "provenance": prov,
            }
            if base is not None:
                meta["base"] = {"generator": "statistical", "move": round(mixed, 4)}
            out.append(
                ModelParams(
                    self.model_kind_,
                    index.schema,
                    theta[qi],
                    std=std,
                    metadata=meta,
                    correlation=corr,
                )
            )
        return out

    def _forward(
        self, q: np.ndarray, rows: np.ndarray, sims: np.ndarray, base: np.ndarray | None = None
    ):
        with torch.no_grad():
            nbp, nbe, sim, pad = self._batch_inputs(rows, sims)
            b = (
                None
                if base is None
                else torch.as_tensor(base, dtype=torch.float32, device=self._device)
            )
            theta_n, alpha, _ = self.net_(
                torch.as_tensor(q, dtype=torch.float32, device=self._device),
                nbp,
                nbe,
                sim,
                pad,
                base=b,
            )
        theta = theta_n.cpu().numpy() * self.param_scale_ + self.param_mean_
        return theta.astype(np.float64), alpha.cpu().numpy()

    def _move_var(
        self, q: np.ndarray, rows: np.ndarray, sims: np.ndarray, base: np.ndarray
    ) -> np.ndarray:
        """The variance of the generated parameters when the neighbours ``rows`` are resampled
        with replacement (``n_bootstrap`` draws) and the base model ``base`` (standardised) is
        held fixed: how unsure the learned move away from the base is, in model units. It is
        an addition to the base model's variance, never an interval on its own (when the
        network barely moves it is near zero)."""
        B, K = self.config.n_bootstrap, len(rows)
        rng = np.random.default_rng(self.config.seed)
        pick = rng.integers(0, K, size=(B, K))
        theta, _ = self._forward(
            np.repeat(q[None], B, 0), rows[pick], sims[pick], np.repeat(base[None], B, 0)
        )
        return theta.var(0)

    # ------------------------------------------------------------------ persistence
    def saved_tensors(self) -> dict[str, Any]:
        tensors = {
            f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }
        tensors["param_mean"] = torch.as_tensor(self.param_mean_)
        tensors["param_scale"] = torch.as_tensor(self.param_scale_)
        return tensors

    def extra_files(self) -> dict[str, Any]:
        base = self.base_
        return {} if base is None else {"base": lambda target: base.save(target)}

    @classmethod
    def upgrade_config(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "base" not in raw:  # saved before the base option: a mixture
            return {**raw, "base": "none", "precision_key": False}
        return raw

    def restore_net(self, saved) -> RagimHypernetwork:
        net = RagimHypernetwork(len(saved.param_names), saved.emb_dim, self.config)
        weights = {k[4:]: v for k, v in saved.tensors.items() if k.startswith("net.")}
        if self.config.base == "none":  # saved before the base option: the gate is unused
            weights.setdefault("base_gate", net.base_gate.detach().clone())
        net.load_state_dict(weights)
        self.param_mean_ = saved.tensors["param_mean"].numpy()
        self.param_scale_ = saved.tensors["param_scale"].numpy()
        return net

    def check_artifact(self, art, bad) -> None:
        n = len(self.param_names_)
        for name, arr in (("param_mean", self.param_mean_), ("param_scale", self.param_scale_)):
            if arr.shape != (n,) or not np.isfinite(arr).all():
                raise bad(
                    "model.safetensors",
                    f"{name} has shape {arr.shape} or non-finite values; state.json lists {n} "
                    "parameters",
                )
        base = self.config.base
        if (base != "none") != ("base/manifest.json" in art.files):
            raise bad(
                "config.json",
                f"base={base!r} but the artifact {'lacks' if base != 'none' else 'has'} "
                "a base/ generator",
            )
        if base == "statistical":
            from ragim.generate.statistical import StatisticalGenerator

            self.base_ = StatisticalGenerator.load(Path(art.path) / "base")
            if self.base_.param_names_ != self.param_names_:
                raise bad("base", "its parameter layout differs from the attention generator's")
