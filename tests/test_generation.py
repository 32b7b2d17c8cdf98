"""The step path (issue 16): prefill + step equal the full forward pass at every position, batched
generation equals argmax decoding, and the edge cases of `ByteLM.generate`."""

from __future__ import annotations

import pytest
import torch

from mmchunk.bytelm import ByteLM
from mmchunk.layers import MixerStack
from mmchunk.ragged import Ragged

LENGTHS = {1: [41], 8: [37, 5, 60, 1, 23, 44, 9, 30]}


def model(stages: int) -> ByteLM:
    torch.manual_seed(stages)
    return ByteLM(dim=64, depth=2, heads=4, stages=stages).eval()


def random_bytes(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=gen) for n in lengths]


def stepped_logits(
    m, seqs: list[torch.Tensor], prompt: list[int], ragged: bool = False
) -> list[torch.Tensor]:
    """Per sequence `[len - prompt + 1, V]`: the logits after its prompt, then after each true byte
    fed one step at a time (every sequence steps each time; those past their end are ignored)."""
    room = max(len(s) - p for s, p in zip(seqs, prompt))  # exactly what the steps need
    with torch.no_grad():
        logits, state = m.prefill(Ragged.from_list([s[:p] for s, p in zip(seqs, prompt)]), room)
        rows = [[logits[b]] for b in range(len(seqs))]
        for t in range(max(len(s) - p for s, p in zip(seqs, prompt))):
            byte = torch.stack([s[min(p + t, len(s) - 1)] for s, p in zip(seqs, prompt)])
            logits, state = m.step(byte, state, ragged)
            for b, (s, p) in enumerate(zip(seqs, prompt)):
                if p + t < len(s):
                    rows[b].append(logits[b])
    return [torch.stack(r[: len(s) - p + 1]) for r, s, p in zip(rows, seqs, prompt)]


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("stages", [0, 1, 2])
@pytest.mark.parametrize("batch", [1, 8])
def test_step_logits_equal_the_full_pass(stages, batch, ragged):
    m = model(stages)
    seqs = random_bytes(LENGTHS[batch], seed=batch)
    with torch.no_grad():
        full, routing = m(Ragged.from_list(seqs))
    assert all(r.compression > 1.2 for r in routing)  # the stages really chunk
    cu = [0, *torch.tensor(LENGTHS[batch]).cumsum(0).tolist()]
    for prompt in ([1] * batch, [max(1, n // 3) for n in LENGTHS[batch]]):
        stepped = stepped_logits(m, seqs, prompt, ragged)
        for b, p in enumerate(prompt):
            want = full[cu[b] + p - 1 : cu[b + 1]]
            torch.testing.assert_close(stepped[b][: len(want)], want, atol=1e-4, rtol=0)


def test_window_attention_steps_past_its_window():
    """A causal sliding window keeps only its last w + 1 keys, for prompts longer than w."""
    torch.manual_seed(0)
    stack = MixerStack(32, 2, "window", heads=2, window=4, causal=True).eval()
    lengths, prompt = [13, 3, 9], [7, 1, 6]
    seqs = [torch.randn(n, 32) for n in lengths]
    cu = [0, 13, 16, 25]
    with torch.no_grad():
        full = stack(Ragged.from_list(seqs)).values
        out, state = stack.prefill(Ragged.from_list([s[:p] for s, p in zip(seqs, prompt)]), 64)
        assert state[0].k.shape[2] == 5  # the bounded cache
        want = torch.cat([full[c : c + p] for c, p in zip(cu, prompt)])
        torch.testing.assert_close(out.values, want, atol=1e-5, rtol=0)
        for t in range(max(n - p for n, p in zip(lengths, prompt))):
            index = [min(p + t, n - 1) for n, p in zip(lengths, prompt)]
            y, state = stack.step(torch.stack([s[i] for s, i in zip(seqs, index)]), state)
            for b, i in enumerate(index):
                if prompt[b] + t < lengths[b]:
                    torch.testing.assert_close(y[b], full[cu[b] + i], atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch", [1, 8])
def test_ragged_step_runs_each_main_network_on_the_opening_rows_only(monkeypatch, batch):
    """Ragged steps: the main network of each stage steps on a sub-batch of exactly the sequences
    whose byte opens a chunk at that level (the full pass's boundaries), and not at all when none does."""
    m = model(2)
    length = 30
    seqs = random_bytes([length] * batch, seed=5)
    with torch.no_grad():
        _, routing = m(Ragged.from_list(seqs))
    opens = [routing[0].boundary_mask, torch.zeros_like(routing[0].boundary_mask)]
    opens[1][routing[0].boundary_mask.nonzero().squeeze(1)] = routing[1].boundary_mask  # per byte
    calls: dict[int, list[int]] = {0: [], 1: []}
    for level, module in enumerate((m.network.main, m.network.main.main)):

        def counted(x, state, active=None, rows=None, level=level, module=module, original=module.step):
            calls[level].append(len(x))
            return original(x, state, active, rows)

        monkeypatch.setattr(module, "step", counted)
    stepped_logits(m, seqs, [1] * batch, ragged=True)
    for level in (0, 1):
        per_step = opens[level].view(batch, length)[:, 1:].sum(0).tolist()  # byte t + 1 at step t
        assert calls[level] == [n for n in per_step if n > 0]
    assert 0 < len(calls[1]) < length - 1 if batch == 1 else min(calls[1]) < batch  # really ragged


@pytest.mark.parametrize("stages", [0, 1, 2])
def test_greedy_generation_is_argmax_decoding(stages):
    m = model(stages)
    prompts = [b"The cat", b"x", b"HashHop: a = 'b'\n", b"0123456789" * 4]
    outs = m.generate(prompts, 12)
    assert [len(o) for o in outs] == [12] * 4
    with torch.no_grad():
        for prompt, out in zip(prompts, outs):
            whole = torch.tensor(list(prompt + out))
            logits, _ = m(Ragged.from_list([whole]))
            assert logits[len(prompt) - 1 : -1].argmax(-1).tolist() == list(out)
    assert m.generate(prompts[:1], 12) == outs[:1]  # the batch does not change a sequence's bytes
    assert m.generate(prompts, 12, ragged=False) == outs  # the masked step: the same bytes


def test_stop_byte_ends_only_the_sequences_that_reach_it(monkeypatch):
    m = model(1)
    prompts = [b"abc", b"hello world", b"zz"]
    free = m.generate(prompts, 16)
    stop = next(b for b in free[0] if b not in free[1])
    batches = []
    step = ByteLM.step
    monkeypatch.setattr(
        ByteLM, "step", lambda self, byte, *rest: batches.append(len(byte)) or step(self, byte, *rest)
    )
    stopped = m.generate(prompts, 16, stop=bytes([stop]))
    assert stopped[0] == free[0][: free[0].index(stop)] and stopped[1] == free[1]
    assert stopped[2] == (free[2][: free[2].index(stop)] if stop in free[2] else free[2])
    assert len(batches) == 15 and batches[-1] < 3  # a finished sequence leaves the batch


def test_generation_edge_cases():
    m = model(2)
    assert m.generate([b"ab", b"c"], 0) == [b"", b""]
    assert m.generate([], 5) == []
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        m.generate([b"a", b""], 4)
    with pytest.raises(ValueError, match="top_k"):
        m.generate([b"a"], 4, temperature=1.0, top_k=0)
    sampled = m.generate([b"abc", b"de"], 10, temperature=1.0, seed=3)
    assert sampled == m.generate([b"abc", b"de"], 10, temperature=1.0, seed=3)
    assert sampled != m.generate([b"abc", b"de"], 10, temperature=1.0, seed=4)
    assert m.generate([b"abc"], 10, temperature=0.7, top_k=1) == m.generate([b"abc"], 10)
    long_prompt = bytes(range(256)) * 3  # longer than anything the test models saw
    assert len(m.generate([long_prompt, b"q"], 5)[0]) == 5


def test_step_compiles_without_graph_breaks():
    """No host syncs or Python branching on tensor values inside a step: one graph."""
    m = model(2)
    data = Ragged.from_list(random_bytes([7, 3]))
    with torch.no_grad():
        _, state = m.prefill(data, 32)
        want, _ = m.step(torch.tensor([1, 2]), state)
        _, state = m.prefill(data, 32)
        compiled = torch.compile(m.step, fullgraph=True, backend="aot_eager")
        got, _ = compiled(torch.tensor([1, 2]), state)
    torch.testing.assert_close(got, want)


def test_generate_command(tmp_path, capsys):
    import json

    from mmchunk.cli import main
    from mmchunk.eval.hashhop_lm import save_model

    config = {"dim": 32, "depth": 1, "heads": 2, "stages": 2}
    torch.manual_seed(0)
    saved = ByteLM(**config).eval()
    save_model(saved, config, tmp_path / "m.safetensors")
    argv = ["generate", "--ckpt", str(tmp_path / "m.safetensors"), "--prompt", "ab", "--prompt", "xyz"]
    assert main([*argv, "--max-new-bytes", "6", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["outputs"]
    want = saved.generate([b"ab", b"xyz"], 6)
    assert [r["output"].encode("utf-8", errors="replace") for r in rows] == [
        w.decode("utf-8", errors="replace").encode() for w in want
    ]
    assert [r["bytes"] for r in rows] == [6, 6]
    assert main([*argv, "--max-new-bytes", "6", "--json", "--masked"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == rows
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    for bad, message in [
        ("missing.safetensors", "no such byte model file"),
        (".", "is a folder"),
        ("junk.safetensors", "not a byte model file"),
    ]:
        assert main(["generate", "--ckpt", str(tmp_path / bad), "--prompt", "a"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main([*argv, "--prompt", ""]) == 2
    assert "prompt 2 is empty" in capsys.readouterr().err


def test_hashhop_decoding_by_generate_matches_the_reference_loop():
    """`decode_answers` (batched generation) gives what `answer` (one full pass per byte) gives."""
    from mmchunk.eval.hashhop import generate
    from mmchunk.eval.hashhop_lm import answer, decode_answers, query_contexts

    torch.manual_seed(0)
    lm = ByteLM(dim=32, depth=1, heads=2, stages=1).eval()
    tasks = generate(2, 311, 2, 3, 4, seed=1)
    decoded = decode_answers(lm, tasks, batch_size=4)
    contexts = [c for t in tasks for c in query_contexts(t)]
    lengths = [len(a) for t in tasks for a in t.targets.values()]
    assert len(decoded) == len(contexts) == 6
    for got, context, n in zip(decoded, contexts, lengths):
        reference = answer(lm, context, n + 2)
        assert got[: n + 2] == reference


def test_recurrent_stack_extends_one_sequence_piece_by_piece():
    """`MixerStack.extend` over a sequence cut into pieces of 1, 3 and 20 tokens (both the
    addcmul path and the scan path) gives `forward` over the whole sequence."""
    torch.manual_seed(0)
    stack = MixerStack(16, 2, "recurrent").eval()
    x = torch.randn(40, 16)
    with torch.no_grad():
        full = stack(Ragged.from_list([x])).values
        state, pieces = stack.init_state(1, 0, x), []
        for start, stop in [(0, 1), (1, 4), (4, 24), (24, 40)]:
            y, state = stack.extend(x[start:stop], state)
            pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces), full, atol=1e-5, rtol=0)
