"""VLModule: towers -> embeddings -> (gathered) objective -> loss; plus evaluation.

The module does not know which method it trains: the objective, the sampler and the
filter are chosen by config and plugged in from outside.

Precision: the towers run in the trainer's precision (autocast for ``*-mixed``, cast
weights for ``*-true``); the objective always runs in full precision -- features and
logit scale cast to float32 (float64 under ``64-true``), autocast off, its own
parameters (concept heads, EMA teacher) kept in float32 -- so a precision setting
changes the towers' arithmetic and nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import nn

from vlexp.config import ConfigError
from vlexp.data.eval_set import EvalSet
from vlexp.encoders.base import TwoTower
from vlexp.eval.metrics.finegrained import finegrained_scores, flatten_distractors
from vlexp.eval.metrics.retrieval import retrieval_recall
from vlexp.eval.metrics.zeroshot import class_embeddings, zeroshot_accuracy
from vlexp.objectives.base import Objective, ObjectiveOutput
from vlexp.objectives.distributed import gather_features
from vlexp.schedules import lr_factor
from vlexp.train.accumulation import encode_accumulated

log = logging.getLogger(__name__)

HALF_DTYPES = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def full_precision(device_type: str, dtype: torch.dtype = torch.float32) -> Iterator[None]:
    """Autocast off and ``dtype`` as the default float type for the enclosed code.

    Undoes, for the objective only, what ``*-mixed`` (autocast) and ``*-true`` (default
    dtype) precision plugins switch on around the training step.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    finally:
        torch.set_default_dtype(previous)


def upcast_half(module: nn.Module) -> nn.Module:
    """Cast ``module``'s float16/bfloat16 parameters and buffers to float32, in place."""
    return module._apply(lambda t: t.float() if t.dtype in HALF_DTYPES else t)


def eval_options(eval_cfg: Any) -> dict[str, Any]:
    """:class:`VLModule`'s evaluation arguments from a run's ``eval`` config section."""
    return {
        "eval_ks": tuple(eval_cfg["ks"]),
        "eval_chunk_size": int(eval_cfg["chunk_size"]),
        "eval_ties": str(eval_cfg["retrieval_ties"]),
        "eval_identical_captions": bool(eval_cfg["retrieval_identical_captions"]),
    }


def optimizer_groups(
    module: nn.Module, objective: Objective, lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups: the objective's own (:meth:`Objective.param_groups`), then ``weight_decay``
    for every other matrix and none for vectors, scalars and the logit scale."""
    own = [g for g in objective.param_groups(lr, weight_decay) if g["params"]]
    claimed = {id(p) for g in own for p in g["params"]}
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad or id(p) in claimed:
            continue
        (no_decay if p.ndim < 2 or "log_logit_scale" in name else decay).append(p)
    rest = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [*rest, *own]


class VLModule(L.LightningModule):
    """Trains a :class:`TwoTower` with any registered :class:`Objective`."""

    def __init__(
        self,
        model: TwoTower,
        objective: Objective,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-6,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.0,
        fused: bool | None = None,
        schedule: str = "cosine",
        cooldown_steps: int = 0,
        cooldown_power: float = 1.0,
        eval_ks: tuple[int, ...] = (1, 5, 10),
        eval_chunk_size: int = 1024,
        accum_freq: int = 1,
        eval_ties: str = "topk",
        eval_identical_captions: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self.lr = lr
        self.weight_decay = weight_decay
        self.betas = tuple(betas)
        self.eps = eps
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.schedule = schedule
        self.cooldown_steps = int(cooldown_steps)
        self.cooldown_power = float(cooldown_power)
        self.fused = fused
        self.eval_ks = tuple(eval_ks)
        self.eval_chunk_size = eval_chunk_size
        self.eval_ties = eval_ties  # retrieval's tie rule (eval.retrieval_ties)
        self.eval_identical_captions = eval_identical_captions
        if int(accum_freq) < 1:
            raise ValueError(f"optim.accum_freq must be an integer >= 1, got {accum_freq}")
        self.accum_freq = int(accum_freq)
        self._eval_buffers: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
        # set by the train command: vlexp.encoders.trunk_cache.TrunkCache or None
        self.trunk_cache: Any = None

    # ------------------------------------------------------------------ train
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (schedules of objectives read it)."""
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 0
        if not total or not math.isfinite(total):
            return 0.0
        return min(1.0, self.global_step / float(total))

    @property
    def objective_dtype(self) -> torch.dtype:
        """Dtype the objective computes in: float64 for float64 towers, else float32."""
        return torch.promote_types(self.model.log_logit_scale.dtype, torch.float32)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        """``nn.Module._apply``, then keep the objective's own tensors in float32.

        ``*-true`` precisions cast the whole module; concept heads and an EMA teacher
        stay in float32 (an EMA step of ``1 - decay = 1e-3`` vanishes in bfloat16).
        """
        super()._apply(fn, recurse)
        upcast_half(self.objective)
        return self

    def objective_step(
        self, image: torch.Tensor, text: torch.Tensor, batch: dict[str, Any]
    ) -> ObjectiveOutput:
        """Gather the embeddings and run the objective in full precision (autocast off)."""
        dtype = self.objective_dtype
        features = gather_features(image, text, dtype=dtype)
        logit_scale = self.model.logit_scale().to(dtype)
        with full_precision(image.device.type, dtype):
            return self.objective(features, logit_scale, batch, self.progress())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """One optimiser step's loss over the whole batch (towers in ``accum_freq`` parts)."""
        if self.trunk_cache is not None:  # frozen trunks read from their cache, tops train
            image, text = self.trunk_cache.encode(self.model, batch)
        else:
            image, text = encode_accumulated(self.model, batch, self.accum_freq)
        out = self.objective_step(image, text, batch)
        bs = image.shape[0]
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs)
        self.log("train/logit_scale", self.model.logit_scale().detach().float(), batch_size=bs)
        for name, value in out.components.items():
            self.log(
                f"train/{name}", value.detach() if torch.is_tensor(value) else value, batch_size=bs
            )
        return out.loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.objective.on_train_batch_end(self)

    def _use_fused(self) -> bool:
        """Fused AdamW (one kernel over all parameters) unless told otherwise.

        ``fused=None`` (auto) picks it whenever the parameters are on CPU or CUDA, at every
        precision: vlexp clips gradients itself (:meth:`configure_gradient_clipping`), and
        under ``16-mixed`` the gradient scaler hands the fused kernel its inf check. Other
        devices get torch's default (``foreach`` where supported). Same update as the
        per-tensor loop (tested); on CPU the loop costs ~40 ms per step for 5M
        parameters, the fused kernel ~4 ms.
        """
        if self.fused is not None:
            return bool(self.fused)
        return self.device.type in ("cpu", "cuda")

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip with ``torch.nn.utils`` directly (``trainer.gradient_clip_val``).

        Lightning's own clipping refuses fused optimizers under mixed precision. Here,
        under ``16-mixed`` with a fused optimizer the gradients are first unscaled through
        the trainer's ``GradScaler`` (which then passes its inf check to the fused step);
        unfused optimizers were already unscaled by Lightning.
        """
        if not gradient_clip_val:
            return
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            scaler.unscale_(optimizer)
        params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":  # Lightning's str enum compares by value
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    def _optimizer_summary(self, fused: bool) -> str:
        clip = self.trainer.gradient_clip_val
        algorithm = "value" if self.trainer.gradient_clip_algorithm == "value" else "norm"
        how = f"clip_grad_{algorithm}_ at {clip} in vlexp" if clip else "none"
        return (
            f"optimizer: AdamW fused={fused}, clipping by {how} "
            f"(precision {self.trainer.precision}, {self.device.type})"
        )

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW (fused when possible); per step a linear warm-up, then the LR schedule
        (``optim.schedule``: cosine decay, constant, or constant with a cool-down)."""
        fused = self._use_fused()
        opt = torch.optim.AdamW(
            optimizer_groups(self, self.objective, self.lr, self.weight_decay),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            fused=fused,
        )
        if self.trainer.is_global_zero:
            log.info(self._optimizer_summary(fused))
        total = int(self.trainer.estimated_stepping_batches)
        if self.schedule == "const_cooldown" and self.cooldown_steps > total - self.warmup_steps:
            raise ConfigError(
                f"optim.cooldown_steps={self.cooldown_steps} is more than the "
                f"{total - self.warmup_steps} steps this run has after its warm-up "
                f"({total} steps, optim.warmup_steps={self.warmup_steps})"
            )
        factor = functools.partial(
            lr_factor, schedule=self.schedule, warmup_steps=self.warmup_steps,
            total_steps=total, floor=self.min_lr_ratio, cooldown_steps=self.cooldown_steps,
            cooldown_power=self.cooldown_power,
        )  # fmt: skip
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------- eval
    def _eval_sets(self, stage: str) -> list[EvalSet]:
        dm = self.trainer.datamodule
        return dm.val_sets if stage == "val" else dm.test_sets

    def _eval_step(self, batch: dict[str, Any], dataloader_idx: int) -> None:
        emb = self.model.encode_image(batch["image"])
        self._eval_buffers.setdefault(dataloader_idx, []).append(
            (emb.float(), batch["index"], batch["label"])
        )

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_step(batch, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    @torch.no_grad()
    def _finish_eval(self, stage: str) -> None:
        metrics: dict[str, float] = {}
        for idx, eval_set in enumerate(self._eval_sets(stage)):
            buf = self._eval_buffers.get(idx)
            if not buf:
                continue
            image_emb, labels = self._assemble_images(buf, eval_set.num_images)
            metrics.update(
                {
                    f"{stage}/{eval_set.name}/{k}": v
                    for k, v in self.evaluate_set(eval_set, image_emb, labels).items()
                }
            )
        self._eval_buffers.clear()
        if metrics and stage == "val":
            # headline metric for checkpointing and sweeps: mean R@1 on the first set
            first = self._eval_sets(stage)[0].name
            r1 = [metrics.get(f"{stage}/{first}/{d}_R@1") for d in ("i2t", "t2i")]
            if all(v is not None for v in r1):
                metrics[f"{stage}/mean_R@1"] = sum(r1) / 2  # type: ignore[arg-type]
        for k, v in metrics.items():
            self.log(k, v, sync_dist=False, rank_zero_only=False)

    def _assemble_images(
        self, buf: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = torch.cat([b[0] for b in buf])
        idx = torch.cat([b[1] for b in buf])
        lab = torch.cat([b[2] for b in buf])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            emb, idx, lab = (self.all_gather(t).flatten(0, 1) for t in (emb, idx, lab))
        full = torch.zeros(n, emb.shape[1], device=emb.device)
        labels = torch.full((n,), -1, dtype=torch.long, device=emb.device)
        full[idx] = emb
        labels[idx] = lab.to(labels.device)
        return full, labels

    @torch.no_grad()
    def encode_captions(self, captions: list[str], batch_size: int = 512) -> torch.Tensor:
        """Normalised text embeddings of ``captions`` (computed in batches)."""
        out = []
        for s in range(0, len(captions), batch_size):
            tok = self.model.tokenize(captions[s : s + batch_size])
            out.append(
                self.model.encode_text(
                    tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)
                ).float()
            )
        return torch.cat(out) if out else torch.zeros(0, self.model.embed_dim, device=self.device)

    def evaluate_set(
        self, eval_set: EvalSet, image_emb: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, float]:
        """Retrieval, zero-shot and (with distractors) fine-grained metrics of one set.

        Fractions in [0, 1], except ``finegrained_rank`` (mean rank, 1 = best).
        """
        out: dict[str, float] = {}
        text_emb = None
        if eval_set.captions and (eval_set.retrieval or eval_set.distractors):
            text_emb = self.encode_captions(eval_set.captions)
        cap_img = torch.as_tensor(eval_set.caption_image, device=image_emb.device).long()
        if eval_set.retrieval and text_emb is not None:
            out.update(
                retrieval_recall(
                    image_emb,
                    text_emb,
                    cap_img,
                    self.eval_ks,
                    self.eval_chunk_size,
                    ties=self.eval_ties,
                    captions=eval_set.captions if self.eval_identical_captions else None,
                )
            )
        if eval_set.distractors and any(eval_set.distractors) and text_emb is not None:
            true_emb = torch.zeros_like(image_emb)
            true_emb[cap_img] = text_emb.to(true_emb.dtype)  # one true caption per image
            flat, owner = flatten_distractors(eval_set.distractors)
            out.update(finegrained_scores(image_emb, true_emb, self.encode_captions(flat), owner))
        if eval_set.class_names and bool((labels >= 0).any()):
            cls = class_embeddings(
                self.model, eval_set.class_names, eval_set.templates, self.device
            ).float()
            acc = zeroshot_accuracy(image_emb, labels, cls)
            out.update({f"zeroshot_{k}": v for k, v in acc.items()})
        return out
