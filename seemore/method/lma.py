"""Stage two of SeeMore: the level-specific meta-adapter (DESIGN.md §5).

Every level `l` of every network (`Objective.level_groups()`) has a learning rate `a_l`,
started at the stage's lr. Updater steps run in cycles of `cycle` steps: the first
`meta_steps` of a cycle are meta steps, the rest task steps.

- Task step: Adam on the parameters, each level stepping with its own rate `a_l`.
- Meta step: from the gradient at θ, the Adam direction `u` (bias-corrected, exactly what an
  Adam step would use) gives the lookahead θ' = θ − a_l·u_l per level. The rates descend
  L(θ') + order_weight·Σ relu(order_lambda·a_l − a_{l+1}) (within each network, shallow to
  deep) with Adam at `meta_lr`, then are clamped to [0, a_max]. As `u` does not depend on
  `a`, dL(θ')/da_l = −⟨∇L(θ'), u_l⟩: one extra forward and backward through
  `torch.func.functional_call`, no second-order graph, nothing backbone-specific.
  As in the authors' code, a meta step moves only the rates, never θ.

One difference from the authors' code: they keep separate Adam moments for the lookahead and
for the task steps; here one set of moments serves both (every gradient taken at θ updates
it), which halves the optimizer memory and lets `u` be the step Adam would really take next.
The moments start from stage one's (`resume_moments`), as the plain fine-tuning of the other
variants does: a fresh optimizer's first direction is a sign step whose lookahead overshoots.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from seemore.method.objective import Objective
from seemore.method.settings import LMAConfig
from seemore.method.updater import Autocast, Updater

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class LMAUpdater(Updater):
    def __init__(
        self,
        objective: Objective,
        lr: float,
        config: LMAConfig,
        autocast: Autocast,
        grad_clip: float | None,
    ) -> None:
        super().__init__(objective, autocast, grad_clip)
        if not 0 < lr <= config.a_max:
            raise ValueError(
                f"LMA starts every rate at training.stage2.lr = {lr}, which must lie in "
                f"(0, method.lma.a_max = {config.a_max}]; raise method.lma.a_max or lower the lr"
            )
        if config.meta_steps > config.cycle:
            raise ValueError(
                f"method.lma.meta_steps = {config.meta_steps} exceeds method.lma.cycle = "
                f"{config.cycle}: a cycle is its meta steps followed by its task steps"
            )
        self.config = config
        self.level_names: list[str] = []
        # Per level, the trainable parameters it holds, by their name in the objective.
        self.level_parameters: list[dict[str, torch.nn.Parameter]] = []
        # Per network, the indices of its levels, shallow to deep (for the ordering penalty).
        self.level_chains: list[list[int]] = []
        named = dict(objective.named_parameters())
        trainable = {n: p for n, p in named.items() if p.requires_grad}
        seen: set[str] = set()
        for network_levels in objective.level_groups():
            chain = []
            for level_name, names in network_levels:
                unknown = [n for n in names if n not in named]
                repeated = seen.intersection(names)
                if unknown or repeated:
                    raise ValueError(
                        f"level {level_name!r} names parameters that are not in the objective "
                        f"({unknown}) or already in another level ({sorted(repeated)})"
                    )
                seen.update(names)
                chain.append(len(self.level_names))
                self.level_names.append(level_name)
                self.level_parameters.append({n: trainable[n] for n in names if n in trainable})
            self.level_chains.append(chain)
        missing = sorted(set(trainable) - seen)
        if missing:
            raise ValueError(f"trainable parameters in no level, so LMA has no rate: {missing}")

        # Rates live on the CPU in float64: a handful of scalars, exact in the meta update.
        self.rates = torch.full(
            (len(self.level_names),), lr, dtype=torch.float64, requires_grad=True
        )
        self.rate_optimizer = torch.optim.Adam([self.rates], lr=config.meta_lr)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in trainable.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in trainable.items()}
        self.adam_steps = 0
        self.steps = 0

    def is_meta_step(self) -> bool:
        """Whether the next `step` is a meta step."""
        return self.steps % self.config.cycle < self.config.meta_steps

    def step(self, clip: Tensor, sampling_mask: Tensor | None) -> dict[str, float]:
        meta = self.is_meta_step()
        self.objective.zero_grad(set_to_none=True)
        logs = self.loss_and_backward(clip, sampling_mask)
        directions = self.advance_moments()
        lookahead_loss = float("nan")
        if meta:
            lookahead_loss = self._update_rates(clip, sampling_mask, directions)
            self.passes.extra["meta_steps"] = self.passes.extra.get("meta_steps", 0) + 1
        else:
            self._move_parameters(directions)
        self.steps += 1
        with torch.no_grad():
            penalty = float(self.ordering_penalty(self.rates))
        logs.update(meta_step=float(meta), lookahead_loss=lookahead_loss, order_penalty=penalty)
        logs.update(
            {
                f"rate/{name}": rate
                for name, rate in zip(self.level_names, self.rates.detach().tolist(), strict=True)
            }
        )
        return logs

    def advance_moments(self) -> dict[str, Tensor]:
        """Fold the gradients in `.grad` into Adam's moments and return the bias-corrected
        direction `u` per parameter (an Adam step is θ − lr·u). A parameter the loss did not
        reach counts as a zero gradient."""
        self.adam_steps += 1
        beta1, beta2 = ADAM_BETAS
        correction1 = 1 - beta1**self.adam_steps
        correction2 = 1 - beta2**self.adam_steps
        directions = {}
        with torch.no_grad():
            for level in self.level_parameters:
                for name, parameter in level.items():
                    grad = parameter.grad
                    if grad is None:
                        grad = torch.zeros_like(parameter)
                    exp_avg, exp_avg_sq = self.exp_avg[name], self.exp_avg_sq[name]
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = (exp_avg_sq / correction2).sqrt_().add_(ADAM_EPS)
                    directions[name] = (exp_avg / correction1).div_(denominator)
        return directions

    def lookahead_hypergradient(
        self, clip: Tensor, sampling_mask: Tensor | None, directions: dict[str, Tensor]
    ) -> tuple[Tensor, float]:
        """dL(θ − a·u)/da per level at the current rates (float64, CPU), and L(θ − a·u)."""
        lookahead = {}
        for rate, level in zip(self.rates.detach().tolist(), self.level_parameters, strict=True):
            for name, parameter in level.items():
                lookahead[name] = (parameter.detach() - rate * directions[name]).requires_grad_()
        with self.autocast():
            result = functional_call(self.objective, lookahead, (clip, sampling_mask))
        grads = torch.autograd.grad(result.loss, list(lookahead.values()), allow_unused=True)
        self.passes.forward += 1
        self.passes.backward += 1
        grad_by_name = dict(zip(lookahead, grads, strict=True))
        per_level = []
        for level in self.level_parameters:
            inner = [
                torch.sum(grad_by_name[name] * directions[name])
                for name in level
                if grad_by_name[name] is not None
            ]
            per_level.append(-torch.stack(inner).sum() if inner else clip.new_zeros(()))
        hypergradient = torch.stack(per_level).to(device="cpu", dtype=torch.float64)
        return hypergradient, float(result.loss.detach())

    def ordering_penalty(self, rates: Tensor) -> Tensor:
        """order_weight·Σ relu(order_lambda·a_l − a_{l+1}) along each network's levels: zero
        exactly when every level's rate is at least order_lambda times the one before."""
        config = self.config
        total = rates.new_zeros(())
        for chain in self.level_chains:
            chain_rates = rates[chain]
            gaps = config.order_lambda * chain_rates[:-1] - chain_rates[1:]
            total = total + torch.relu(gaps).sum()
        return config.order_weight * total

    def _update_rates(
        self, clip: Tensor, sampling_mask: Tensor | None, directions: dict[str, Tensor]
    ) -> float:
        hypergradient, lookahead_loss = self.lookahead_hypergradient(
            clip, sampling_mask, directions
        )
        self.rate_optimizer.zero_grad(set_to_none=True)
        self.ordering_penalty(self.rates).backward()
        with torch.no_grad():
            self.rates.grad += hypergradient
        self.rate_optimizer.step()
        with torch.no_grad():
            self.rates.clamp_(0.0, self.config.a_max)
        return lookahead_loss

    def _move_parameters(self, directions: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for rate, level in zip(
                self.rates.detach().tolist(), self.level_parameters, strict=True
            ):
                for name, parameter in level.items():
                    parameter.sub_(directions[name], alpha=rate)

    def resume_moments(self, stage_one: dict[str, object]) -> None:
        # torch's Adam keys its state by the index of the parameter in objective.parameters(),
        # the order named_parameters() gives the names in.
        adam = stage_one["adam"]
        names = [name for name, _ in self.objective.named_parameters()]
        steps = set()
        with torch.no_grad():
            for index, moments in adam["state"].items():  # type: ignore[index]
                name = names[index]
                if name in self.exp_avg:
                    self.exp_avg[name].copy_(moments["exp_avg"])
                    self.exp_avg_sq[name].copy_(moments["exp_avg_sq"])
                    steps.add(int(moments["step"]))
        if len(steps) > 1:
            raise ValueError(f"stage-one Adam moments of different ages {sorted(steps)}")
        self.adam_steps = steps.pop() if steps else 0

    def state_dict(self) -> dict[str, object]:
        return {
            "rates": self.rates.detach().clone(),
            "rate_adam": self.rate_optimizer.state_dict(),
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "adam_steps": self.adam_steps,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        with torch.no_grad():
            self.rates.copy_(state["rates"])  # type: ignore[arg-type]
        self.rate_optimizer.load_state_dict(state["rate_adam"])  # type: ignore[arg-type]
        for key in ("exp_avg", "exp_avg_sq"):
            stored = state[key]
            for name, tensor in getattr(self, key).items():
                tensor.copy_(stored[name])  # type: ignore[index]
        self.adam_steps = int(state["adam_steps"])  # type: ignore[arg-type]
        self.steps = int(state["steps"])  # type: ignore[arg-type]
