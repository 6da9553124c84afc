"""Print the config overrides of the fastest loop variant in a ``generation_samplers.json`` (issue16_pending.sh d).

    python benchmarks/fastest_loop_variant.py results/gs/generation_samplers.json
    -> policy.generation.hf_decode_attention=matmul    (or nothing: plain ``loop`` won, or the file is missing)
"""

from __future__ import annotations

import json
import sys

# the config overrides that give the step what each generation_samplers.py loop variant ran
OVERRIDES = {
    "loop": [],
    "loop_fused": ["policy.generation.hf_fused_sampling=true"],
    "loop_matmul": ["policy.generation.hf_decode_attention=matmul"],
    "loop_matmul_fused": ["policy.generation.hf_decode_attention=matmul", "policy.generation.hf_fused_sampling=true"],
}


def fastest_overrides(report: dict) -> list[str]:
    """The overrides of the loop variant with the smallest median call time (``loop``'s when none ran)."""
    times = {row["sampler"]: row["median_s"] for row in report.get("samplers", []) if row["sampler"] in OVERRIDES}
    return OVERRIDES[min(times, key=times.get)] if times else []


def main(argv: list[str]) -> int:
    try:
        report = json.loads(open(argv[0]).read())
    except (OSError, ValueError) as error:
        print(f"no generation_samplers result ({error}); plain loop", file=sys.stderr)
        report = {}
    print(" ".join(fastest_overrides(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
