"""Opt-in overlap of generation with training (``<loop>.overlap_generation``): one step off-policy.

The loops take each step's rollouts with :func:`next_rollouts`. Off (the default) it is
``sample_rollouts(rt, next(rt.train_loader), sampling)``: refit if stale, then sample, on-policy.
On, one background thread of the driver samples and scores step n+1's prompts while the main
thread scores step n with the teacher and trains on it (Ray's driver API is thread-safe; the
generation workers are their own processes, so both really run at once: on their own slots with
split placement, or sharing each GPU with the teacher and trainer when colocated with every role
resident, where generation fills the GPU time a launch-bound training step leaves idle). Per step n::

    rollouts(n) = step 1 (or the first step after a resume): sampled now, synchronously
                  later steps: wait for the batch submitted during step n-1
    refit_if_stale(rt)           # the generation workers are idle now: give them the current weights
    submit(step n+1's prompts)   # skipped at the last step
    return rollouts(n)           # the caller trains step n while step n+1 samples

so step n's rollouts come from the weights before step n-1's update: ``train/rollout_staleness``
(optimizer updates between the weights that sampled the batch and the weights it trains) is 0
at step 1 and, from step 2 on, the updates of one step (1 for distillation; GRPO's minibatches
each count). ``timing/train/generation`` is how long the main thread waited for the rollouts (near
0 when generation is fully hidden); ``timing/train/generation_overlapped`` is the batch's own
sampling + scoring time, measured in the thread (the runtime's :class:`Timer` is not thread-safe).

What the rest of the runtime does about the pending batch (:mod:`.runtime`):

* validation (``validate``) waits for it first: the generation workers must be idle before
  their weights change; the batch keeps its staleness (it was sampled before the step trained);
* a checkpoint saves the data order and sampling-seed counters from BEFORE the prefetched
  prompts were drawn (:meth:`RolloutPrefetcher.resume_point`): a resumed run samples them again,
  on-policy (staleness 0 at its first step), so nothing is skipped;
* ``cleanup`` closes the thread after waiting for the pending batch, even after an error (not after
  Ctrl-C: then it stops the workers at once, which ends the thread's wait);
* an exception in the thread (a worker error naming role and rank) re-raises in the main thread,
  same object and type, at the next wait.

GRPO: the ratio's denominator is the trainer's recomputed log-probs of the batch under the
current weights (``old_logprobs``), not the sampler's; with staleness 1 this is the usual
one-step off-policy choice (the clipped ratio starts at exactly 1; the drift between sampler and
trainer shows in ``train/logprob_mismatch``).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from nemo_distill.algorithms.rollouts import RolloutBatch
from nemo_distill.algorithms.runtime import Runtime, generate_for, refit_if_stale, sample_rollouts
from nemo_distill.data.processors import ProcessedPrompt
from nemo_distill.models.generation.interfaces import SamplingParams

log = logging.getLogger(__name__)

STALENESS_METRIC = "rollout_staleness"  # the loops log rollouts.metrics as train/<name>
OVERLAPPED_TIMER = "generation_overlapped"  # timing/train/generation_overlapped


@dataclass
class Sampled:
    """What the background thread hands back: the batch and its own sampling + scoring seconds."""

    rollouts: RolloutBatch
    seconds: float
    peak_memory_gib: list[float] | None  # the generation workers' peak memory, read right after (GPU only)


@dataclass
class Pending:
    """A submitted batch and the state from just before its prompts were drawn."""

    future: Future  # Future[Sampled]
    policy_version: int  # rt.policy_version of the weights that sample it (refit right before submitting)
    loader_state: dict[str, int]  # rt.train_loader.state_dict() before the draw
    generate_calls: list[int] | None  # the generation workers' seed counters before the call


def next_rollouts(rt: Runtime, sampling: SamplingParams, step: int) -> RolloutBatch:
    """Step ``step``'s rollouts: on-policy (overlap off) or prefetched during the previous step (on)."""
    if not rt.loop.overlap_generation:
        return sample_rollouts(rt, next(rt.train_loader), sampling)
    if rt.prefetch is None:
        rt.prefetch = RolloutPrefetcher(rt)
    return rt.prefetch.next(sampling, step)


class RolloutPrefetcher:
    """One background thread that samples the next step's rollouts (see the module docstring)."""

    def __init__(self, rt: Runtime):
        if rt.offload_each_step:  # check_runtime_config and resolve_offload(resident_required=True) prevent this
            raise RuntimeError("overlap_generation needs the roles resident (split placement, or cluster.offload auto/never): "
                               "here the generation workers sleep between phases")
        self.rt = rt
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-prefetch")
        self.pending: Pending | None = None
        self.last_peak_memory_gib: list[float] | None = None

    def next(self, sampling: SamplingParams, step: int) -> RolloutBatch:
        """Take step ``step``'s rollouts, refit if stale, submit step ``step + 1``'s (unless it is the last)."""
        rt = self.rt
        if self.pending is None:  # the first step of this process: nothing was prefetched
            rollouts = sample_rollouts(rt, next(rt.train_loader), sampling)  # refits if stale
            sampled_version, seconds = rt.policy_version, rt.timer.elapsed("generation")
            if rt.cluster.uses_gpus:  # read before the thread owns the workers (see peak_memory_gib)
                self.last_peak_memory_gib = rt.generation.peak_memory_gib()
        else:
            pending, self.pending = self.pending, None
            with rt.timer.time("generation"):  # only the wait: zero when generation kept up with training
                sampled = pending.future.result()  # re-raises the thread's exception, type and all
            self._record_memory(sampled)
            rollouts, sampled_version, seconds = sampled.rollouts, pending.policy_version, sampled.seconds
        rt.timer.add(OVERLAPPED_TIMER, seconds)
        rollouts.metrics[STALENESS_METRIC] = float(rt.policy_version - sampled_version)
        if step < rt.max_steps:
            refit_if_stale(rt)  # the generation workers are idle: the next batch samples the newest weights
            self.submit(sampling)
        return rollouts

    def submit(self, sampling: SamplingParams) -> None:
        """Draw the next prompts (here, in the main thread) and sample them in the background."""
        rt = self.rt
        loader_state = rt.train_loader.state_dict()
        generate_calls = rt.generation.get_generate_calls()
        prompts = next(rt.train_loader)
        future = self.executor.submit(self._sample, prompts, sampling)
        self.pending = Pending(future, rt.policy_version, loader_state, generate_calls)

    def _sample(self, prompts: list[ProcessedPrompt], sampling: SamplingParams) -> Sampled:
        """The background thread's work: touches only the generation group and the environment."""
        rt = self.rt
        started = time.perf_counter()
        rollouts = generate_for(rt, prompts, sampling)
        seconds = time.perf_counter() - started
        # Read now, while this thread owns the workers: from the main thread the call would queue behind the next generate.
        peak = rt.generation.peak_memory_gib() if rt.cluster.uses_gpus else None
        return Sampled(rollouts, seconds, peak)

    def _record_memory(self, sampled: Sampled) -> None:
        if sampled.peak_memory_gib is not None:
            self.last_peak_memory_gib = sampled.peak_memory_gib

    def wait(self) -> None:
        """Block until the pending batch is sampled (it stays pending for the next step); re-raise its error."""
        if self.pending is not None:
            try:
                sampled = self.pending.future.result()
            except BaseException:
                self.pending = None  # raised here, once; close() has nothing left to report
                raise
            self._record_memory(sampled)

    def resume_point(self) -> tuple[dict[str, int], list[int] | None]:
        """Data order and seed counters a checkpoint saves: from before the pending batch's draw, if any."""
        if self.pending is not None:
            return self.pending.loader_state, self.pending.generate_calls
        return self.rt.train_loader.state_dict(), self.rt.generation.get_generate_calls()

    def peak_memory_gib(self) -> list[float]:
        """The generation workers' peak memory, for ``finish_step``: the last reading taken by the thread
        while a batch is pending (asking the workers would wait for it), else asked now."""
        if self.pending is not None and self.last_peak_memory_gib is not None:
            return self.last_peak_memory_gib
        self.wait()
        return self.rt.generation.peak_memory_gib()

    def close(self, *, wait: bool = True) -> None:
        """Wait for the pending batch and stop the thread; never raises (cleanup runs it after errors too).

        ``wait=False`` (the run was interrupted, Ctrl-C): return at once; the thread ends when the
        generation workers it waits on are stopped, which ``cleanup`` does next."""
        pending, self.pending = self.pending, None
        if pending is not None and not wait:
            log.info("interrupted: not waiting for the prefetched generation; its workers are stopped next")
            self.executor.shutdown(wait=False, cancel_futures=True)
            return
        if pending is not None:
            try:
                pending.future.result()
            except BaseException as err:  # noqa: BLE001 - the run is ending; the error it raised (if any) matters more
                log.warning("the prefetched generation that was still pending failed: %s: %s", type(err).__name__, err)
        self.executor.shutdown(wait=True, cancel_futures=True)
