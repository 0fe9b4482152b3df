"""PyTorch peers of two of the project's updates, for ``benchmarks/learner.py --against-pytorch``.

Written here from the papers and the facts in the project's references (not copied):

* :class:`BTRNetwork` / :class:`BTRUpdate`: Beyond The Rainbow's IQN (Clark et al. 2024):
  Impala CNN (16/32/32 x width 2; each stage a 3x3 conv, 3x3 stride-2 max-pool and two
  residual blocks whose convs are spectral-normalised), ReLU, adaptive max-pool 6x6; 64
  cosines -> Linear(64, 2304) + ReLU multiplied into the features; dueling heads of factorised
  NoisyLinear(2304, 512) -> NoisyLinear(512, 1 | A) with sigma0 0.5. The update is the
  Munchausen-IQN step of BTR: the target net on the next states (soft value under
  softmax(q / tau)) and on the states (the clipped log-policy bonus), the online net on the
  states with 8 taus, quantile Huber (kappa 1) weighted by the importance weights, Adam
  (lr 1e-4, eps 1.95e-5) after clipping the grad norm to 10; new priorities returned.
* :class:`TQCUpdate`: TQC (Kuznetsov et al. 2020) with the shapes of the ``tqc_tm20`` preset:
  a Nature CNN (32/64/64) per actor and per critic, MLPs 2 x 256, 2 critics x 25 quantiles,
  8 dropped per critic, fixed alpha, gradient clips 1.0, Polyak 0.005.

Unlike the JAX update, which samples its batch from the device replay (PER included), these
take a batch already on the host: the comparison leaves sampling out of torch's time.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class NoisyLinear(nn.Module):
    """Factorised Gaussian NoisyNet layer (Fortunato et al. 2018); fresh noise on
    :meth:`reset_noise`, means only when ``noisy`` is False."""

    def __init__(self, n_in: int, n_out: int, sigma0: float = 0.5):
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        self.weight_mu = nn.Parameter(torch.empty(n_out, n_in).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((n_out, n_in), sigma0 / math.sqrt(n_in)))
        self.bias_mu = nn.Parameter(torch.empty(n_out).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((n_out,), sigma0 / math.sqrt(n_in)))
        self.register_buffer("eps_in", torch.zeros(n_in))
        self.register_buffer("eps_out", torch.zeros(n_out))
        self.noisy = True

    @staticmethod
    def _f(x: torch.Tensor) -> torch.Tensor:
        return x.sign() * x.abs().sqrt()

    def reset_noise(self) -> None:
        self.eps_in.copy_(self._f(torch.randn_like(self.eps_in)))
        self.eps_out.copy_(self._f(torch.randn_like(self.eps_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.noisy:
            return F.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)
        return F.linear(x, weight, self.bias_mu + self.bias_sigma * self.eps_out)


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv1 = spectral_norm(nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv0(F.relu(x))))


class BTRNetwork(nn.Module):
    """BTR's IQN network. forward(obs uint8 [B, 4, 84, 84], taus float32 [B, N]) -> quantiles
    float32 [B, N, A]."""

    def __init__(self, num_actions: int, frame_stack: int = 4, width: int = 2,
                 num_cosines: int = 64, hidden: int = 512):
        super().__init__()
        layers, c_in = [], frame_stack
        for c in (16 * width, 32 * width, 32 * width):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.MaxPool2d(3, 2, padding=1),
                       _Residual(c), _Residual(c)]
            c_in = c
        self.torso = nn.Sequential(*layers, nn.ReLU(), nn.AdaptiveMaxPool2d((6, 6)),
                                   nn.Flatten())
        features = c_in * 36
        self.num_cosines = num_cosines
        self.tau_embedding = nn.Linear(num_cosines, features)
        self.value = nn.ModuleList([NoisyLinear(features, hidden), NoisyLinear(hidden, 1)])
        self.advantage = nn.ModuleList([NoisyLinear(features, hidden),
                                        NoisyLinear(hidden, num_actions)])

    def noisy_layers(self):
        return [m for m in self.modules() if isinstance(m, NoisyLinear)]

    def forward(self, obs: torch.Tensor, taus: torch.Tensor) -> torch.Tensor:
        features = self.torso(obs.float() / 255.0)                                  # [B, F]
        i = torch.arange(self.num_cosines, dtype=torch.float32)
        embedding = F.relu(self.tau_embedding(torch.cos(math.pi * i * taus[..., None])))
        x = features[:, None, :] * embedding                                        # [B, N, F]
        value = self.value[1](F.relu(self.value[0](x)))
        adv = self.advantage[1](F.relu(self.advantage[0](x)))
        return value + adv - adv.mean(dim=-1, keepdim=True)


def quantile_huber(dist: torch.Tensor, taus: torch.Tensor, targets: torch.Tensor,
                   kappa: float = 1.0) -> torch.Tensor:
    """Per-example quantile Huber loss: dist [B, N], taus [B, N], targets [B, N'] -> [B]
    (sum over the predictions of the mean over the targets, / kappa)."""
    u = targets[:, None, :] - dist[:, :, None]                                      # [B, N, N']
    huber = torch.where(u.abs() <= kappa, 0.5 * u ** 2, kappa * (u.abs() - 0.5 * kappa))
    weight = (taus[:, :, None] - (u.detach() < 0).float()).abs()
    return (weight * huber / kappa).mean(dim=2).sum(dim=1)


class BTRUpdate:
    """BTR's Munchausen-IQN grad step on a host batch; ``act`` is its noisy greedy action.

    Batch: obs, next_obs uint8 [B, 4, 84, 84]; action int64 [B]; reward, discount, weights
    float32 [B]. ``__call__`` returns the new priorities float32 [B].
    """

    def __init__(self, num_actions: int, num_taus: int = 8, lr: float = 1e-4,
                 adam_eps: float = 1.95e-5, max_grad_norm: float = 10.0,
                 munchausen_tau: float = 0.03, munchausen_alpha: float = 0.9,
                 munchausen_clip: float = -1.0):
        self.num_actions = num_actions
        self.online = BTRNetwork(num_actions)
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.online.parameters(), lr=lr, eps=adam_eps)
        self.num_taus, self.max_grad_norm = num_taus, max_grad_norm
        self.m_tau, self.m_alpha, self.m_clip = munchausen_tau, munchausen_alpha, munchausen_clip

    def _reset_noise(self, net: BTRNetwork) -> None:
        for layer in net.noisy_layers():
            layer.reset_noise()

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        obs, next_obs, action = batch["obs"], batch["next_obs"], batch["action"]
        b, n = action.shape[0], self.num_taus
        self._reset_noise(self.online)
        self._reset_noise(self.target)
        with torch.no_grad():
            z_next = self.target(next_obs, torch.rand(b, n))                        # [B, N, A]
            q_next = z_next.mean(dim=1)
            log_pi_next = F.log_softmax(q_next / self.m_tau, dim=1)
            pi_next = log_pi_next.exp()
            soft = (pi_next[:, None, :] * (z_next - self.m_tau * log_pi_next[:, None, :])).sum(2)
            q_now = self.target(obs, torch.rand(b, n)).mean(dim=1)
            log_pi = F.log_softmax(q_now / self.m_tau, dim=1).gather(1, action[:, None])[:, 0]
            bonus = self.m_alpha * torch.clamp(self.m_tau * log_pi, self.m_clip, 0.0)
            targets = (batch["reward"] + bonus)[:, None] + batch["discount"][:, None] * soft
        taus = torch.rand(b, n)
        z = self.online(obs, taus)
        z_a = z.gather(2, action[:, None, None].expand(b, n, 1))[..., 0]           # [B, N]
        loss = (quantile_huber(z_a, taus, targets) * batch["weights"]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.online.parameters(), self.max_grad_norm)
        self.optimizer.step()
        return (targets.mean(dim=1) - z_a.detach().mean(dim=1)).abs()

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Greedy actions int64 [E] of the noisy online net on obs uint8 [E, 4, 84, 84]."""
        obs = torch.from_numpy(obs)
        q = self.online(obs, torch.rand(obs.shape[0], self.num_taus)).mean(dim=1)
        return q.argmax(1).numpy()

    def random_batch(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        """A batch of random data with the fields ``__call__`` reads."""
        rng = np.random.default_rng(seed)
        return _random_batch(rng, batch, (4, 84, 84),
                             torch.from_numpy(rng.integers(0, self.num_actions, batch)))


def _random_batch(rng, batch, obs_shape, action):
    frames = lambda: torch.from_numpy(rng.integers(0, 256, (batch, *obs_shape), np.uint8))
    floats = lambda: torch.from_numpy(rng.uniform(0, 1, batch).astype(np.float32))
    return dict(obs=frames(), next_obs=frames(), action=action, reward=floats(),
                discount=floats(), weights=floats())


def _nature_cnn(frame_stack: int, image_size: int) -> tuple[nn.Module, int]:
    cnn = nn.Sequential(nn.Conv2d(frame_stack, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2),
                        nn.ReLU(), nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten())
    with torch.no_grad():
        size = cnn(torch.zeros(1, frame_stack, image_size, image_size)).shape[1]
    return cnn, size


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, n_out))


class _Actor(nn.Module):
    def __init__(self, frame_stack, image_size, hidden, action_dim):
        super().__init__()
        self.cnn, size = _nature_cnn(frame_stack, image_size)
        self.mlp = _mlp(size, hidden, 2 * action_dim)

    def forward(self, obs):
        mean, log_std = self.mlp(self.cnn(obs.float() / 255.0)).chunk(2, dim=-1)
        return mean, log_std.clamp(-20.0, 2.0)

    def sample(self, obs):
        mean, log_std = self(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        log_prob = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std
                    - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
        return torch.tanh(u), log_prob


class _Critics(nn.Module):
    def __init__(self, frame_stack, image_size, hidden, action_dim, num_critics, num_quantiles):
        super().__init__()
        cnns, heads = [], []
        for _ in range(num_critics):
            cnn, size = _nature_cnn(frame_stack, image_size)
            cnns.append(cnn)
            heads.append(_mlp(size + action_dim, hidden, num_quantiles))
        self.cnns, self.heads = nn.ModuleList(cnns), nn.ModuleList(heads)

    def forward(self, obs, action):
        x = obs.float() / 255.0
        return torch.stack([head(torch.cat([cnn(x), action], dim=-1))
                            for cnn, head in zip(self.cnns, self.heads)], dim=1)   # [B, N, M]


class TQCUpdate:
    """TQC grad step (critics, then actor) on a host batch with ``tqc_tm20``'s shapes.

    Batch: obs, next_obs uint8 [B, 4, S, S]; action float32 [B, d]; reward, discount, weights
    float32 [B]. ``__call__`` returns the new priorities float32 [B].
    """

    def __init__(self, action_dim: int = 3, frame_stack: int = 4, image_size: int = 64,
                 hidden=(256, 256), num_critics: int = 2, num_quantiles: int = 25,
                 drop_per_critic: int = 8, alpha: float = 0.01, actor_lr: float = 1e-5,
                 critic_lr: float = 5e-5, grad_clip: float = 1.0, polyak: float = 0.005):
        self.obs_shape = (frame_stack, image_size, image_size)
        self.action_dim = action_dim
        self.actor = _Actor(frame_stack, image_size, hidden, action_dim)
        self.critics = _Critics(frame_stack, image_size, hidden, action_dim, num_critics,
                                num_quantiles)
        self.target = copy.deepcopy(self.critics)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=actor_lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=critic_lr)
        self.keep = num_critics * (num_quantiles - drop_per_critic)
        self.taus = (torch.arange(num_quantiles, dtype=torch.float32) + 0.5) / num_quantiles
        self.alpha, self.grad_clip, self.polyak = alpha, grad_clip, polyak

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        obs, next_obs = batch["obs"], batch["next_obs"]
        b = obs.shape[0]
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_obs)
            next_z = self.target(next_obs, next_action).reshape(b, -1)
            atoms = torch.sort(next_z, dim=1).values[:, :self.keep]
            backup = (batch["reward"][:, None] + batch["discount"][:, None]
                      * (atoms - self.alpha * next_log_prob[:, None]))
        z = self.critics(obs, batch["action"])                                      # [B, N, M]
        n, m = z.shape[1:]
        per_critic = torch.stack([quantile_huber(z[:, i], self.taus.expand(b, m), backup)
                                  for i in range(n)], dim=1)
        critic_loss = (per_critic.mean(dim=1) / m * batch["weights"]).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        nn.utils.clip_grad_norm_(self.critics.parameters(), self.grad_clip)
        self.critic_opt.step()

        action, log_prob = self.actor.sample(obs)
        self.critics.requires_grad_(False)  # the actor's loss differentiates the actor only
        q = self.critics(obs, action).mean(dim=(1, 2))
        actor_loss = (self.alpha * log_prob - q).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.critics.requires_grad_(True)
        nn.utils.clip_grad_norm_(self.actor.parameters(), self.grad_clip)
        self.actor_opt.step()
        with torch.no_grad():
            for p, t in zip(self.critics.parameters(), self.target.parameters()):
                t.lerp_(p, self.polyak)
        return (backup.mean(dim=1) - z.detach().mean(dim=(1, 2))).abs()

    def random_batch(self, batch: int, seed: int) -> dict[str, torch.Tensor]:
        """A batch of random data with the fields ``__call__`` reads."""
        rng = np.random.default_rng(seed)
        action = rng.uniform(-1, 1, (batch, self.action_dim)).astype(np.float32)
        return _random_batch(rng, batch, self.obs_shape, torch.from_numpy(action))
