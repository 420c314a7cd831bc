"""Seeded training of every preset on AIB-DI-v0, fingerprinted: the numerics guard of refactorings.

``python tests/preset_fingerprints.py`` prints ``{preset: sha256 of the final parameters}``; ``--write`` stores them in
``tests/data/preset_fingerprints.json``, the fixture ``test_presets_train_bit_identically`` compares against. Rewrite it
only in a commit that changes numbers on purpose, and say why there.

The run pins the kernels to code paths that give the same bits on every x86-64 CPU (``REPRODUCIBLE_ENV``): MKL's
conditional numerical reproducibility mode, ATen's scalar kernels and oneDNN's SSE4.1 kernels, so that an AVX2 CI
machine reproduces a fingerprint recorded on an AVX-512 one (unpinned, the two differ after a few rounds). The variables
act at import time, so callers run this file in a fresh process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

FIXTURE = Path(__file__).with_name("data") / "preset_fingerprints.json"
METHODS = ("dmash", "dma_star", "dma", "dma_pearl", "concat", "decision_adapter", "dr")
ROUNDS = 200  # update rounds after the random warm-up
REPRODUCIBLE_ENV = {
    "MKL_CBWR": "COMPATIBLE",  # MKL: the same results on any x86-64 CPU
    "ATEN_CPU_CAPABILITY": "default",  # ATen: no AVX2/AVX-512 kernels (their reductions sum in another order)
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN (it runs some of the matrix products): the kernels every x86-64 CPU has
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def fingerprint(method: str, rounds: int = ROUNDS) -> str:
    import torch as th

    import aib
    from sb3_dmash import DMASHSAC

    th.set_num_threads(1)
    env_kwargs = {"context_aware": True} if method in ("concat", "decision_adapter") else {}
    env = aib.make_vec_env("AIB-DI-v0", "train", n_envs=20, seed=3, env_kwargs=env_kwargs)
    model = DMASHSAC(
        "MlpPolicy",
        env,
        method=method,
        learning_starts=20 * 30,
        batch_size=120,
        buffer_size=20 * 1000,
        seed=3,
        device="cpu",
        policy_kwargs=dict(net_arch=[32, 32], hypernet_arch=[16], encoder_dim=16),
    )
    model.learn(20 * (30 + rounds))
    digest = hashlib.sha256()
    for name, tensor in sorted(model.policy.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", default=list(METHODS))
    parser.add_argument("--write", action="store_true", help=f"store the fingerprints in {FIXTURE}")
    args = parser.parse_args()
    missing = {k: v for k, v in REPRODUCIBLE_ENV.items() if os.environ.get(k) != v}
    if missing:
        raise SystemExit(f"run with these variables set (they act at import time): {missing}")
    prints = {method: fingerprint(method) for method in args.methods}
    print(json.dumps(prints, indent=1))
    if args.write:
        FIXTURE.write_text(json.dumps(prints, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
