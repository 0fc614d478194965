"""``rag-im-2024``: the original RAG-IM architecture, as a named baseline.

This is the hypernetwork of Mahbub et al., "From One to Zero: RAG-IM Adapts Language
Models for Interpretable Zero-Shot Predictions on Clinical Tabular Data" (NeurIPS 2024
TRL workshop), written from the paper's description and kept as the paper has it, so
that users can reproduce the paper and see what ragim's own generators add:

* the **query** is the target description's embedding;
* the **keys** are the neighbours' parameters ‖ their description embeddings, and the
  **values** are the neighbours' parameters (each projected to ``hidden`` by a linear
  layer);
* **three attention blocks**: each is a multi-head cross-attention from the query
  token to the neighbours, followed by a bottleneck feed-forward update
  ``h <- (h + FFN(a)) / 2`` (ELU, width ``hidden / 2``);
* a **linear output** maps the last block's attention read-out ``a`` to the model's
  parameters ``W_out a``;
* an **own-model gate**: when the task has at least ``gate_rows`` (50) labelled rows
  and its own fitted model is given (few-shot), the output is
  ``g * W_out a + (1 - g) * theta_own``. Below 50 rows, and always zero-shot, the
  own-model slot holds zeros, as in the authors' code, so the output is
  ``g * W_out a``. ``g`` is one learned scalar, initialised at 0.5 and not
  constrained, as in the authors' code. With the own model, the provenance's weights (the
  last block's attention weights) are scaled by ``g`` and ``metadata["own_model_weight"]``
  is ``1 - g``: the own model's share, which is no retrieved task's.
* **training** minimises the row-level binary cross-entropy of the targets' own rows:
  each example is one (task, row) pair, every task is visited ``draws_per_task``
  times per epoch with one random row each (AdamW, learning rate 2e-4, weight decay
  0.01, batches of 1,024 pairs, 5 epochs, no early stopping). Training is episodic and
  leak-free: each target's neighbours are retrieved with the target itself and every
  task sharing its patients excluded (:func:`ragim.index.leak_free`). Training tasks
  with at least 50 rows see their own indexed fit through the gate, as in the paper.

The paper trained on 4,412 tasks (about 215 steps); on a small index the same epochs
are only a few steps, so ``min_steps`` (200) sets a floor. Pairs of one task in a batch
share one forward pass of the network (the same result as one pass per pair, because
the default dropout is 0). The generator gives no coefficient intervals (``std`` is
None): the paper's architecture has none.

Examples
--------
>>> from ragim import TaskIndex, datasets
>>> from ragim.generate.ragim2024 import RagIm2024Generator
>>> tasks = datasets.synthetic_family(n_tasks=30, n_features=3, seed=0)
>>> index = TaskIndex.build(tasks, embedder="hashing", progress=False)
>>> gen = RagIm2024Generator(hidden=32, min_steps=20).fit(index, progress=False)
>>> model = gen.generate(tasks.descriptions[0], exclude=[tasks.ids[0]])
>>> len(model.provenance), model.to_params().metadata["generator"]
(10, 'rag-im-2024')
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from ragim.checks import check_int, check_number, setting
from ragim.errors import ValidationError
from ragim.generate.base import (
    check_task_index,
    provenance_records,
    record_fit_state,
    register_generator,
)
from ragim.generate.hypernetwork import HypernetworkConfig, HypernetworkGenerator
from ragim.params import ModelParams

FORMAT = "ragim.rag-im-2024-generator"


@dataclass
class RagIm2024Config(HypernetworkConfig):
    """Hyper-parameters of the paper's architecture and training (defaults: the paper's;
    ``k``, ``heads``, ``seed`` and ``device`` as
    :class:`~ragim.generate.hypernetwork.HypernetworkConfig`)."""

    hidden: int = setting(512, "width of the attention blocks")
    blocks: int = setting(3, "cross-attention blocks")
    dropout: float = setting(0.0, "dropout in the attention and the bottlenecks")
    gate_rows: int = setting(50, "own rows from which the own-model gate is used")
    gate_init: float = setting(0.5, "initial value of the gate g")
    lr: float = setting(2e-4, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    batch_size: int = setting(1024, "(task, row) pairs per optimisation step")
    epochs: int = setting(5, "passes over the training tasks")
    draws_per_task: int = setting(10, "random rows drawn per task and epoch")
    min_steps: int = setting(200, "at least this many steps (small indexes)")

    def field_rules(self, problems: list[str]) -> dict[str, Any]:
        if not problems and type(self.hidden) is int and self.hidden == 1:
            problems.append("hidden must be at least 2 (the bottleneck is hidden / 2), got 1")
        ints = ("gate_rows", "batch_size", "epochs", "draws_per_task")
        return {
            **dict.fromkeys(ints, partial(check_int, ge=1)),
            "min_steps": partial(check_int, ge=0),
            "dropout": partial(check_number, ge=0, lt=1),
            "lr": partial(check_number, gt=0),
            "weight_decay": partial(check_number, ge=0),
            "gate_init": check_number,
        }


class RagIm2024Net(nn.Module):
    """The paper's network: query/key/value projections, attention blocks, linear output, gate.

    Shapes: ``q`` (B, E) description embeddings; ``nb_params`` (B, K, P); ``nb_emb``
    (B, K, E); ``pad`` (B, K), True where a neighbour slot is empty; ``own`` (B, P) the
    own-model slot (zeros when unused). Returns the parameters (B, P) and the last
    block's attention over the neighbours (B, K), averaged over heads.
    """

    def __init__(self, n_params: int, emb_dim: int, cfg: RagIm2024Config):
        super().__init__()
        h = cfg.hidden
        self.q_in = nn.Linear(emb_dim, h)
        self.k_in = nn.Linear(n_params + emb_dim, h)
        self.v_in = nn.Linear(n_params, h)
        self.attn = nn.ModuleList(
            nn.MultiheadAttention(h, cfg.heads, dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.blocks)
        )
        self.bottleneck = nn.ModuleList(
            nn.Sequential(
                nn.Linear(h, h // 2),
                nn.Dropout(cfg.dropout),
                nn.ELU(),
                nn.Linear(h // 2, h),
                nn.Dropout(cfg.dropout),
                nn.ELU(),
            )
            for _ in range(cfg.blocks)
        )
        self.out = nn.Linear(h, n_params)
        self.gate = nn.Parameter(torch.tensor(float(cfg.gate_init)))

    def forward(self, q, nb_params, nb_emb, pad, own):
        query = self.q_in(q).unsqueeze(1)
        keys = self.k_in(torch.cat([nb_params, nb_emb], dim=-1))
        values = self.v_in(nb_params)
        a = w = None
        for attn, ffn in zip(self.attn, self.bottleneck, strict=True):
            a, w = attn(
                query,
                keys,
                values,
                key_padding_mask=pad,
                need_weights=True,
                average_attn_weights=True,
            )
            query = (query + ffn(a)) / 2
        theta = self.gate * self.out(a.squeeze(1)) + (1 - self.gate) * own
        return theta, w.squeeze(1)


@dataclass
class _Episodes:
    q: torch.Tensor  # (T, E) target embeddings
    nb: np.ndarray  # (T, K) neighbour positions in the index arrays, -1 = none
    own: (
        torch.Tensor
    )  # (T, P) own-model slot: the task's indexed fit at >= gate_rows rows, else zeros
    D: torch.Tensor  # (R, P-1) design rows of all training tasks, concatenated
    y: torch.Tensor  # (R,)
    start: np.ndarray  # (T,) first row of each task in D
    count: np.ndarray  # (T,) rows per task


@register_generator("rag-im-2024")
class RagIm2024Generator(HypernetworkGenerator):
    """The original RAG-IM hypernetwork (Mahbub et al., 2024), opt-in baseline.

    :meth:`generate_params` takes ``own=`` and ``own_rows=`` (few-shot): the task's own fitted
    ModelParams and the rows it was fitted on, used from ``config.gate_rows`` (50) rows.
    Saving and loading: :class:`~ragim.generate.hypernetwork.HypernetworkGenerator`.

    Parameters
    ----------
    config : :class:`RagIm2024Config`; keyword overrides are accepted too
        (``RagIm2024Generator(hidden=64, min_steps=50)``).

    Attributes
    ----------
    history_ : mean loss per logged step (after :meth:`fit`, as all below).
    n_steps_, n_train_tasks_, train_seconds_ : optimiser steps, training tasks, wall time.
    train_neighbors_ : each training target's leak-free neighbour ids.
    skipped_episodes_ : tasks without a leak-free neighbour.
    """

    FORMAT = FORMAT
    config_class = RagIm2024Config
    block_lists = ("attn", "bottleneck")

    # ------------------------------------------------------------------ index arrays
    def _arrays(self, index):
        """(id -> position, params (N, P), embeddings (N, E)) of ``index``, cached per index."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is index and cached[1] == len(index):
            return cached[2]
        ids = index.ids
        arrays = (
            {t: i for i, t in enumerate(ids)},
            index.params_matrix(ids).astype(np.float32),
            index.vectors(ids).astype(np.float32),
        )
        self._cache = (index, len(index), arrays)
        return arrays

    def _neighbours(self, index, vectors: np.ndarray, exclude, k: int):
        """Neighbour positions (Q, k; -1 = none) and the hits themselves."""
        hits = index.search_vectors(vectors, k, exclude=exclude)
        return self._positions(index, hits, k), hits

    def _positions(self, index, hits: list, k: int) -> np.ndarray:
        """The index positions of each query's neighbours ``hits`` (Q, k; -1 = none)."""
        pos, _, _ = self._arrays(index)
        rows = np.full((len(hits), k), -1, dtype=np.int64)
        for qi, hs in enumerate(hits):
            rows[qi, : len(hs)] = [pos[h.task_id] for h in hs]
        return rows

    def _inputs(self, index, rows: np.ndarray):
        _, P, E = self._arrays(index)
        safe = np.where(rows < 0, 0, rows)
        dev = self._device
        return (
            torch.as_tensor(P[safe], device=dev),
            torch.as_tensor(E[safe], device=dev),
            torch.as_tensor(rows < 0, device=dev),
        )

    def _prepare(self, index) -> tuple[list[str], _Episodes]:
        from ragim.index import leak_free

        ids = self.episode_ids(index)
        pos, P, E = self._arrays(index)
        all_ids = index.ids
        k = min(self.config.k, len(index) - 1)
        excludes = [leak_free(index.record(t)) for t in ids]
        nb, _ = self._neighbours(index, E[[pos[t] for t in ids]], excludes, k)
        usable = self.usable_episodes(ids, nb)
        ids, nb = [t for t, u in zip(ids, usable, strict=True) if u], nb[usable]
        self.train_neighbors_ = {
            t: [all_ids[j] for j in r if j >= 0] for t, r in zip(ids, nb, strict=True)
        }
        D, y, start, count = self.episode_rows(index, ids)
        own = P[[pos[t] for t in ids]] * (count >= self.config.gate_rows)[:, None]
        dev = self._device
        return ids, _Episodes(
            torch.as_tensor(E[[pos[t] for t in ids]], device=dev),
            nb,
            torch.as_tensor(own, device=dev),
            D,
            y,
            start,
            count,
        )

    # ------------------------------------------------------------------ training
    def fit(self, index, *, progress: bool = True) -> RagIm2024Generator:
        """Train on the row-level cross-entropy of the index's tasks (see module docstring)."""
        from tqdm.auto import tqdm

        from ragim.device import resolve_device

        check_task_index(index)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        self._device = resolve_device(cfg.device)
        self._cache = None
        ids, ep = self._prepare(index)
        record_fit_state(self, index)
        net = RagIm2024Net(len(self.param_names_), ep.q.shape[1], cfg).to(self._device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(ids)
        per_epoch = math.ceil(n * cfg.draws_per_task / cfg.batch_size)
        n_steps = max(cfg.min_steps, cfg.epochs * per_epoch)
        stream: list[int] = []
        self.history_, losses = [], []
        t0 = time.perf_counter()
        net.train()
        for step in tqdm(
            range(n_steps),
            desc="train rag-im-2024",
            disable=None if progress else True,
            leave=False,
        ):
            while (
                len(stream) < cfg.batch_size
            ):  # each epoch: every task draws_per_task times, shuffled
                stream.extend(rng.permutation(np.repeat(np.arange(n), cfg.draws_per_task)).tolist())
            b, stream = np.asarray(stream[: cfg.batch_size]), stream[cfg.batch_size :]
            rows = ep.start[b] + (rng.random(len(b)) * ep.count[b]).astype(np.int64)
            loss = self._loss(net, index, ep, b, rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if (step + 1) % 10 == 0 or step + 1 == n_steps:
                self.history_.append({"step": step + 1, "loss": float(np.mean(losses))})
                losses = []
        net.eval()
        self.net_, self.index_ = net, index
        self.n_steps_, self.n_train_tasks_ = n_steps, n
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def _loss(self, net, index, ep: _Episodes, b: np.ndarray, rows: np.ndarray):
        """Mean binary cross-entropy over the (task, row) pairs; one pass per distinct task."""
        dev = self._device
        uniq, inv = np.unique(b, return_inverse=True)
        nbp, nbe, pad = self._inputs(index, ep.nb[uniq])
        theta, _ = net(ep.q[uniq], nbp, nbe, pad, ep.own[uniq])
        th = theta[torch.as_tensor(inv, device=dev)]
        r = torch.as_tensor(rows, device=dev)
        logit = th[:, 0] + (ep.D[r] * th[:, 1:]).sum(1)
        return nn.functional.binary_cross_entropy_with_logits(logit, ep.y[r])

    # ------------------------------------------------------------------ generation
    def _is_fitted(self) -> bool:
        return self.net_ is not None

    def _own_slots(
        self, own, own_rows, n_queries: int, single: bool
    ) -> tuple[np.ndarray, list[bool]]:
        """The own-model slot per query: zeros unless an own model of >= gate_rows rows is given."""
        P = len(self.param_names_)
        slots, used = np.zeros((n_queries, P), dtype=np.float32), [False] * n_queries
        if own is None:
            if own_rows is not None:
                raise ValidationError(
                    "own_rows was given without own=; pass the task's own fitted ModelParams too"
                )
            return slots, used
        owns = [own] if single else list(own) if isinstance(own, list | tuple) else None
        rows = (
            [own_rows] if single else list(own_rows) if isinstance(own_rows, list | tuple) else None
        )
        if owns is None or rows is None or len(owns) != n_queries or len(rows) != n_queries:
            raise ValidationError(
                f"for {n_queries} queries give own= and own_rows= as lists of {n_queries} "
                "(None where a task has no own model)"
            )
        for i, (p, n) in enumerate(zip(owns, rows, strict=True)):
            if p is None:
                continue
            if (
                not isinstance(p, ModelParams)
                or p.kind != self.model_kind_
                or p.names != self.param_names_
            ):
                raise ValidationError(
                    f"own model {i} must be {self.model_kind_} ModelParams over the index's schema "
                    f"({len(self.param_names_)} parameters)"
                )
            n = check_int(n, f"own_rows {i}", ge=0, note="rows the own model was fitted on")
            if n >= self.config.gate_rows:
                slots[i], used[i] = p.vector, True
        return slots, used

    def _generate(
        self,
        index,
        vecs: np.ndarray,
        items: list,
        single: bool,
        *,
        k,
        exclude,
        own: ModelParams | Sequence[ModelParams | None] | None = None,
        own_rows: int | Sequence[int | None] | None = None,
    ) -> list[ModelParams]:
        """:meth:`generate_params` (provenance: the last block's attention weights, times the
        gate ``g`` when the own model is used, ``metadata["own_model_weight"]`` then being
        ``1 - g``, else 0); ``k`` neighbours, default ``config.k``.

        ``own``, ``own_rows``: few-shot: the task's own fitted ModelParams and the number of
        rows it was fitted on (lists for a batch). The gate uses it only when ``own_rows >=
        config.gate_rows`` (50); otherwise the output is the zero-shot one. A bad own model
        raises a ValidationError.
        """
        k = check_int(k, "k", ge=1, allow_none=True, note="rag-im-2024 needs neighbours")
        k = min(self.config.k if k is None else int(k), len(index))
        slots, used = self._own_slots(own, own_rows, len(items), single)
        hits = self._search(index, vecs, k, exclude)
        rows = self._positions(index, hits, k)
        nbp, nbe, pad = self._inputs(index, rows)
        with torch.no_grad():
            theta, w = self.net_(
                torch.as_tensor(vecs, dtype=torch.float32, device=self._device),
                nbp,
                nbe,
                pad,
                torch.as_tensor(slots, device=self._device),
            )
        theta, w = theta.cpu().numpy().astype(np.float64), w.cpu().numpy()
        g = float(self.net_.gate.detach())
        out = []
        for qi, hs in enumerate(hits):
            # with the own model, the neighbours shaped g of the output and the own model 1 - g
            share = g if used[qi] else 1.0
            meta = {
                "source": "generated",
                "generator": "rag-im-2024",
                "k": len(hs),
                "own_model_used": used[qi],
                "own_model_weight": round(1.0 - share, 6),
                "provenance": provenance_records(hs, share * w[qi, : len(hs)]),
            }
            out.append(ModelParams(self.model_kind_, index.schema, theta[qi], metadata=meta))
        return out

    # ------------------------------------------------------------------ persistence
    def saved_tensors(self) -> dict[str, Any]:
        return {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}

    def restore_net(self, saved) -> RagIm2024Net:
        net = RagIm2024Net(len(saved.param_names), saved.emb_dim, self.config)
        net.load_state_dict(saved.tensors)
        return net
