"""Seconds to move a teacher's top-k (fp32 values + int32 ids) between Ray processes: torch's pickle vs raw bytes.

    python benchmarks/ray_tensor_transfer.py --out /tmp/ray_tx                       # issue 16's shape, 12.6 MB
    python benchmarks/ray_tensor_transfer.py --rows 256 --tokens 4096 --out /tmp/ray_tx_big   # 537 MB

The payload is what a step moves from the teacher to the trainer through the driver: values
``[rows, tokens, k]`` fp32 and ids int32 (``k x 8`` bytes per token). Per serializer, one local Ray
cluster with two actors (all three processes use it):

* ``fetch``: ``ray.get`` of the pair an actor returns, into the driver (the teacher's answer);
* ``send``: the driver passes the pair to the other actor, which touches it (the trainer's call);
* ``pass_ref``: the first actor's result handed to the second as an object ref, never in the driver.

``torch`` is Ray's default (torch's pickle of the storage); ``bytes`` is
``nemo_distill.distributed.tensor_serialization`` (what the library registers). Median of
``--repeats`` after one warm-up. Prints a table, writes ``<out>/ray_tensor_transfer.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SERIALIZERS = ("torch", "bytes")
HOPS = ("fetch", "send", "pass_ref")


def use_serializer(name: str) -> None:
    """Make this process send tensors with torch's pickle (``torch``) or as raw bytes (``bytes``)."""
    import ray
    import torch

    from nemo_distill.distributed.tensor_serialization import tensor_from_payload, tensor_to_payload

    if name == "bytes":
        ray.util.register_serializer(torch.Tensor, serializer=tensor_to_payload, deserializer=tensor_from_payload)
    else:
        ray.util.deregister_serializer(torch.Tensor)


def make_actor_class():
    import ray

    @ray.remote
    class Endpoint:
        def __init__(self, serializer: str, rows: int, tokens: int, k: int):
            import torch

            use_serializer(serializer)
            generator = torch.Generator().manual_seed(0)
            self.values = torch.randn(rows, tokens, k, generator=generator)
            self.indices = torch.randint(0, 151936, (rows, tokens, k), generator=generator, dtype=torch.int32)

        def topk(self):
            return self.values, self.indices

        def consume(self, pair) -> float:
            values, indices = pair
            return float(values[-1, -1, -1]) + int(indices[-1, -1, -1])  # touch the last bytes

    return Endpoint


def time_serializer(name: str, rows: int, tokens: int, k: int, repeats: int) -> dict:
    import ray

    use_serializer(name)
    endpoint = make_actor_class()
    teacher, trainer = endpoint.remote(name, rows, tokens, k), endpoint.remote(name, 1, 1, 1)
    seconds: dict[str, list[float]] = {hop: [] for hop in HOPS}
    for repeat in range(repeats + 1):  # the first round warms up
        started = time.perf_counter()
        pair = ray.get(teacher.topk.remote())
        fetched = time.perf_counter()
        ray.get(trainer.consume.remote(pair))
        sent = time.perf_counter()
        ray.get(trainer.consume.remote(teacher.topk.remote()))
        passed = time.perf_counter()
        if repeat:
            seconds["fetch"].append(fetched - started)
            seconds["send"].append(sent - fetched)
            seconds["pass_ref"].append(passed - sent)
        del pair
    for actor in (teacher, trainer):
        ray.kill(actor)
    return {hop: statistics.median(values) for hop, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="sequences (default 64: issue 16's batch)")
    parser.add_argument("--tokens", type=int, default=384, help="positions per sequence (default 128 + 256)")
    parser.add_argument("--k", type=int, default=64, help="top-k entries per position")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--out", default="results/ray_tensor_transfer")
    args = parser.parse_args(argv)
    import ray

    payload_mb = args.rows * args.tokens * args.k * 8 / 1e6
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # the actors import nemo_distill
    try:
        results = {name: time_serializer(name, args.rows, args.tokens, args.k, args.repeats) for name in SERIALIZERS}
    finally:
        ray.shutdown()
    print(f"payload: values [{args.rows}, {args.tokens}, {args.k}] fp32 + ids int32 = {payload_mb:.1f} MB; "
          f"median ms of {args.repeats} after a warm-up")
    print(f"{'serializer':10} " + " ".join(f"{hop + ' ms':>12}" for hop in HOPS) + f" {'fetch MB/s':>11}")
    for name, row in results.items():
        print(f"{name:10} " + " ".join(f"{1000 * row[hop]:12.1f}" for hop in HOPS) + f" {payload_mb / row['fetch']:11.0f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"rows": args.rows, "tokens": args.tokens, "k": args.k, "payload_mb": payload_mb, "repeats": args.repeats,
              "seconds": results, "speedup": {hop: results["torch"][hop] / results["bytes"][hop] for hop in HOPS}}
    (out / "ray_tensor_transfer.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'ray_tensor_transfer.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
