"""Stage two of SeeMore: the level-specific meta-adapter (DESIGN.md §5).

Every level `l` of every network (`Objective.level_groups()`) has a learning rate `a_l`,
started at the stage's lr. Steps run in cycles of `cycle`: the first `meta_steps` of a cycle
are meta steps, the rest task steps; `cycle_unit` says whether the cycle counts iterations
(the authors': from 1, `i mod cycle < meta_steps`, and with reverse_input both updates of an
iteration are of its kind) or updates (from 0, each update counted).

- Task step: Adam on the parameters, each level stepping with its own rate `a_l`.
- Meta step: from the gradient at θ, the Adam direction `u` (bias-corrected, exactly what an
  Adam step would use) gives the lookahead θ' = θ − a_l·u_l per level. The rates descend
  L(θ') + order_weight·Σ relu(order_lambda·a_l − a_{l+1}) (within each network, along its
  chained levels, shallow to deep) with Adam at `meta_lr`, then are clamped to [0, a_max].
  As `u` does not depend on `a`, dL(θ')/da_l = −⟨∇L(θ'), u_l⟩: one extra forward and
  backward through `torch.func.functional_call` (`Updater.loss_at`), no second-order graph,
  nothing backbone-specific. As in the authors' code, a meta step moves only the rates, never θ.

Moments (`moments`): `separate`, as the authors, keeps one set of Adam moments for the
lookahead (advanced on meta steps only, with its own step count) and one for the task steps
(advanced on task steps only). `shared` (seemore's) advances one set with every gradient taken
at θ: half the optimizer memory, and `u` is the step Adam would really take next. Both sets
start from stage one's when `resume_moments` is called with resume on (`training.stage2.
moments: resumed`, seemore's: a fresh optimizer's first direction is a sign step whose
lookahead overshoots), else fresh, as the authors' stage two.

Levels outside the ordering chain (`Objective.unchained_levels()`, e.g. PredRNN-V2's adapter
at `adapter_level: own`, as in the authors' code) get a rate but no ordering penalty.

Nothing in a step reads the device (issue 13, tests/test_sync.py): the rates are a float64
tensor on the training device, the hypergradient is formed and applied there, and the rates,
lookahead loss and ordering penalty are logged as 0-dim device tensors that the progress log
reads once per log boundary. The lookahead θ − a·u is formed outside autocast, in the master
weights' fp32 (each rate rounded to fp32 once, as a Python-float rate was); autocast covers
only the lookahead's forward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seemore.method.objective import Objective
from seemore.method.settings import LMAConfig
from seemore.method.updater import Autocast, StepLogs, Updater, adam

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def is_meta_update(config: LMAConfig, update: int, updates_per_iteration: int) -> bool:
    """Whether stage two's update `update` (from 0) is a meta step; `seemore plan` counts
    them with it too."""
    if config.cycle_unit == "iteration":
        iteration = update // updates_per_iteration + 1
        return iteration % config.cycle < config.meta_steps
    return update % config.cycle < config.meta_steps


class LMAUpdater(Updater):
    def __init__(
        self,
        objective: Objective,
        lr: float,
        config: LMAConfig,
        autocast: Autocast,
        grad_clip: float | None,
        updates_per_iteration: int = 1,
        resume: bool = True,
    ) -> None:
        super().__init__(objective, autocast, grad_clip)
        self.updates_per_iteration = updates_per_iteration
        self.resume = resume
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
        unchained = objective.unchained_levels()
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
                if level_name not in unchained:
                    chain.append(len(self.level_names))
                self.level_names.append(level_name)
                self.level_parameters.append({n: trainable[n] for n in names if n in trainable})
            self.level_chains.append(chain)
        missing = sorted(set(trainable) - seen)
        if missing:
            raise ValueError(f"trainable parameters in no level, so LMA has no rate: {missing}")

        # The rates: a handful of float64 scalars on the training device (exact in the meta
        # update, never copied to the host inside a step); fused Adam reads no step counter.
        device = next(objective.parameters()).device
        self.rates = torch.full(
            (len(self.level_names),), lr, dtype=torch.float64, device=device, requires_grad=True
        )
        self.rate_optimizer = adam([self.rates], config.meta_lr)
        # Each chain's level indices as a device tensor: indexing with a Python list would
        # copy it to the device (a host sync on CUDA) at every penalty.
        self._chain_indices = [
            torch.tensor(chain, device=device) for chain in self.level_chains if len(chain) > 1
        ]
        # The task steps' moments (with `shared`, every step's).
        self.exp_avg = {n: torch.zeros_like(p) for n, p in trainable.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in trainable.items()}
        self.adam_steps = 0
        # With `separate`, the lookahead's own moments and step count.
        self.separate = config.moments == "separate"
        if self.separate:
            self.lookahead_exp_avg = {n: torch.zeros_like(p) for n, p in trainable.items()}
            self.lookahead_exp_avg_sq = {n: torch.zeros_like(p) for n, p in trainable.items()}
            self.lookahead_adam_steps = 0
        self.steps = 0

    def is_meta_step(self) -> bool:
        """Whether the next `step` is a meta step."""
        return is_meta_update(self.config, self.steps, self.updates_per_iteration)

    def step(self, clip: Tensor, sampling_mask: Tensor | None) -> StepLogs:
        meta = self.is_meta_step()
        self.begin_step()
        self.objective.zero_grad(set_to_none=True)
        logs = self.loss_and_backward(clip, sampling_mask)
        directions = self.advance_moments(lookahead=meta)
        # A task step has no lookahead: NaN, a Python value the divergence guard leaves alone.
        lookahead_loss: Tensor | float = float("nan")
        if meta:
            lookahead_loss = self._update_rates(clip, sampling_mask, directions)
            self.passes.extra["meta_steps"] = self.passes.extra.get("meta_steps", 0) + 1
        else:
            self._move_parameters(directions)
        self.steps += 1
        with torch.no_grad():
            rates = self.rates.detach().clone()  # this step's rates, kept for the log
            penalty = self.ordering_penalty(rates)
        logs.update(meta_step=float(meta), lookahead_loss=lookahead_loss, order_penalty=penalty)
        logs.update({f"rate/{name}": rates[i] for i, name in enumerate(self.level_names)})
        return logs

    def advance_moments(self, lookahead: bool = False) -> dict[str, Tensor]:
        """Fold the gradients in `.grad` into Adam's moments and return the bias-corrected
        direction `u` per parameter (an Adam step is θ − lr·u). A parameter the loss did not
        reach counts as a zero gradient. With `separate` moments, `lookahead` picks the
        lookahead's set, else the task steps'."""
        if lookahead and self.separate:
            self.lookahead_adam_steps += 1
            steps = self.lookahead_adam_steps
            moments = self.lookahead_exp_avg, self.lookahead_exp_avg_sq
        else:
            self.adam_steps += 1
            steps = self.adam_steps
            moments = self.exp_avg, self.exp_avg_sq
        beta1, beta2 = ADAM_BETAS
        correction1 = 1 - beta1**steps
        correction2 = 1 - beta2**steps
        directions = {}
        with torch.no_grad():
            for level in self.level_parameters:
                for name, parameter in level.items():
                    grad = parameter.grad
                    if grad is None:
                        grad = torch.zeros_like(parameter)
                    exp_avg, exp_avg_sq = moments[0][name], moments[1][name]
                    exp_avg.lerp_(grad, 1 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denominator = (exp_avg_sq / correction2).sqrt_().add_(ADAM_EPS)
                    directions[name] = (exp_avg / correction1).div_(denominator)
        return directions

    def lookahead_hypergradient(
        self, clip: Tensor, sampling_mask: Tensor | None, directions: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """dL(θ − a·u)/da per level at the current rates (float64, on the rates' device), and
        L(θ − a·u) (a 0-dim device tensor)."""
        lookahead = {}
        # Outside autocast, in the master weights' fp32: θ − a·u keeps its dependence on a
        # whatever precision the forward then runs in (bf16 would round most of a·u away).
        rates = self.rates.detach().to(torch.float32)
        with torch.no_grad():
            for level, parameters in enumerate(self.level_parameters):
                for name, parameter in parameters.items():
                    lookahead[name] = parameter.detach() - rates[level] * directions[name]
        for tensor in lookahead.values():
            tensor.requires_grad_()
        with self.autocast():
            result = self.loss_at(lookahead, clip, sampling_mask)
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
        hypergradient = torch.stack(per_level).to(self.rates)
        return hypergradient, self.kept({"loss": result.loss.detach()})["loss"]

    def ordering_penalty(self, rates: Tensor) -> Tensor:
        """order_weight·Σ relu(order_lambda·a_l − a_{l+1}) along each network's levels: zero
        exactly when every chained level's rate is at least order_lambda times the one before."""
        config = self.config
        total = rates.new_zeros(())
        for chain in self._chain_indices:
            chain_rates = rates[chain]
            gaps = config.order_lambda * chain_rates[:-1] - chain_rates[1:]
            total = total + torch.relu(gaps).sum()
        return config.order_weight * total

    def _update_rates(
        self, clip: Tensor, sampling_mask: Tensor | None, directions: dict[str, Tensor]
    ) -> Tensor:
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
        # θ += (−a_l)·u in one rounding, as `sub_(u, alpha=a_l)` with a Python-float rate did
        # (bit for bit on CPU), but with the rate read on the device.
        with torch.no_grad():
            negative_rates = (-self.rates.detach()).to(torch.float32)
            for level, parameters in enumerate(self.level_parameters):
                for name, parameter in parameters.items():
                    parameter.addcmul_(directions[name], negative_rates[level])

    def resume_moments(self, stage_one: dict[str, object]) -> None:
        # torch's Adam keys its state by the index of the parameter in objective.parameters(),
        # the order named_parameters() gives the names in.
        if not self.resume:
            return
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
        if self.separate:
            for name, tensor in self.exp_avg.items():
                self.lookahead_exp_avg[name].copy_(tensor)
                self.lookahead_exp_avg_sq[name].copy_(self.exp_avg_sq[name])
            self.lookahead_adam_steps = self.adam_steps

    def state_dict(self) -> dict[str, object]:
        state: dict[str, object] = {
            "rates": self.rates.detach().clone(),
            "rate_adam": self.rate_optimizer.state_dict(),
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "adam_steps": self.adam_steps,
            "steps": self.steps,
        }
        if self.separate:
            state.update(
                lookahead_exp_avg=self.lookahead_exp_avg,
                lookahead_exp_avg_sq=self.lookahead_exp_avg_sq,
                lookahead_adam_steps=self.lookahead_adam_steps,
            )
        return state

    def load_state_dict(self, state: dict[str, object]) -> None:
        with torch.no_grad():
            self.rates.copy_(state["rates"])  # type: ignore[arg-type]
        self.rate_optimizer.load_state_dict(state["rate_adam"])  # type: ignore[arg-type]
        keys = ["exp_avg", "exp_avg_sq"]
        if self.separate:
            keys += ["lookahead_exp_avg", "lookahead_exp_avg_sq"]
            self.lookahead_adam_steps = int(state["lookahead_adam_steps"])  # type: ignore[arg-type]
        for key in keys:
            stored = state[key]
            for name, tensor in getattr(self, key).items():
                tensor.copy_(stored[name])  # type: ignore[index]
        self.adam_steps = int(state["adam_steps"])  # type: ignore[arg-type]
        self.steps = int(state["steps"])  # type: ignore[arg-type]
