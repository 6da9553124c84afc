"""GRPO (grpo, dr_grpo, dapo, bnpo) and reward-mixed context distillation (seeds 000-002).

Local, CPU, tiny random model, 3 steps:
    python -m nemo_distill.models.tiny --out /tmp/tiny-student --hidden-size 64
    python examples/run_grpo.py --config configs/grpo_tiny_cpu.yaml policy.model_name=/tmp/tiny-student

The embedded SmolLM2-135M-Instruct on the built-in arithmetic task:
    python examples/run_grpo.py --config configs/grpo_math.yaml grpo.max_num_steps=5

One GPU node through Slurm (see docs/slurm.md):
    COMMAND='uv run python examples/run_grpo.py --config configs/recipes/llm/grpo-smollm2-arithmetic-1n4g.yaml'
    sbatch -N1 --export=ALL,COMMAND="$COMMAND" ray_bare.sub

Overrides use Hydra's grammar (``a.b=1``, ``+new=2``, ``++x=3``, ``~a.c``); ``--print-config``
prints the resolved config and exits; the seed framework's flags (``--trainer.loss.adv_tau 1.0``,
``--inference_gpu_ids 0,1``, ...) are translated (docs/migration.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nemo_distill.algorithms.grpo import run_grpo  # noqa: E402
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig, check_grpo_config  # noqa: E402
from nemo_distill.algorithms.run_summary import format_summary_table  # noqa: E402
from nemo_distill.config.cli import parse_command_line, run_main  # noqa: E402

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "grpo_math.yaml")


def main(argv: list[str] | None = None) -> int:
    parsed = parse_command_line(argv, GRPOMasterConfig, default_config=DEFAULT_CONFIG, description=__doc__.split("\n")[0],
                                check=check_grpo_config)
    print(format_summary_table(run_grpo(parsed.config, parsed.config_yaml)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
