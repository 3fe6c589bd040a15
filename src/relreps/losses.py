"""Relative-similarity losses: align a student's relative space with a teacher's, with no labels.

The relative projection is differentiable, so "make my similarities to the anchors look like the
teacher's" is a training signal. The teacher can be any frozen encoder (its relative
representation of the training inputs is the target); the student is re-projected onto its own
embeddings of the same anchor inputs at every step. After training, a head fitted on the
teacher's relative space reads the student's relative space zero-shot: the student has learned
the teacher's relative geometry, not its coordinates.

Loss kinds (row-wise, averaged over the batch):

- ``"mse"``: squared error between row-standardised relative representations (shape of the
  similarity profile, not its offset or scale);
- ``"cosine"``: 1 - cosine between the centred rows (same invariances, bounded);
- ``"kl"``: KL divergence between the teacher's and the student's softmax over anchors at
  `temperature` (matches which anchors are nearest, as in neighbourhood distillation).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from relreps.errors import InputTypeError, NumericalError, ShapeError
from relreps.invariances import normalize_rows
from relreps.projection import relative_projection
from relreps.validation import (
    check_array,
    check_choice,
    check_float,
    check_indices,
    check_int,
    check_labels,
    check_same_rows,
    is_torch,
)

__all__ = ["relative_alignment_loss", "RelativeSimilarityLoss", "distill_relative",
           "distillation_demo", "LOSS_KINDS", "mlp_encoder"]

LOSS_KINDS = ("mse", "cosine", "kl")
Kind = Literal["mse", "cosine", "kl"]


def _tensor(x: Any, name: str) -> torch.Tensor:
    """A 2-D real tensor (numpy is refused by name: a loss must not pick a device)."""
    if not is_torch(x):
        raise InputTypeError(f"{name} must be a torch tensor, got {type(x).__name__} (convert "
                             f"it with torch.as_tensor({name}, device=...))")
    return check_array(x, name)


def _device(module: nn.Module) -> torch.device:
    p = next(iter(module.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def relative_alignment_loss(student_rel: torch.Tensor, teacher_rel: torch.Tensor,
                            kind: Kind = "mse", temperature: float = 0.1) -> torch.Tensor:
    """Disagreement between two relative representations of the same samples on shared anchors.

    Both are (batch, n_anchors) with column j the same anchor; differentiable in `student_rel`
    (and in `teacher_rel` if it requires grad). Zero when the rows agree up to the invariances
    of `kind` (offset and positive scale for mse and cosine).
    """
    student_rel = _tensor(student_rel, "student_rel")
    teacher_rel = _tensor(teacher_rel, "teacher_rel")
    if student_rel.shape != teacher_rel.shape:
        raise ShapeError(f"student and teacher relative representations must have the same "
                         f"shape (same samples, same anchors): {tuple(student_rel.shape)} vs "
                         f"{tuple(teacher_rel.shape)}")
    check_choice(kind, "kind", LOSS_KINDS)
    check_float(temperature, "temperature", min_value=0.0, min_inclusive=False)
    if teacher_rel.device != student_rel.device:
        raise InputTypeError(f"teacher_rel is on {teacher_rel.device} but student_rel is on "
                             f"{student_rel.device}")
    teacher_rel = teacher_rel.to(student_rel.dtype)
    if kind == "mse":
        return (normalize_rows(student_rel) - normalize_rows(teacher_rel)).square().mean()
    if kind == "cosine":
        s = student_rel - student_rel.mean(1, keepdim=True)
        t = teacher_rel - teacher_rel.mean(1, keepdim=True)
        return 1.0 - nn.functional.cosine_similarity(s, t, dim=1, eps=1e-8).mean()
    log_p_s = torch.log_softmax(student_rel / temperature, 1)
    log_p_t = torch.log_softmax(teacher_rel / temperature, 1)
    return nn.functional.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


class RelativeSimilarityLoss(nn.Module):
    """``forward(student_latents, student_anchor_latents, teacher_rel)``: project the student's
    latents onto its own anchor latents and compare with the teacher's relative representation."""

    def __init__(self, similarity: str = "cosine", center: str | None = None, kind: Kind = "mse",
                 temperature: float = 0.1) -> None:
        super().__init__()
        from relreps import similarity as _sim

        _sim.get(similarity)
        check_choice(center, "center", (None, "anchors"))
        check_choice(kind, "kind", LOSS_KINDS)
        check_float(temperature, "temperature", min_value=0.0, min_inclusive=False)
        self.similarity, self.center, self.kind, self.temperature = similarity, center, kind, \
            temperature

    def forward(self, student_latents: torch.Tensor, student_anchor_latents: torch.Tensor,
                teacher_rel: torch.Tensor) -> torch.Tensor:
        rel = relative_projection(_tensor(student_latents, "student_latents"),
                                  _tensor(student_anchor_latents, "student_anchor_latents"),
                                  similarity=self.similarity, center=self.center)
        return relative_alignment_loss(rel, teacher_rel, self.kind, self.temperature)


def mlp_encoder(in_dim: int, latent_dim: int, hidden: int = 128, seed: int = 0) -> nn.Module:
    """A small MLP encoder (Linear, ReLU, Linear) with weights drawn from `seed`."""
    check_int(in_dim, "in_dim", min_value=1)
    check_int(latent_dim, "latent_dim", min_value=1)
    check_int(hidden, "hidden", min_value=1)
    check_int(seed, "seed", min_value=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, latent_dim))


def distill_relative(student: nn.Module, x: np.ndarray, teacher_rel: np.ndarray,
                     anchor_inputs: np.ndarray, *, similarity: str = "cosine",
                     center: str | None = "anchors", kind: Kind = "mse",
                     temperature: float = 0.1, epochs: int = 60, lr: float = 2e-3,
                     batch_size: int = 128, seed: int = 0) -> list[float]:
    """Train `student` (in place, no labels) so its relative space matches `teacher_rel`.

    `teacher_rel[i]` is the teacher's relative representation of input `x[i]` on the anchors whose
    inputs are `anchor_inputs` (same order as the columns). The student re-embeds the anchor
    inputs at every step (gradients flow through them). Arrays may be numpy or torch; they are
    moved to the student's device. Returns the mean loss of each epoch.
    """
    if not isinstance(student, nn.Module):
        raise InputTypeError(f"student must be a torch.nn.Module, got {type(student).__name__}")
    x = check_array(x, "x", min_rows=1)
    teacher_rel = check_array(teacher_rel, "teacher_rel", min_rows=1)
    anchor_inputs = check_array(anchor_inputs, "anchor_inputs", min_rows=1)
    check_same_rows({"x": x, "teacher_rel": teacher_rel})
    if teacher_rel.shape[1] != anchor_inputs.shape[0]:
        raise ShapeError(f"teacher_rel has {teacher_rel.shape[1]} anchor columns but "
                         f"{anchor_inputs.shape[0]} anchor inputs were given")
    if anchor_inputs.shape[1] != x.shape[1]:
        raise ShapeError(f"anchor_inputs have {anchor_inputs.shape[1]} features, x has "
                         f"{x.shape[1]}: both are inputs of the same student")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed)):
        check_int(value, name, min_value=0 if name != "batch_size" else 1)
    check_float(lr, "lr", min_value=0.0, min_inclusive=False)
    loss_fn = RelativeSimilarityLoss(similarity, center, kind, temperature)
    device = _device(student)

    def _t(a: Any) -> torch.Tensor:
        if is_torch(a):
            return a.detach().to(device=device, dtype=torch.float32)
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)

    xt, at, tt = _t(x), _t(anchor_inputs), _t(teacher_rel)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    history = []
    student.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen).to(device)
        total, count = 0.0, 0
        for s in range(0, len(xt), batch_size):
            idx = perm[s:s + batch_size]
            loss = loss_fn(student(xt[idx]), student(at), tt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
        if not np.isfinite(history[-1]):
            raise NumericalError(f"relative distillation diverged at epoch {len(history)} "
                                 "(non-finite loss); lower lr")
    student.eval()
    return history


def _latents(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device=_device(module))
        return module(xt).cpu().numpy()


def distillation_demo(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                      y_test: np.ndarray, teacher_train: np.ndarray, teacher_test: np.ndarray,
                      *, anchor_idx: np.ndarray, student_dim: int = 48, hidden: int = 128,
                      similarity: str = "cosine", center: str | None = "anchors",
                      kind: Kind = "mse", epochs: int = 60, seed: int = 0,
                      head: Any = "logreg") -> dict[str, Any]:
    """Train a fresh encoder to match a trained one's relative space, then stitch the trained
    one's head onto it.

    `teacher_train`/`teacher_test` are the trained encoder's latents of `x_train`/`x_test`;
    `anchor_idx` are train rows used as anchors. A head is fitted (with labels) on the teacher's
    relative space; a fresh MLP student of width `student_dim` is trained with
    :func:`distill_relative` on `x_train` with no labels; the teacher's head then classifies the
    student's relative test representation. Also reports the same head on the untrained student
    (the floor). Returns accuracies, the loss history, the training time and the student.
    """
    from relreps.stitching import make_head, score

    x_train, x_test = check_array(x_train, "x_train", kinds=("numpy",)), \
        check_array(x_test, "x_test", kinds=("numpy",))
    teacher_train = check_array(teacher_train, "teacher_train", kinds=("numpy",))
    teacher_test = check_array(teacher_test, "teacher_test", kinds=("numpy",))
    y_train = check_labels(y_train, "y_train", n=len(x_train))
    y_test = check_labels(y_test, "y_test", n=len(x_test))
    check_same_rows({"x_train": x_train, "teacher_train": teacher_train})
    check_same_rows({"x_test": x_test, "teacher_test": teacher_test})
    anchor_idx = check_indices(anchor_idx, "anchor_idx", n=len(x_train), unique=True)
    check_int(student_dim, "student_dim", min_value=1)
    t_anchors = teacher_train[anchor_idx]
    t_rel_train = relative_projection(teacher_train, t_anchors, similarity=similarity,
                                      center=center)
    t_rel_test = relative_projection(teacher_test, t_anchors, similarity=similarity,
                                     center=center)
    clf = make_head(head, seed).fit(t_rel_train, y_train)
    student = mlp_encoder(x_train.shape[1], student_dim, hidden, seed=seed + 1000)

    def student_rel(x: np.ndarray) -> np.ndarray:
        z = _latents(student, x)
        return relative_projection(z, _latents(student, x_train[anchor_idx]),
                                   similarity=similarity, center=center)

    untrained = score(y_test, clf.predict(student_rel(x_test)), "accuracy")
    t0 = time.perf_counter()
    history = distill_relative(student, x_train, t_rel_train, x_train[anchor_idx],
                               similarity=similarity, center=center, kind=kind, epochs=epochs,
                               seed=seed)
    train_time = time.perf_counter() - t0
    s_rel_test = student_rel(x_test)
    return {"teacher_accuracy": score(y_test, clf.predict(t_rel_test), "accuracy"),
            "student_stitched_accuracy": score(y_test, clf.predict(s_rel_test), "accuracy"),
            "student_stitched_f1": score(y_test, clf.predict(s_rel_test), "f1_weighted"),
            "untrained_stitched_accuracy": untrained, "loss_history": history,
            "train_time_s": train_time, "student": student}
