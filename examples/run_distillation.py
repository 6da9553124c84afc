"""On-policy distillation (top-k teacher logits) and context/self-distillation.

Local, CPU, embedded model (the README demo):
    python examples/run_distillation.py --config configs/recipes/llm/context-self-distillation-smollm2-cpu.yaml

Tiny random models, 3 steps:
    python examples/run_distillation.py --config configs/distillation_tiny_cpu.yaml distillation.max_num_steps=3

One GPU node through Slurm (see docs/slurm.md):
    COMMAND='uv run python examples/run_distillation.py --config configs/recipes/llm/my-distillation-1n4g.yaml logger.wandb_enabled=False'
    sbatch -N1 --export=ALL,COMMAND="$COMMAND" ray_bare.sub

Overrides use Hydra's grammar (``a.b=1``, ``+new=2``, ``++x=3``, ``~a.c``); ``--print-config``
prints the resolved config and exits; ``--inference_gpu_ids 0,1 --teacher_gpu_ids 2
--trainer_gpu_ids 3`` place the roles on explicit GPUs.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nemo_distill.algorithms.distillation import run_distillation  # noqa: E402
from nemo_distill.algorithms.run_summary import format_summary_table  # noqa: E402
from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config  # noqa: E402
from nemo_distill.config.cli import parse_command_line, run_main  # noqa: E402

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "distillation_math.yaml")


def main(argv: list[str] | None = None) -> int:
    """Run; a user mistake (config, data, files) ends as one ``error:`` line and exit code 2 (``run_main``)."""
    parsed = parse_command_line(argv, DistillationMasterConfig, default_config=DEFAULT_CONFIG, description=__doc__.split("\n")[0],
                                check=check_distillation_config)  # the checks that need no model run under --print-config too
    summary = run_distillation(parsed.config, parsed.config_yaml)
    print(format_summary_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
