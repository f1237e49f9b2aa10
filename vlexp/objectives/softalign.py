"""`objective=softalign`: progressive self-distillation with soft alignment targets.

SoftAlign (Andonian, Chen, Hamid, CVPR 2022, arXiv 2204.04588): for ``soft_share`` of every
global batch the one-hot targets become ``(1 - a_t) onehot + a_t softmax(teacher logits)``
in both directions, with ``a_t`` ramping from 0 to ``alpha_max`` over training. At
``a_t = 0`` the loss is bit-identical to ``objective=clip``. The default teacher is an EMA
of the towers, because the current model at its own scale would make the gradient CLIP's,
rescaled (that combination is refused). The full derivation, the teacher choices, the row
selection rules and the logged components are in docs/DESIGN.md ("SoftAlign").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlexp.objectives.base import OBJECTIVES, Objective, ObjectiveOutput
from vlexp.objectives.clip import local_logits
from vlexp.objectives.distributed import GatheredFeatures
from vlexp.registry import Opt
from vlexp.schedules import weight_ramp

SELECTIONS = ("random", "least_confident")
TEACHERS = ("self", "ema")
_GOLDEN = 0x9E3779B97F4A7C15  # mixes the call count into the selection seed


# ----------------------------------------------------------------------------- pieces
def degenerate_teacher(teacher: str, use_student_scale: bool, ema_decay: float) -> str | None:
    """Why this teacher makes SoftAlign a rescaled CLIP (one line), or ``None`` if it does not.

    A teacher equal to the student's current prediction gives the target ``(1 - a) onehot +
    a p`` with ``p`` the student's own softmax, hence the gradient ``(1 - a)(p - onehot)``.
    """
    if teacher == "self" and use_student_scale:
        return (
            "teacher=self with use_student_scale=true is CLIP with soft rows down-weighted "
            "(the target mixes in the student's own softmax, so the gradient is (1 - a) "
            "times CLIP's); use teacher=ema (the default), or teacher=self with "
            "use_student_scale=false and a teacher_temperature of its own"
        )
    if teacher == "ema" and ema_decay == 0.0 and use_student_scale:
        return (
            "teacher=ema with ema_decay=0 copies the student's current weights, which is "
            "CLIP with soft rows down-weighted; use an ema_decay in (0, 1), e.g. 0.995"
        )
    return None


def config_errors(cfg: Mapping[str, Any], encoder: Mapping[str, Any] | None) -> list[str]:
    """Reasons a softalign objective config reduces to CLIP (empty if it does not).

    ``cfg`` is the objective config (``name: softalign`` + options; missing options take
    the constructor's defaults), ``encoder`` the student's encoder config: a self teacher
    at a fixed ``teacher_temperature`` equal to a frozen model temperature is refused too.
    """
    defaults = {
        k: p.default
        for k, p in inspect.signature(SoftAlignObjective.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    opts = {**defaults, **dict(cfg)}
    try:
        teacher, use_scale = str(opts["teacher"]), bool(opts["use_student_scale"])
        reason = degenerate_teacher(teacher, use_scale, float(opts["ema_decay"]))
        tau_t = float(opts["teacher_temperature"])
    except (TypeError, ValueError):
        return []  # malformed values: the constructor names them
    if reason:
        return [reason]
    try:
        if float(opts["ramp_start"]) > float(opts["ramp_end"]):
            return [
                f"ramp_start={opts['ramp_start']} is after ramp_end={opts['ramp_end']}: the "
                "weight would never ramp; set ramp_start <= ramp_end"
            ]
    except (TypeError, ValueError):
        return []
    enc = dict(encoder or {})
    frozen_tau = enc.get("init_temperature") if enc.get("learn_temperature") is False else None
    if teacher == "self" and not use_scale and frozen_tau is not None:
        if math.isclose(tau_t, float(frozen_tau), rel_tol=1e-6):
            return [
                f"teacher=self at teacher_temperature={tau_t} equals the student's frozen "
                "temperature (encoder.learn_temperature=false), which is CLIP with soft rows "
                "down-weighted; use teacher=ema or another teacher_temperature"
            ]
    return []


def mix_targets(teacher_probs: torch.Tensor, positives: torch.Tensor, alpha: float) -> torch.Tensor:
    """Dense targets ``(1 - alpha) onehot(positives) + alpha teacher_probs`` (no gradient).

    ``teacher_probs`` is ``(k, N)`` (rows summing to 1), ``positives`` the ``k`` target
    columns; the rows are probability distributions for ``0 <= alpha <= 1``.
    """
    with torch.no_grad():
        targets = alpha * teacher_probs.float()
        rows = torch.arange(targets.shape[0], device=targets.device)
        targets[rows, positives] += 1.0 - alpha
    return targets


def soft_alignment_targets(
    teacher_logits: torch.Tensor, positives: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Dense targets ``(1 - alpha) onehot(positives) + alpha softmax(teacher_logits)``.

    ``teacher_logits`` is ``(k, N)``, ``positives`` the ``k`` target columns. Computed
    without gradient; rows are probability distributions for ``0 <= alpha <= 1``.
    """
    with torch.no_grad():
        return mix_targets(torch.softmax(teacher_logits.float(), dim=1), positives, alpha)


def soft_cross_entropy(
    logits: torch.Tensor,
    positives: torch.Tensor,
    soft_rows: torch.Tensor,
    teacher_probs: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """Mean over rows of ``-sum_j T_ij log softmax(logits)_ij`` (see the module docstring).

    ``logits`` ``(B, N)`` with row ``i``'s positive at ``positives[i]``; ``soft_rows``
    ``(k,)`` the rows with soft targets and ``teacher_probs`` ``(k, N)`` the teacher's
    softmax for them (constants). Equal to ``F.cross_entropy(logits, positives)`` bit for
    bit when ``alpha == 0``.
    """
    logp = F.log_softmax(logits, dim=1)
    loss = F.nll_loss(logp, positives)
    if soft_rows.numel():
        lp = logp.index_select(0, soft_rows)
        hard = lp.gather(1, positives.index_select(0, soft_rows)[:, None]).squeeze(1)
        soft = (teacher_probs.to(lp.dtype) * lp).sum(1)
        loss = loss + alpha * (hard - soft).sum() / logits.shape[0]
    return loss


def _world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (no gradient; identity on one rank)."""
    if _world() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.detach().contiguous())
    return torch.cat(out, 0)


def target_entropy(targets: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of ``targets`` (``0 log 0 = 0``; no gradient)."""
    with torch.no_grad():
        return -torch.special.xlogy(targets, targets).sum(1)


# ------------------------------------------------------------------------- objective
@OBJECTIVES.register(
    "softalign",
    schema={
        "soft_share": Opt(
            float, lo=0.0, hi=1.0, help="share of the global batch's pairs that get soft targets"
        ),
        "selection": Opt(
            choices=SELECTIONS,
            help="which rows: random, or least_confident (lowest teacher p of the partner)",
        ),
        "alpha_max": Opt(float, lo=0.0, hi=1.0, help="the distillation weight's final value"),
        "schedule": Opt(
            choices=("linear", "cosine", "constant"),
            help="ramp of the weight from 0 (constant: always alpha_max)",
        ),
        "ramp_end": Opt(
            float, lo=0.0, hi=1.0, help="share of training at which the weight reaches alpha_max"
        ),
        "ramp_start": Opt(
            float, lo=0.0, hi=1.0, help="share of training before which the weight is 0"
        ),
        "teacher_temperature": Opt(
            float,
            lo=0.0,
            open_lo=True,
            help="tau_t of the teacher softmax over cosine similarities",
        ),
        "use_student_scale": Opt(
            bool, help="teacher logits at the student's (detached) logit scale"
        ),
        "teacher": Opt(
            choices=TEACHERS,
            help="ema (EMA copy of the towers) or self (the current model, detached)",
        ),
        "ema_decay": Opt(
            float,
            lo=0.0,
            hi=1.0,
            open_lo=True,
            open_hi=True,
            doc="a decay in (0, 1) (at 0 the EMA teacher is the student itself: CLIP's "
            "gradient, rescaled)",
            help="decay d of the EMA teacher",
        ),
        "ema_encoder": Opt(
            dict, nullable=True, help="encoder config of the EMA copy (the student's own)"
        ),
        "seed": Opt(
            int,
            nullable=True,
            help="seed of random selection (null: torch.initial_seed() at step 1)",
        ),
    },  # fmt: skip
    hooks={"checks": lambda opts, ctx: config_errors(opts, ctx.get("encoder"))},
)
class SoftAlignObjective(Objective):
    """Symmetric cross-entropy against partly soft, self-distilled targets.

    Options: the registration schema above (also docs/OPTIONS.md). ``encoder_config`` is
    runtime context, not an option: the student's encoder config, used for the EMA copy
    when ``ema_encoder`` is not given.
    """

    def __init__(
        self,
        soft_share: float = 0.5,
        selection: str = "random",
        alpha_max: float = 0.5,
        schedule: str = "linear",
        ramp_end: float = 1.0,
        ramp_start: float = 0.0,
        teacher_temperature: float = 0.07,
        use_student_scale: bool = True,
        teacher: str = "ema",
        ema_decay: float = 0.995,
        ema_encoder: Mapping[str, Any] | None = None,
        seed: int | None = None,
        encoder_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(soft_share) <= 1.0:
            raise ValueError(f"objective.soft_share must be in [0, 1], got {soft_share}")
        if selection not in SELECTIONS:
            raise ValueError(f"objective.selection must be one of {SELECTIONS}, got {selection!r}")
        if not 0.0 <= float(alpha_max) <= 1.0:
            raise ValueError(
                f"objective.alpha_max must be in [0, 1] (targets mix (1 - a) onehot + a "
                f"softmax), got {alpha_max}"
            )
        if not float(teacher_temperature) > 0.0:
            raise ValueError(
                f"objective.teacher_temperature must be > 0, got {teacher_temperature}"
            )
        if teacher not in TEACHERS:
            raise ValueError(f"objective.teacher must be one of {TEACHERS}, got {teacher!r}")
        reason = degenerate_teacher(teacher, bool(use_student_scale), float(ema_decay))
        if reason:
            raise ValueError(f"objective: {reason}")
        if not 0.0 < float(ema_decay) < 1.0:
            raise ValueError(f"objective.ema_decay must be in (0, 1), got {ema_decay}")
        if schedule not in ("linear", "cosine", "constant"):
            raise ValueError(
                f"objective.schedule must be linear, cosine or constant, got {schedule!r}"
            )
        try:
            self.ramp = weight_ramp(
                kind=schedule,
                max_value=float(alpha_max),
                end=float(ramp_end),
                start=float(ramp_start),
            )
        except ValueError as err:
            raise ValueError(f"objective.ramp_start/ramp_end: {err}") from err
        self.soft_share = float(soft_share)
        self.selection = selection
        self.teacher_temperature = float(teacher_temperature)
        self.use_student_scale = bool(use_student_scale)
        self.teacher = teacher
        self.ema_decay = float(ema_decay)
        self.seed = None if seed is None else int(seed)
        self.calls = 0  # training forward passes so far (saved in the state dict)
        self.ema_initialized = False
        self.ema_model: nn.Module | None = None
        if teacher == "ema":
            self.ema_model = self._build_ema(ema_encoder or encoder_config)

    # -------------------------------------------------------------- EMA teacher
    @staticmethod
    def _build_ema(ema_encoder: Mapping[str, Any] | None) -> nn.Module:
        if not ema_encoder:
            raise ValueError(
                "objective.teacher=ema needs objective.ema_encoder (the student's encoder "
                "config; conf/objective/softalign.yaml sets it to ${encoder})"
            )
        from vlexp.encoders import ENCODERS

        with torch.random.fork_rng(devices=[]):  # leave the global RNG stream untouched
            model = ENCODERS.build(dict(ema_encoder))
        for p in model.parameters():
            p.requires_grad_(False)
        return model.eval()

    def train(self, mode: bool = True) -> SoftAlignObjective:
        """Like ``nn.Module.train`` but keeps the EMA teacher in eval mode."""
        super().train(mode)
        if self.ema_model is not None:
            self.ema_model.eval()
        return self

    @torch.no_grad()
    def on_train_batch_end(self, module: nn.Module) -> None:
        """Update the EMA teacher from ``module.model`` (or ``module`` itself)."""
        if self.ema_model is None:
            return
        student = getattr(module, "model", module)
        ema_params = dict(self.ema_model.named_parameters())
        student_params = dict(student.named_parameters())
        if not self.ema_initialized and ema_params.keys() != student_params.keys():
            missing = sorted(ema_params.keys() ^ student_params.keys())[:5]
            raise ValueError(
                "objective.ema_encoder builds a model whose parameters differ from the "
                f"student's (e.g. {missing}); set objective.ema_encoder to the student's "
                "encoder config (${encoder})"
            )
        d = 0.0 if not self.ema_initialized else self.ema_decay
        for name, p_ema in ema_params.items():
            p_ema.lerp_(student_params[name].detach().to(p_ema.dtype), 1.0 - d)
        student_buffers = dict(student.named_buffers())
        for name, b_ema in self.ema_model.named_buffers():
            if name in student_buffers:
                b_ema.copy_(student_buffers[name])
        self.ema_initialized = True

    def _ema_embeddings(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [k for k in ("image", "input_ids") if k not in batch]
        if missing:
            raise KeyError(
                f"objective.teacher=ema computes the teacher's embeddings from the batch and "
                f"needs batch keys {missing}; use teacher=self for batches without them"
            )
        assert self.ema_model is not None
        with torch.no_grad():
            image = self.ema_model.encode_image(batch["image"])
            text = self.ema_model.encode_text(batch["input_ids"], batch.get("attention_mask"))
        return image.float(), text.float()

    # ------------------------------------------------------------ state dict
    def get_extra_state(self) -> dict[str, Any]:
        """Selection seed, call count and whether the EMA teacher was initialised."""
        return {"seed": self.seed, "calls": self.calls, "ema_initialized": self.ema_initialized}

    def set_extra_state(self, state: Any) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        self.seed = None if state.get("seed") is None else int(state["seed"])
        self.calls = int(state.get("calls", 0))
        self.ema_initialized = bool(state.get("ema_initialized", False))

    # -------------------------------------------------------------- selection
    def _base_seed(self, device: torch.device) -> int:
        if self.seed is None:
            seed = torch.initial_seed() % (2**63)
            if _world() > 1:  # every rank must draw the same rows
                t = torch.tensor([seed], dtype=torch.long, device=device)
                dist.broadcast(t, src=0)
                seed = int(t.item())
            self.seed = seed
        return self.seed

    def num_soft(self, global_batch: int) -> int:
        """Rows of a global batch of ``global_batch`` pairs that get soft targets."""
        return min(global_batch, int(math.floor(self.soft_share * global_batch + 0.5)))

    def select(
        self,
        features: GatheredFeatures,
        teacher_i2t: torch.Tensor,
        teacher_t2i: torch.Tensor,
    ) -> torch.Tensor:
        """Local row indices (sorted) that get soft targets this step."""
        b_local, b_global = features.image.shape[0], features.image_all.shape[0]
        device = features.image.device
        k = self.num_soft(b_global)
        if k == 0:
            return torch.zeros(0, dtype=torch.long, device=device)
        if self.selection == "random":
            seed = (self._base_seed(device) + _GOLDEN * (self.calls + 1)) % (2**64)
            gen = torch.Generator().manual_seed(seed)
            chosen = torch.randperm(b_global, generator=gen)[:k].to(device)
        else:
            labels = features.labels
            conf = 0.5 * (_positive_prob(teacher_i2t, labels) + _positive_prob(teacher_t2i, labels))
            conf_all = gather_no_grad(conf)
            chosen = torch.sort(conf_all, stable=True).indices[:k]
        local = chosen - features.offset
        local = local[(local >= 0) & (local < b_local)]
        return torch.sort(local).values

    # ---------------------------------------------------------------- forward
    def teacher_logits(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        logits_i2t: torch.Tensor,
        logits_t2i: torch.Tensor,
        batch: dict[str, Any],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached teacher logits of the local rows in both directions, ``(B_local, B_global)``."""
        scale = logit_scale.detach().float()
        if self.ema_model is not None and self.ema_initialized:
            img, txt = self._ema_embeddings(batch)
            img_all, txt_all = gather_no_grad(img), gather_no_grad(txt)
            cos_i2t, cos_t2i = img @ txt_all.T, txt @ img_all.T
            mult = scale if self.use_student_scale else 1.0 / self.teacher_temperature
            return cos_i2t * mult, cos_t2i * mult
        t_i2t, t_t2i = logits_i2t.detach().float(), logits_t2i.detach().float()
        if self.use_student_scale:
            return t_i2t, t_t2i
        mult = 1.0 / (scale * self.teacher_temperature)
        return t_i2t * mult, t_t2i * mult

    def forward(
        self,
        features: GatheredFeatures,
        logit_scale: torch.Tensor,
        batch: dict[str, Any],
        progress: float,
    ) -> ObjectiveOutput:
        alpha = self.ramp(progress)
        logits_i2t, logits_t2i = local_logits(features, logit_scale)
        labels = features.labels
        t_i2t, t_t2i = self.teacher_logits(features, logit_scale, logits_i2t, logits_t2i, batch)
        rows = self.select(features, t_i2t, t_t2i)
        if self.training:
            self.calls += 1
        sel_labels = labels.index_select(0, rows)
        parts: dict[str, torch.Tensor] = {}
        entropies = []
        for key, logits, t in (("i2t", logits_i2t, t_i2t), ("t2i", logits_t2i, t_t2i)):
            t_rows = t.index_select(0, rows)
            probs = torch.softmax(t_rows, dim=1)
            parts[key] = soft_cross_entropy(logits, labels, rows, probs, alpha)
            if rows.numel():
                entropies.append(target_entropy(mix_targets(probs, sel_labels, alpha)))
        loss = 0.5 * (parts["i2t"] + parts["t2i"])
        b_global = features.image_all.shape[0]
        device = loss.device
        entropy = torch.cat(entropies).mean() if entropies else torch.zeros((), device=device)
        return ObjectiveOutput(
            loss,
            {
                "loss_i2t": parts["i2t"],
                "loss_t2i": parts["t2i"],
                "softalign_alpha": torch.tensor(alpha, device=device),
                "soft_share": torch.tensor(self.num_soft(b_global) / b_global, device=device),
                "target_entropy": entropy,
            },
        )

    def extra_repr(self) -> str:
        temp = "student scale" if self.use_student_scale else f"{self.teacher_temperature}"
        return (
            f"soft_share={self.soft_share}, selection={self.selection}, "
            f"alpha_max={self.ramp.max_value}, schedule={self.ramp.kind}, "
            f"ramp=[{self.ramp.start}, {self.ramp.end}], teacher={self.teacher}, "
            f"teacher_temperature={temp}"
            + (f", ema_decay={self.ema_decay}" if self.teacher == "ema" else "")
        )


def _positive_prob(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Softmax probability of each row's positive column (no gradient)."""
    with torch.no_grad():
        lse = torch.logsumexp(logits.float(), dim=1)
        return torch.exp(logits.float().gather(1, positives[:, None]).squeeze(1) - lse)
