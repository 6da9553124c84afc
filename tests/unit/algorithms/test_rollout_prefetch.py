"""``overlap_generation`` (rollout_prefetch) with a fake runtime and fake generation, no Ray.

The fake generation of step k > 1 blocks until the main thread has started training step k - 1,
so each test only passes if the batch really samples in the background while the step trains
(a synchronous implementation would time out instead).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from nemo_distill.algorithms import rollout_prefetch
from nemo_distill.algorithms.distillation_config import DistillationMasterConfig, check_distillation_config
from nemo_distill.algorithms.grpo_config import GRPOMasterConfig, check_grpo_config
from nemo_distill.algorithms.rollout_prefetch import next_rollouts
from nemo_distill.algorithms.runtime import Runtime, cleanup, save_checkpoint, train_policy, validate
from nemo_distill.algorithms.runtime_config import LoopConfig
from nemo_distill.config import ConfigError, apply_overrides, load_config, validate as validate_config, with_schema_defaults
from nemo_distill.data.dataloader import PromptDataLoader
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.data.records import ProblemRecord
from nemo_distill.environments.registry import EnvironmentResult
from nemo_distill.models.generation.config import GenerationConfig
from nemo_distill.models.generation.interfaces import GeneratedSample, GenerationOutput, SamplingParams
from nemo_distill.models.policy.interfaces import TrainMetrics
from nemo_distill.utils.checkpoint import CheckpointingConfig, CheckpointManager
from nemo_distill.utils.timer import Timer

REPO = Path(__file__).resolve().parents[3]
SAMPLING = SamplingParams(temperature=1.0, n=1, max_new_tokens=2)
WAIT_S = 10.0  # a fake generation that waits longer than this means the overlap never happened


class GenerationFailed(ValueError):
    """What the fake generation raises when told to (stands for a worker error)."""


def _prompt(i: int) -> ProcessedPrompt:
    """Prompt ``i`` is step ``i + 1``'s only prompt (batch size 1, no shuffle): token id ``100 + i``."""
    record = ProblemRecord(problem=f"q{i}", answer=str(i), record_id=f"p{i}")
    return ProcessedPrompt(record=record, user_message=record.problem, prompt_text=record.problem, prompt_token_ids=[100 + i],
                           too_long=False)


class FakeGeneration:
    """Records ``generate:<step>@<weights version>``; step k > 1 waits for ``train:<k-1>`` to start."""

    def __init__(self, events: list[str], train_started: dict[int, threading.Event], fail_at: int | None = None,
                 seconds: float = 0.0):
        self.events, self.train_started, self.fail_at, self.seconds = events, train_started, fail_at, seconds
        self.version = -1  # the policy version the refitter last sent
        self.calls = 0
        self.active = 0  # generate calls running now: more than one would mean validation did not wait
        self.overlapping_calls = 0

    def generate(self, request) -> GenerationOutput:
        self.active += 1
        self.overlapping_calls += self.active > 1
        try:
            step = request.prompt_token_ids[0][0] - 100 + 1
            if request.prompt_token_ids[0][0] >= 100 and step > 1 and threading.current_thread() is not threading.main_thread():
                if not self.train_started[step - 1].wait(WAIT_S):
                    raise TimeoutError(f"generation of step {step} never overlapped with training step {step - 1}")
            time.sleep(self.seconds)
            self.calls += 1
            if step == self.fail_at:
                raise GenerationFailed(f"inference worker rank 0: generate failed at step {step}")
            self.events.append(f"generate:{step}@{self.version}")
            samples = [GeneratedSample(i, [7, 8], [-0.5, -0.5], "x", "stop") for i in range(len(request.prompt_token_ids))]
            return GenerationOutput(samples=samples)
        finally:
            self.active -= 1

    def get_generate_calls(self) -> list[int]:
        return [self.calls]

    def peak_memory_gib(self) -> list[float]:
        return [1.0]


class FakeRefitter:
    def __init__(self, rt_box: list, events: list[str]):
        self.rt_box, self.events = rt_box, events

    def refit(self) -> None:
        rt = self.rt_box[0]
        rt.generation.version = rt.policy_version
        self.events.append(f"refit@{rt.policy_version}")


class FakePolicy:
    def __init__(self, events: list[str]):
        self.events = events

    def train(self, batch, loss_fn) -> TrainMetrics:
        return TrainMetrics(loss=1.0, grad_norm=1.0, lr=1e-3, num_valid_tokens=2.0)

    def save_checkpoint(self, path: str) -> None:
        Path(path).mkdir(parents=True)


class FakeLogger:
    def log_samples(self, rows, name) -> None:
        pass

    def close(self) -> None:
        pass


def make_runtime(tmp_path: Path, *, overlap: bool, steps: int = 4, fail_at: int | None = None, seconds: float = 0.0,
                 events: list[str] | None = None) -> tuple[Runtime, list[str], dict[int, threading.Event]]:
    events = [] if events is None else events
    train_started = {step: threading.Event() for step in range(1, steps + 1)}
    loop = LoopConfig(max_num_steps=steps, num_prompts_per_step=1, overlap_generation=overlap, val_batch_size=1)
    cfg = SimpleNamespace(policy=SimpleNamespace(max_total_sequence_length=16, max_consecutive_skipped_steps=3,
                                                 generation=SimpleNamespace()),
                          logger=SimpleNamespace(num_val_samples_to_print=0, plot_metrics=[]),
                          checkpointing=CheckpointingConfig(enabled=True, checkpoint_dir=str(tmp_path / "ckpt"), keep_top_k=None))
    rt_box: list = []
    rt = Runtime(
        cfg=cfg, loop=loop, config_yaml="a: 1\n", tokenizer=SimpleNamespace(pad_token_id=0), train_prompts=[],
        val_prompts=[_prompt(-50)],  # token id 50: never waits
        train_loader=PromptDataLoader([_prompt(i) for i in range(steps + 2)], batch_size=1, seed=0, shuffle=False),
        policy=FakePolicy(events), frozen=None, generation=FakeGeneration(events, train_started, fail_at, seconds),
        refitter=FakeRefitter(rt_box, events), cluster=SimpleNamespace(uses_gpus=False),
        environment=SimpleNamespace(evaluate=lambda texts, answers: EnvironmentResult(rewards=[1.0] * len(texts))),
        logger=FakeLogger(), run_dir=tmp_path / "run", checkpoints=CheckpointManager(cfg.checkpointing), timer=Timer(),
        start_step=1, num_trainer_workers=1, offload_each_step=False,
    )
    rt_box.append(rt)
    return rt, events, train_started


def run_loop(rt: Runtime, events: list[str], train_started: dict[int, threading.Event], *, train_s: float = 0.0,
             on_step=None) -> list[dict]:
    """The loops' shape: rollouts, then 'train' (one optimizer update), then the step's metrics."""
    logged = []
    try:
        for step in range(rt.start_step, rt.max_steps + 1):
            rt.timer.reset()
            rollouts = next_rollouts(rt, SAMPLING, step)
            events.append(f"train:{step}")
            train_started[step].set()
            time.sleep(train_s)
            train_policy(rt, rollouts.token_batch, loss_fn=None)
            logged.append({"staleness": rollouts.metrics.get("rollout_staleness"), **rt.timer.metrics("t")})
            if on_step is not None:
                on_step(rt, step)
    finally:
        for event in train_started.values():
            event.set()  # never leave a fake generation waiting
        cleanup_prefetch(rt)
    return logged


def cleanup_prefetch(rt: Runtime) -> None:
    if rt.prefetch is not None:
        rt.prefetch.close()


def test_order_of_events_and_staleness(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=4)
    logged = run_loop(rt, events, started)
    # step 1 samples now (after the first refit); then each step: wait, refit the new weights, submit the next, train;
    # the next step's generation runs during training, with the weights from before that step's update.
    assert events == ["refit@0", "generate:1@0", "train:1",
                      "generate:2@0", "refit@1", "train:2",
                      "generate:3@1", "refit@2", "train:3",
                      "generate:4@2", "train:4"]  # the last step submits nothing (and so does not refit)
    assert [row["staleness"] for row in logged] == [0.0, 1.0, 1.0, 1.0]
    assert rt.train_loader.state_dict()["step_in_epoch"] == 4  # no prompts drawn past the last step


def test_staleness_counts_optimizer_updates_and_skipped_steps_do_not_count(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=3)
    losses = iter([1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0])  # the update calls in order; NaN = skipped
    rt.policy.train = lambda batch, loss_fn: (lambda loss: TrainMetrics(loss=loss, grad_norm=1.0, lr=1e-3, num_valid_tokens=2.0,
                                                                         skipped=loss != loss))(next(losses))

    def extra_update(rt, step):  # GRPO: several minibatch updates per step; plus one skipped update at step 2
        train_policy(rt, None, None)
        if step == 2:
            train_policy(rt, None, None)

    logged = run_loop(rt, events, started, on_step=extra_update)
    assert [row["staleness"] for row in logged] == [0.0, 2.0, 2.0]  # 2 updates per step; the skipped one changed nothing


def test_overlap_times_the_wait_and_the_background_generation(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=3, seconds=0.2)
    logged = run_loop(rt, events, started, train_s=0.8)
    assert logged[0]["t/generation"] >= 0.2 and logged[0]["t/generation_overlapped"] >= 0.2  # step 1: sampled in the main thread
    for row in logged[1:]:
        assert row["t/generation_overlapped"] >= 0.2  # the batch's own sampling time, measured in the thread
        assert row["t/generation"] < 0.2  # the main thread hardly waited: sampling hid behind the 0.8 s of training


def test_off_path_is_todays_sample_rollouts(tmp_path, monkeypatch):
    rt, events, started = make_runtime(tmp_path, overlap=False, steps=3)
    calls = []
    real = rollout_prefetch.sample_rollouts
    monkeypatch.setattr(rollout_prefetch, "sample_rollouts", lambda rt, prompts, sampling: (calls.append(prompts), real(rt, prompts, sampling))[1])
    for event in started.values():
        event.set()  # on-policy: nothing waits for training
    logged = run_loop(rt, events, started)
    assert [[p.record.record_id for p in prompts] for prompts in calls] == [["p0"], ["p1"], ["p2"]]
    assert events == ["refit@0", "generate:1@0", "train:1", "refit@1", "generate:2@1", "train:2", "refit@2", "generate:3@2", "train:3"]
    assert rt.prefetch is None and all(row["staleness"] is None for row in logged)  # no new metric, no thread
    assert all("t/generation_overlapped" not in row for row in logged)


def test_background_error_reraises_in_the_main_thread_with_its_type(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=4, fail_at=3)
    with pytest.raises(GenerationFailed, match="inference worker rank 0: generate failed at step 3"):
        run_loop(rt, events, started)
    assert events[-1] == "train:2"  # step 3 never trained
    assert rt.prefetch.pending is None and rt.prefetch.executor._shutdown  # closed, nothing left running


def test_checkpoint_saves_the_loader_state_from_before_the_prefetched_draw(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=4)
    saved = {}

    def checkpoint(rt, step):
        if step == 2:
            assert rt.train_loader.state_dict()["step_in_epoch"] == 3  # step 3's prompt is already drawn and sampling
            saved["path"] = save_checkpoint(rt, step, {"train/loss": 1.0})

    run_loop(rt, events, started, on_step=checkpoint)
    info = rt.checkpoints.load_training_info(saved["path"])
    assert info["dataloader"]["step_in_epoch"] == 2 and info["generate_calls"] == [2]  # as if step 3 had not been touched
    resumed = PromptDataLoader([_prompt(i) for i in range(6)], batch_size=1, seed=0, shuffle=False)
    resumed.load_state_dict(info["dataloader"])
    assert [p.record.record_id for p in next(resumed)] == ["p2"]  # the resumed run samples step 3's prompt again


def test_resumed_run_samples_its_first_step_on_policy(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=4)
    rt.start_step = 3
    next(rt.train_loader), next(rt.train_loader)  # the checkpoint's data position
    logged = run_loop(rt, events, started)
    assert [row["staleness"] for row in logged] == [0.0, 1.0]
    assert events == ["refit@0", "generate:3@0", "train:3", "generate:4@0", "train:4"]


def test_validation_waits_for_the_pending_batch_then_refits(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=3)
    rt.cfg.policy.generation = GenerationConfig(max_new_tokens=2)
    results = {}

    def validate_at_2(rt, step):
        if step == 2:
            results["metrics"] = validate(rt, step)

    run_loop(rt, events, started, on_step=validate_at_2)
    assert rt.generation.overlapping_calls == 0  # validation never sampled while the prefetch did
    # step 3's batch finished sampling (old weights) before validation refit and sampled with the new ones
    assert events[events.index("train:2"):] == ["train:2", "generate:3@1", "refit@2", "generate:-49@2", "train:3"]
    assert results["metrics"]["validation/accuracy"] == 1.0


def test_cleanup_after_an_error_waits_for_the_pending_batch_and_stops_the_thread(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=3, seconds=0.3)
    rt.generation.shutdown = lambda: events.append("generation.shutdown")
    rt.policy.shutdown = lambda: events.append("policy.shutdown")
    rollouts = next_rollouts(rt, SAMPLING, 1)  # step 1 sampled, step 2 submitted
    assert rollouts.metrics["rollout_staleness"] == 0.0
    started[1].set()  # "training" starts, then fails: cleanup runs in the loop's finally
    cleanup(rt)
    assert events[-3:] == ["generate:2@0", "generation.shutdown", "policy.shutdown"]  # the batch finished before workers stopped
    assert rt.prefetch.pending is None and rt.prefetch.executor._shutdown


def test_cleanup_after_ctrl_c_does_not_wait_for_the_pending_batch(tmp_path):
    rt, events, started = make_runtime(tmp_path, overlap=True, steps=3, seconds=3.0)
    rt.generation.shutdown = lambda: events.append("generation.shutdown")
    rt.policy.shutdown = lambda: events.append("policy.shutdown")
    next_rollouts(rt, SAMPLING, 1)  # step 2's 3-second generation is now pending
    started[1].set()
    began = time.perf_counter()
    cleanup(rt, interrupted=True)
    assert time.perf_counter() - began < 2.0  # stopped at once, not after the pending generation
    assert events[-2:] == ["generation.shutdown", "policy.shutdown"] and "generate:2@0" not in events
    assert rt.prefetch.pending is None and rt.prefetch.executor._shutdown


@pytest.mark.parametrize("schema, base, check, key", [
    (DistillationMasterConfig, "distillation_math.yaml", check_distillation_config, "distillation.overlap_generation"),
    (GRPOMasterConfig, "grpo_math.yaml", check_grpo_config, "grpo.overlap_generation"),
])
def test_overlap_needs_split_placement_or_resident_roles(schema, base, check, key):
    def config_with(*overrides):
        cfg = with_schema_defaults(load_config(REPO / "configs" / base), schema)
        return validate_config(apply_overrides(cfg, list(overrides)), schema)

    section = key.split(".")[0]
    assert getattr(config_with(), section).overlap_generation is False  # off by default
    with pytest.raises(ConfigError) as info:
        check(config_with(f"{key}=true", "cluster.offload=always"))  # colocated roles taking turns
    assert info.value.key_path == key and "cluster.offload=auto or never" in str(info.value)
    assert "cluster.colocated=false" in str(info.value)
    check(config_with(f"{key}=true"))  # the recipes are colocated with offload auto: accepted (auto is checked at set-up)
    check(config_with(f"{key}=true", "cluster.offload=never"))
    split = ["cluster.colocated=false", "cluster.cpu_slots_per_node=2", "cluster.inference_gpu_ids=[0]",
             "cluster.teacher_gpu_ids=[0]", "cluster.trainer_gpu_ids=[1]"]
    check(config_with(f"{key}=true", "cluster.offload=always", *split))  # split placement: nothing moves, accepted


@pytest.mark.parametrize("colocated", [True, False])
def test_sft_refuses_overlap_whatever_the_placement(colocated):
    from nemo_distill.algorithms.sft import SFTMasterConfig, check_sft_config

    placement = [] if colocated else ["cluster.colocated=false", "cluster.cpu_slots_per_node=2", "cluster.inference_gpu_ids=[0]",
                                      "cluster.teacher_gpu_ids=[0]", "cluster.trainer_gpu_ids=[1]"]
    cfg = with_schema_defaults(load_config(REPO / "configs" / "sft.yaml"), SFTMasterConfig)
    cfg = validate_config(apply_overrides(cfg, ["sft.overlap_generation=true", *placement]), SFTMasterConfig)
    with pytest.raises(ConfigError) as info:
        check_sft_config(cfg)
    assert info.value.key_path == "sft.overlap_generation" and "no rollouts" in str(info.value)
