"""The pack's Adam moves each slot as torch's Adam moves that slot's own tensors."""

from __future__ import annotations

import torch

from zssr_batch.pack.nets import PackedAdam, PackedNets



def test_packed_adam_matches_torch_adam_per_slot():
    # Two layers of different shapes, both views of the pack's (K, P) rows: each slot must move as
    # torch's Adam moves that slot's own two tensors, and a slot that sits out a step must not move.
    torch.manual_seed(0)
    nets = PackedNets(3, 2, 2, 4)
    with torch.no_grad():
        nets.flat.copy_(torch.randn(nets.flat.shape))
    lrs = (1e-3, 1e-4, 5e-3)
    ref = [[torch.nn.Parameter(w[i].detach().clone()) for w in nets.weights] for i in range(3)]
    opts = [torch.optim.Adam(ps, lr=lr) for ps, lr in zip(ref, lrs)]
    popt = PackedAdam(nets.flat)
    for step in range(7):
        grads = [torch.randn(w.shape) for w in nets.weights]
        active = torch.tensor([True, step % 2 == 0, step < 4])
        for i in range(3):
            if active[i]:
                for p, g in zip(ref[i], grads):
                    p.grad = g[i].clone()
                opts[i].step()
        popt.step([g.clone() for g in grads], torch.tensor(lrs, dtype=torch.float64), active)
    for i in range(3):
        for p, w in zip(ref[i], nets.weights):
            assert torch.allclose(w[i].detach(), p.detach(), atol=1e-6), i
