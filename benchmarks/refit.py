"""Weight refit alone: seconds per refit for each transport, policy -> generation, on CPU slots or GPUs.

    python benchmarks/refit.py --model smollm2-135m-instruct --transports object_store broadcast --repeats 5

Starts one policy group and one generation group (colocated on the same slots, or ``--split``:
generation on its own slots), refits ``--repeats`` times per transport after one warm-up refit
(which also opens the broadcast group), and prints mean / min seconds and GB/s of weights moved.
Writes ``<out>/refit.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a model name or HF folder")
    parser.add_argument("--transports", nargs="+", default=["object_store", "broadcast"],
                        choices=["auto", "object_store", "cuda_ipc", "broadcast"])
    parser.add_argument("--slots", type=int, default=1, help="trainer slots (= generation slots)")
    parser.add_argument("--split", action="store_true", help="generation on its own slots (else colocated)")
    parser.add_argument("--gpus", action="store_true", help="slots are GPUs (default: CPU slots)")
    parser.add_argument("--bucket-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/bench_refit")
    args = parser.parse_args()

    from nemo_distill.distributed.config import ClusterConfig
    from nemo_distill.distributed.ray_init import init_ray
    from nemo_distill.distributed.virtual_cluster import RayVirtualCluster
    from nemo_distill.models.generation.config import GenerationConfig
    from nemo_distill.models.generation.group import GenerationWorkerGroup
    from nemo_distill.models.generation.refit import WeightRefitter
    from nemo_distill.models.policy.config import PolicyConfig
    from nemo_distill.models.policy.group import PolicyWorkerGroup

    slots = list(range(args.slots))
    total = 2 * args.slots if args.split else args.slots
    placement = {"colocated": not args.split}
    if args.split:
        generation_slots = list(range(args.slots, total))
        placement.update(trainer_gpu_ids=slots, inference_gpu_ids=generation_slots, teacher_gpu_ids=generation_slots)
    cluster_cfg = (ClusterConfig(gpus_per_node=total, **placement) if args.gpus else
                   ClusterConfig(cpu_slots_per_node=total, **placement))
    init_ray(cluster_cfg)
    cluster = RayVirtualCluster(cluster_cfg)
    policy = PolicyWorkerGroup(cluster, PolicyConfig(model_name=args.model))
    generation = GenerationWorkerGroup(cluster, GenerationConfig(), args.model)
    results = []
    try:
        for transport in args.transports:
            refitter = WeightRefitter(policy, generation, bucket_mb=args.bucket_mb, transport=transport, cluster=cluster_cfg)
            stats = refitter.refit()  # warm-up: layouts, name check, transfer group
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                refitter.refit()
                seconds.append(time.perf_counter() - started)
            mean = statistics.mean(seconds)
            results.append({"transport": transport, "resolved": refitter.transport, "mean_s": round(mean, 3),
                            "min_s": round(min(seconds), 3), "gb_per_s": round(stats.num_bytes / mean / 1e9, 2),
                            "bytes": stats.num_bytes, "buckets": stats.num_buckets})
            print(json.dumps(results[-1]), flush=True)
    finally:
        generation.shutdown()
        policy.shutdown()
        cluster.shutdown()
    print("transport | resolved | mean_s | min_s | GB/s | buckets")
    for row in results:
        print(f"{row['transport']} | {row['resolved']} | {row['mean_s']} | {row['min_s']} | {row['gb_per_s']} | {row['buckets']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "refit.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
