"""The noisy-student study (seed 004): splits -> base eval -> pseudo-labels -> conditions x trainers -> report.

Local, CPU, tiny random model (minutes; what tests/functional/test_noisy_student.py runs):
    python -m nemo_distill.models.tiny --out /tmp/tiny-student --hidden-size 64
    python examples/run_noisy_student.py --config configs/noisy_student_arithmetic.yaml policy.model_name=/tmp/tiny-student \
        noisy_student.splits.num_labelled=16 noisy_student.splits.num_unlabelled=32 noisy_student.splits.num_test=16 \
        'noisy_student.conditions=[baseline,filtered]' noisy_student.compute.control=same_steps noisy_student.compute.steps=2

The embedded SmolLM2-135M-Instruct on the built-in arithmetic task (default config), or GSM8K from local files:
    python examples/run_noisy_student.py
    python examples/run_noisy_student.py --config configs/noisy_student_gsm8k.yaml data.default.dataset=/data/gsm8k/train.jsonl \
        data.validation.dataset=/data/gsm8k/test.jsonl

One GPU, the reduced-scale study (all conditions, SFT and GRPO, one round; under 8 minutes on an H200):
    python examples/run_noisy_student.py --config configs/noisy_student_smollm2_gpu.yaml

Slurm (see docs/slurm.md):
    COMMAND='uv run python examples/run_noisy_student.py --config configs/noisy_student_smollm2_gpu.yaml'
    sbatch -N1 --export=ALL,COMMAND="$COMMAND" ray_bare.sub

Rerunning the same command resumes: finished phases (splits, pseudo-labels, each condition) are
skipped and say so; the report is rebuilt. Outputs: pipeline.output_dir (docs/noisy_student.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from nemo_distill.algorithms.noisy_student_pipeline import (  # noqa: E402
    NoisyStudentMasterConfig,
    check_noisy_student_config,
    run_study,
)
from nemo_distill.config.cli import parse_command_line, run_main  # noqa: E402

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "noisy_student_arithmetic.yaml")


def main(argv: list[str] | None = None) -> int:
    parsed = parse_command_line(argv, NoisyStudentMasterConfig, default_config=DEFAULT_CONFIG, description=__doc__.split("\n")[0],
                                check=check_noisy_student_config)
    result = run_study(parsed.config, parsed.config_yaml)
    print((result.report_dir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
