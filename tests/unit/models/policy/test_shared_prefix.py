"""Scoring a batch whose rows share a prefix (a teacher's context): the prefix runs once and the rest
against its repeated KV cache. The result equals a float64 full forward (Qwen3 and Llama, right
padding, prefixes of 1 to the cap), the model sees ``P + B·(T - P)`` positions, and the worker uses
it only past ``logprob_shared_prefix_min_tokens`` and gives the same scores either way (FSDP2 + LoRA
student and plain teacher, one CPU rank, no Ray)."""

from __future__ import annotations

import pytest
import torch

from nemo_distill.data.batch import TokenBatch
from nemo_distill.models.loading import load_causal_lm
from nemo_distill.models.policy.head_scoring import score_with_shared_prefix, shared_prefix_length
from nemo_distill.models.policy.logprobs import head_token_logprobs, head_topk
from policy_spawn import run_ranks

BATCH, SEQ_LEN, PREFIX = 4, 14, 9


def _shared_prefix_batch(vocab_size: int, prefix_len: int = PREFIX, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[4, 14]`` right-padded rows: the same ``prefix_len`` tokens, then different tokens; rows 1 and 3
    are shorter (rows 3 ends 1 token after the prefix)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab_size, (BATCH, SEQ_LEN), generator=generator)
    input_ids[:, :prefix_len] = input_ids[0, :prefix_len]
    input_ids[1:, prefix_len] = (input_ids[0, prefix_len] + torch.arange(1, BATCH)) % vocab_size  # rows differ right after
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, SEQ_LEN - 3 :] = 0
    attention_mask[3, prefix_len + 1 :] = 0
    input_ids[attention_mask == 0] = 0
    return input_ids, attention_mask


def test_shared_prefix_length_cases():
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 1, 2], [5, 6, 7, 8, 3]])
    full = torch.ones_like(ids)
    assert shared_prefix_length(ids, full) == 3  # the first column where any row differs
    same = ids[:1].expand(3, -1)
    assert shared_prefix_length(same, full) == 4  # identical rows: every row keeps one token after it
    short = full.clone()
    short[1, 2:] = 0  # row 1 has 2 real tokens: the prefix may cover only its first
    assert shared_prefix_length(ids, short) == 1
    padded_same = torch.tensor([[5, 6, 0, 0], [5, 6, 0, 0]])
    assert shared_prefix_length(padded_same, torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]])) == 1  # padding never counts
    assert shared_prefix_length(ids[:1], full[:1]) == 0  # one row: nothing to share
    assert shared_prefix_length(torch.tensor([[1, 2], [3, 2]]), torch.ones(2, 2, dtype=torch.long)) == 0


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def model(request, tiny_model_dir, tiny_llama_dir):
    folder = {"qwen3": tiny_model_dir, "llama": tiny_llama_dir}[request.param]
    return load_causal_lm(folder, dtype=torch.float32, device="cpu").eval()


def _float64_reference(model, input_ids, attention_mask, k: int):
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.double()
    picked = torch.log_softmax(logits, dim=-1)[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return torch.topk(logits, k, dim=-1), torch.nn.functional.pad(picked, (1, 0))


@pytest.mark.parametrize("prefix_len", [1, 5, PREFIX])
def test_shared_prefix_scores_equal_one_full_forward(model, prefix_len):
    input_ids, attention_mask = _shared_prefix_batch(model.config.vocab_size)
    assert shared_prefix_length(input_ids, attention_mask) == PREFIX
    k, chunk = 4, 3
    expected_topk, expected_logprobs = _float64_reference(model, input_ids, attention_mask, k)
    positions_run: list[int] = []
    head_rows: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: positions_run.append(args[0].numel()))
    head_hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0] * args[0].shape[1]))
    try:
        with torch.no_grad():
            logprobs = score_with_shared_prefix(model, input_ids, attention_mask, prefix_len,
                                                lambda hidden, head, ids: head_token_logprobs(hidden, head, ids, chunk))
            values, indices = score_with_shared_prefix(model, input_ids, attention_mask, prefix_len,
                                                       lambda hidden, head, ids: head_topk(hidden, head, k, chunk))
    finally:
        hook.remove()
        head_hook.remove()
    real = attention_mask.bool()
    torch.testing.assert_close(logprobs.double()[real], expected_logprobs[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(indices[real], expected_topk.indices[real])
    torch.testing.assert_close(values.double()[real], expected_topk.values[real], rtol=1e-5, atol=1e-5)
    # the prefix once, then every row's remaining columns: P + B(T - P) positions, twice (two scorings)
    assert positions_run == [prefix_len, BATCH * (SEQ_LEN - prefix_len)] * 2
    # the head never scores B copies of the prefix: each pass's own last row, then the log-prob rows
    # (prefix P - 1, tail B x S) and the top-k rows (prefix P, tail B x (1 + S)), S = T - P
    suffix = SEQ_LEN - prefix_len
    assert sum(head_rows) == (1 + BATCH) * 2 + (prefix_len - 1 + BATCH * suffix) + (prefix_len + BATCH * (1 + suffix))


@pytest.mark.parametrize("first_row", [PREFIX - 1, PREFIX + 2, 3])
def test_first_row_skips_the_prefix_and_the_columns_before_it(model, first_row):
    input_ids, attention_mask = _shared_prefix_batch(model.config.vocab_size)
    k, chunk = 4, 3
    expected_topk, expected_logprobs = _float64_reference(model, input_ids, attention_mask, k)
    head_rows: list[int] = []
    head_hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[0] * args[0].shape[1]))
    try:
        with torch.no_grad():
            logprobs = score_with_shared_prefix(model, input_ids, attention_mask, PREFIX,
                                                lambda hidden, head, ids: head_token_logprobs(hidden, head, ids, chunk),
                                                first_row=first_row)
            values, indices = score_with_shared_prefix(model, input_ids, attention_mask, PREFIX,
                                                       lambda hidden, head, ids: head_topk(hidden, head, k, chunk),
                                                       first_row=first_row)
    finally:
        head_hook.remove()
    assert logprobs.shape == input_ids.shape and values.shape == indices.shape == (*input_ids.shape, k)
    real = attention_mask.bool()
    skips = first_row >= PREFIX - 1
    exact_from = first_row + 1 if skips else 0  # log-probs; top-k reads hidden row t alone: exact from first_row
    torch.testing.assert_close(logprobs.double()[:, exact_from:][real[:, exact_from:]],
                               expected_logprobs[:, exact_from:][real[:, exact_from:]], rtol=1e-5, atol=1e-5)
    topk_from = first_row if skips else 0
    assert torch.equal(indices[:, topk_from:][real[:, topk_from:]], expected_topk.indices[:, topk_from:][real[:, topk_from:]])
    torch.testing.assert_close(values.double()[:, topk_from:][real[:, topk_from:]],
                               expected_topk.values[:, topk_from:][real[:, topk_from:]], rtol=1e-5, atol=1e-5)
    suffix = SEQ_LEN - PREFIX
    if skips:
        assert not logprobs[:, : first_row + 1].any() and not values[:, :first_row].any()
        # each pass's own last rows, then only the tail's columns from first_row on, never the prefix's:
        # log-probs from column first_row + 1 (its column first_row is a constant), top-k from first_row
        assert sum(head_rows) == (1 + BATCH) * 2 + BATCH * (SEQ_LEN - first_row - 1) + BATCH * (SEQ_LEN - first_row)
    else:  # a target inside the shared prefix: everything is scored, as with first_row = 0
        assert sum(head_rows) == (1 + BATCH) * 2 + (PREFIX - 1 + BATCH * suffix) + (PREFIX + BATCH * (1 + suffix))


def test_shared_prefix_rejects_a_prefix_that_leaves_no_columns(model):
    input_ids, attention_mask = _shared_prefix_batch(model.config.vocab_size)
    for bad in (0, SEQ_LEN):
        with pytest.raises(ValueError, match="prefix_len"):
            score_with_shared_prefix(model, input_ids, attention_mask, bad, lambda hidden, head, ids: hidden)


def test_the_prefix_cache_stores_nothing_for_the_rows(model):
    from transformers.cache_utils import DynamicCache

    from nemo_distill.models.policy.head_scoring import ChunkedHeadUnsupported, _cache_keyword, _serve_prefix_to_every_row

    input_ids, attention_mask = _shared_prefix_batch(model.config.vocab_size)
    keyword = _cache_keyword(model)
    with torch.no_grad():
        cache = getattr(model(input_ids=input_ids[:1, :PREFIX], use_cache=True), keyword)
        served = _serve_prefix_to_every_row(cache, BATCH, "tiny")
        positions = torch.arange(PREFIX, SEQ_LEN).expand(BATCH, -1)
        model(input_ids=input_ids[:, PREFIX:], attention_mask=attention_mask, position_ids=positions, use_cache=True, **{keyword: served})
    assert served.get_seq_length() == PREFIX  # the rows' keys were used, never stored
    assert all(layer.keys.shape[0] == 1 and layer.keys.shape[-2] == PREFIX for layer in served.layers)

    class OtherLayer:  # e.g. a sliding-window layer, whose stored keys are not the whole prefix
        keys = values = torch.zeros(1, 1, PREFIX, 1)

    odd = DynamicCache()
    odd.layers = [OtherLayer()]
    for bad in (None, odd):
        with pytest.raises(ChunkedHeadUnsupported, match="per-layer KV cache"):
            _serve_prefix_to_every_row(bad, BATCH, "tiny")


def score_with_and_without_sharing(rank: int, model_dir: str, batch: TokenBatch) -> dict:
    from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
    from nemo_distill.models.policy.worker import PolicyWorker
    from worker_scenarios import make_config

    student = PolicyWorker(make_config(model_dir, lora=True, precision="float32"))  # FSDP2 root unit + peft
    teacher = PolicyWorker(TeacherConfig(model_name=model_dir, precision="float32", logprob_batch_size=4,
                                         dtensor_cfg=DTensorConfig(enabled=False)), trainable=False)
    out = {}
    for role, worker in (("student", student), ("teacher", teacher)):
        worker.cfg.logprob_batch_size = BATCH
        embed = worker.model.get_input_embeddings()
        for min_tokens in (PREFIX, PREFIX + 1, 0):  # shares / prefix too short to share / off
            worker.cfg.logprob_shared_prefix_min_tokens = min_tokens
            positions: list[int] = []
            hook = embed.register_forward_hook(lambda m, args, o: positions.append(args[0].numel()))
            topk = worker.get_topk_logits(batch, 3)
            logprobs = worker.get_logprobs(batch)
            hook.remove()
            out[(role, min_tokens)] = (topk.values, topk.indices, logprobs, positions, worker.chunked_head)
    # a model whose cache cannot be shared: the worker stops sharing, keeps the chunked head, same scores
    from nemo_distill.models.policy import head_scoring

    def refuse(*args):
        raise head_scoring.ChunkedHeadUnsupported("test: no plain per-layer KV cache")

    head_scoring._serve_prefix_to_every_row = refuse
    teacher.cfg.logprob_shared_prefix_min_tokens = PREFIX
    out["fallback"] = (teacher.get_logprobs(batch), teacher.share_prefix, teacher.chunked_head)
    return out


def test_worker_scores_the_same_with_and_without_sharing(tiny_model_dir):
    input_ids, attention_mask = _shared_prefix_batch(49152)
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                       sample_mask=torch.ones(BATCH))
    result = run_ranks(score_with_and_without_sharing, 1, tiny_model_dir, batch)[0]
    shared_positions = [PREFIX, BATCH * (SEQ_LEN - PREFIX)] * 2
    for role in ("student", "teacher"):
        ref_values, ref_indices, ref_logprobs, ref_positions, _ = result[(role, 0)]
        assert ref_positions == [BATCH * SEQ_LEN] * 2  # off: one full forward per scoring
        assert result[(role, PREFIX + 1)][3] == ref_positions  # the shared prefix is shorter than the minimum
        values, indices, logprobs, positions, still_chunked = result[(role, PREFIX)]
        assert positions == shared_positions and still_chunked, role
        assert torch.equal(indices, ref_indices), role
        torch.testing.assert_close(values, ref_values, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logprobs, ref_logprobs, rtol=1e-5, atol=1e-5)
        assert not logprobs[:, 0].any() and not logprobs[attention_mask == 0].any()
    fallback_logprobs, shares, chunked = result["fallback"]
    assert not shares and chunked
    torch.testing.assert_close(fallback_logprobs, result[("teacher", 0)][2], rtol=1e-5, atol=1e-5)


def score_on_two_fsdp_ranks(rank: int, model_dir: str, batches: dict) -> dict:
    from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    teacher = PolicyWorker(TeacherConfig(model_name=model_dir, precision="float32", logprob_batch_size=BATCH,
                                         logprob_shared_prefix_min_tokens=PREFIX, dtensor_cfg=DTensorConfig(enabled=True)),
                           trainable=False)
    positions: list[int] = []
    teacher.model.get_input_embeddings().register_forward_hook(lambda m, args, o: positions.append(args[0].numel()))
    out = {}
    for case, per_rank in batches.items():  # each rank scores its own shard, as PolicyWorkerGroup shards a batch
        positions.clear()
        out[case] = (teacher.get_logprobs(per_rank[rank]), list(positions))
    return out


def test_fsdp_ranks_share_the_prefix_only_when_every_rank_can(tiny_model_dir):
    # FSDP2 all-gathers every layer per forward: a rank running two forwards while another runs one would hang
    input_ids, attention_mask = _shared_prefix_batch(49152)
    shared = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                        sample_mask=torch.ones(BATCH))
    unshared_ids = input_ids.clone()
    unshared_ids[1, 0] = (unshared_ids[1, 0] + 1) % 49152  # row 1 differs at column 0: nothing shared
    unshared = TokenBatch(input_ids=unshared_ids, attention_mask=attention_mask, loss_mask=attention_mask.clone(),
                          sample_mask=torch.ones(BATCH))
    results = run_ranks(score_on_two_fsdp_ranks, 2, tiny_model_dir, {"both": [shared, shared], "one": [shared, unshared]})
    shared_positions, full_positions = [PREFIX, BATCH * (SEQ_LEN - PREFIX)], [BATCH * SEQ_LEN]
    assert results[0]["both"][1] == results[1]["both"][1] == shared_positions
    assert results[0]["one"][1] == results[1]["one"][1] == full_positions  # rank 1 cannot share: neither does
    torch.testing.assert_close(results[0]["both"][0], results[0]["one"][0], rtol=1e-5, atol=1e-5)  # same scores either way
    torch.testing.assert_close(results[0]["both"][0], results[1]["both"][0], rtol=1e-5, atol=1e-5)


def score_targets_only(rank: int, model_dir: str, batch: TokenBatch) -> dict:
    from nemo_distill.models.policy.config import DTensorConfig, TeacherConfig
    from nemo_distill.models.policy.worker import PolicyWorker

    teacher = PolicyWorker(TeacherConfig(model_name=model_dir, precision="float32", logprob_batch_size=BATCH,
                                         dtensor_cfg=DTensorConfig(enabled=False)), trainable=False)
    head_rows: list[int] = []
    teacher.model.get_output_embeddings().register_forward_hook(lambda m, args, o: head_rows.append(args[0].shape[0] * args[0].shape[1]))
    out = {}
    for min_tokens in (PREFIX, 0):  # shared prefix / one full forward
        teacher.cfg.logprob_shared_prefix_min_tokens = min_tokens
        head_rows.clear()
        topk = teacher.get_topk_logits(batch, 3, targets_only=True)
        topk_rows = sum(head_rows)
        out[min_tokens] = (topk.values, topk.indices, teacher.get_logprobs(batch, targets_only=True), topk_rows)
    return out


def test_worker_targets_only_with_a_shared_prefix_skips_the_prefix_rows(tiny_model_dir):
    # the targets start two columns after the shared prefix, as a response follows a teacher's context and prompt
    input_ids, attention_mask = _shared_prefix_batch(49152)
    loss_mask = attention_mask.clone()
    loss_mask[:, : PREFIX + 1] = 0
    batch = TokenBatch(input_ids=input_ids, attention_mask=attention_mask, loss_mask=loss_mask, sample_mask=torch.ones(BATCH))
    first_row = batch.first_target_row()
    assert first_row == PREFIX
    result = run_ranks(score_targets_only, 1, tiny_model_dir, batch)[0]
    shared_values, shared_indices, shared_logprobs, shared_rows = result[PREFIX]
    values, indices, logprobs, rows = result[0]
    targets = loss_mask.bool()
    assert torch.equal(shared_indices[targets], indices[targets])
    torch.testing.assert_close(shared_values[targets], values[targets], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shared_logprobs[targets], logprobs[targets], rtol=1e-5, atol=1e-5)
    # top-k rows from first_row on, both ways (+ each forward's own last row: 2 forwards shared, 1 not)
    assert shared_rows == (1 + BATCH) + BATCH * (SEQ_LEN - first_row)
    assert rows == BATCH + BATCH * (SEQ_LEN - first_row)
