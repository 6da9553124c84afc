"""Supervised fine-tuning on prompt -> response pairs (JSONL, parquet, load_from_disk, or a built-in task).

Local, CPU, tiny random model:
    python -m nemo_distill.models.tiny --out /tmp/tiny-student --hidden-size 64
    python examples/run_sft.py --config configs/sft_tiny_cpu.yaml policy.model_name=/tmp/tiny-student

The embedded SmolLM2-135M-Instruct on the built-in arithmetic task's worked answers:
    python examples/run_sft.py --config configs/sft.yaml sft.max_num_steps=20

One GPU node through Slurm (see docs/slurm.md):
    COMMAND='uv run python examples/run_sft.py --config configs/sft.yaml'
    sbatch -N1 --export=ALL,COMMAND="$COMMAND" ray_bare.sub

Overrides use Hydra's grammar (``a.b=1``, ``+new=2``, ``++x=3``, ``~a.c``); ``--print-config``
prints the resolved config and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nemo_distill.algorithms.run_summary import format_summary_table  # noqa: E402
from nemo_distill.algorithms.sft import SFTMasterConfig, check_sft_config, run_sft  # noqa: E402
from nemo_distill.config.cli import parse_command_line, run_main  # noqa: E402

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "sft.yaml")


def main(argv: list[str] | None = None) -> int:
    parsed = parse_command_line(argv, SFTMasterConfig, default_config=DEFAULT_CONFIG, description=__doc__.split("\n")[0],
                                check=check_sft_config)
    print(format_summary_table(run_sft(parsed.config, parsed.config_yaml)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
