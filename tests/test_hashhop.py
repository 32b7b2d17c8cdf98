"""HashHop generator: parsed back, every chain walked, sizes, seeds, shuffled queries, scoring, CLI."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
import torch

from mmchunk.eval.hashhop import (
    ALPHABET,
    generate,
    make_task,
    parse_completion,
    parse_prompt,
    score,
    walk,
)


@pytest.mark.parametrize("hops, cot", [(1, False), (2, True), (4, False), (4, True)])
def test_every_chain_walks_to_its_target(hops, cot):
    for task in generate(3, 4000, hops, num_queries=5, hash_len=8, seed=1, cot=cot):
        lines = task.prompt.split("\n")
        edges = parse_prompt(task.prompt)
        assert len(edges) == len(lines)  # every key distinct
        assert abs(len(task.prompt) - 4000) <= 0.02 * 4000
        assert all(len(k) == 8 and set(k) <= set(ALPHABET) for k in edges)
        ends = [line.split(" = ")[1] for line in lines if line.endswith("'")]
        assert len(ends) * hops == len(lines)  # one quoted edge per chain
        starts = set(edges) - set(edges.values())
        assert len(starts) == len(ends) and len(task.targets) == 5 and set(task.targets) <= starts
        for query, answer in task.targets.items():
            chain = walk(edges, query, hops)
            assert answer == (" = ".join(chain) if cot else chain[-1])
            assert f"{chain[-2] if hops > 1 else query} = '{chain[-1]}'" in lines  # the chain's end is quoted
        got_hops, got_cot, answers = parse_completion(task.completion)
        assert (got_hops, got_cot, answers) == (hops, cot, task.targets)
        assert task.completion.startswith(f"COMPLETION:\nHops={hops}\nCoT={cot}\n")


def test_seeded_and_queries_really_shuffled():
    a = generate(2, 2000, 2, 3, 6, seed=7)
    assert [t.to_json() for t in a] == [t.to_json() for t in generate(2, 2000, 2, 3, 6, seed=7)]
    assert a[0].prompt != generate(1, 2000, 2, 3, 6, seed=8)[0].prompt
    first_chain_queried = 0
    for i in range(40):
        rng, replay = random.Random(i), random.Random(i)
        first_start = "".join(replay.choice(ALPHABET) for _ in range(6))  # the first hash drawn
        task = make_task(1500, 2, 1, 6, False, rng)
        first_chain_queried += first_start in task.targets
    assert first_chain_queried < 15  # ~1 in 9 chains; the public generator always queries the first


def test_budget_errors_and_scoring():
    with pytest.raises(ValueError, match="within 2%"):
        make_task(100, 4, 1, 16, False, random.Random(0))
    with pytest.raises(ValueError, match="too short"):
        make_task(4000, 2, 1, 1, False, random.Random(0))
    task = generate(1, 3000, 2, 2, 8, seed=0)[0]
    assert score(task.completion, task) == 1.0
    (q1, a1), (q2, _) = task.targets.items()
    assert score(f"COMPLETION:\nHops=2\nCoT=False\n{q1} = '{a1}'\n{q2} = 'wrong'\n", task) == 0.5
    assert score("no header", task) == 0.0


def test_cli_writes_jsonl(tmp_path):
    out = tmp_path / "tasks.jsonl"
    args = ["--n-chars", "3000", "--hops", "3", "--num-queries", "4", "--hash-len", "8", "--seed", "5"]
    done = subprocess.run(
        [sys.executable, "-m", "mmchunk.cli", "eval", "hashhop", "generate", *args, "--num", "3", "--cot",
         "--out", str(out)], capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(set(r) >= {"prompt", "completion", "targets"} for r in rows)
    assert rows[0]["targets"] == generate(1, 3000, 3, 4, 8, seed=5, cot=True)[0].targets
    bad = subprocess.run(
        [sys.executable, "-m", "mmchunk.cli", "eval", "hashhop", "generate", "--n-chars", "50", "--hops", "5",
         "--out", str(out)], capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("mmchunk eval hashhop")


def test_training_bytes_and_answer_mask():
    from mmchunk.eval.hashhop_lm import batch, task_bytes

    task = generate(1, 2000, 2, 3, 6, seed=4, cot=True)[0]
    data, mask = task_bytes(task)
    assert bytes(data.tolist()).decode() == task.prompt + "\n" + task.completion
    masked = bytes(data[mask].tolist()).decode()
    assert masked == "".join(f"{a}'" for a in task.targets.values())
    packed, packed_mask = batch([task, task])
    assert packed.lengths.tolist() == [len(data)] * 2 and packed_mask.sum() == 2 * mask.sum()


def test_byte_model_files_round_trip_and_answer(tmp_path):
    import torch

    from mmchunk.bytelm import ByteLM
    from mmchunk.eval.hashhop_lm import answer, load_model, save_model, score_tasks

    torch.manual_seed(0)
    config = {"dim": 16, "depth": 1, "heads": 2, "stages": 1}
    model = ByteLM(**config)
    save_model(model, config, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert len(answer(loaded, "abc = '", 5)) <= 5
    tasks = generate(2, 900, 1, 2, 4, seed=0)
    assert set(score_tasks(loaded, tasks)) == {1}  # an untrained model scores, per hop count
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a byte model file"):
        load_model(tmp_path / "bad.safetensors")


def test_cli_scores_a_saved_model(tmp_path):
    import torch

    from mmchunk.bytelm import ByteLM
    from mmchunk.eval.hashhop_lm import save_model

    torch.manual_seed(0)
    config = {"dim": 16, "depth": 1, "heads": 2, "stages": 0}
    save_model(ByteLM(**config), config, tmp_path / "m.safetensors")
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("".join(json.dumps(t.to_json()) + "\n" for t in generate(2, 900, 2, 1, 4, seed=0)))
    cmd = [
        sys.executable,
        "-m",
        "mmchunk.cli",
        "eval",
        "hashhop",
        "score",
        "--ckpt",
        str(tmp_path / "m.safetensors"),
    ]
    done = subprocess.run([*cmd, "--data", str(tasks), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"] == {"2": 0.0}  # an untrained model answers nothing right
    generated = subprocess.run(
        [*cmd, "--data", str(tasks), "--json", "--decode", "generate"], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    assert (
        json.loads(generated.stdout)["accuracy"] == {"2": 0.0}
        and json.loads(generated.stdout)["decode"] == "generate"
    )
    tasks.write_text("")
    empty = subprocess.run([*cmd, "--data", str(tasks)], capture_output=True, text=True)
    assert empty.returncode == 2 and "no HashHop tasks to score" in empty.stderr
    tasks.write_text("{broken\n")
    bad = subprocess.run([*cmd, "--data", str(tasks)], capture_output=True, text=True)
    assert bad.returncode == 2 and f"{tasks}:1: not a HashHop task" in bad.stderr


def test_spoken_prompts_are_shards_the_loader_reads(tmp_path):
    from mmchunk.data import DataConfig, make_dataset
    from mmchunk.eval.hashhop_spoken import prompt_ssml, spell

    assert spell("aB") == (
        "<say-as interpret-as='characters'>a</say-as> capital <say-as interpret-as='characters'>b</say-as>"
    )
    tasks = generate(2, 176, 1, 1, 3, seed=2)
    ssml, offsets = prompt_ssml(tasks[0].prompt)
    assert len(offsets) == len(tasks[0].prompt.splitlines()) and ssml.count(" end.") == len(offsets)  # 1 hop
    out = tmp_path / "tasks.jsonl"
    args = [
        "--n-chars",
        "176",
        "--hops",
        "1",
        "--hash-len",
        "3",
        "--seed",
        "2",
        "--num",
        "2",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmchunk.cli",
            "eval",
            "hashhop",
            "generate",
            *args,
            "--spoken",
            str(tmp_path / "spoken"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    batches = list(make_dataset(tmp_path / "spoken", DataConfig(use_video=False)))
    assert sum(len(b) for b in batches) == 2 and not any(b.skipped for b in batches)
    meta = batches[0].meta[0]
    assert meta["prompt"] == tasks[0].prompt and meta["targets"] == tasks[0].targets
    starts = meta["line_starts"]
    assert len(starts) == len(offsets) and starts == sorted(starts) and starts[-1] < meta["duration"]
    seconds = batches[0].audio.lengths[0].item() / 16_000
    assert seconds == pytest.approx(meta["duration"], abs=0.01) and seconds > 2.0 * len(offsets)


class _Oracle(torch.nn.Module):
    """A causal stand-in for a byte model: row t predicts the true byte t+1 of `truth`, except at
    positions ≡ 0 (mod `miss`), where it predicts a wrong byte (so some answers are right, some not)."""

    def __init__(self, truth: list[int], miss: int) -> None:
        super().__init__()
        self.truth, self.miss = truth, miss

    def forward(self, data):
        logits = torch.zeros(data.num_tokens, 256)
        for start, end in zip(data.cu_seqlens[:-1].tolist(), data.cu_seqlens[1:].tolist()):
            for t in range(start, end):
                pos = t - start
                byte = self.truth[pos + 1] if pos + 1 < len(self.truth) else 0
                logits[t, (byte + 1) % 256 if pos % self.miss == 0 else byte] = 1.0
        return logits, []


def test_teacher_forced_hits_equal_greedy_decoding():
    from mmchunk.eval.hashhop_lm import answer, answer_scores, context_of, score_tasks, task_bytes

    task = generate(1, 307, 2, 6, 3, seed=5, cot=True)[0]
    oracle = _Oracle(task_bytes(task)[0].tolist(), miss=23)
    greedy, context = [], context_of(task)
    for query, expected in task.targets.items():
        greedy.append(answer(oracle, context + f"{query} = '", len(expected) + 2) == expected)
        context += f"{query} = '{expected}'\n"
    assert 0 < sum(greedy) < len(greedy)  # the check can tell right from wrong
    scores = answer_scores(oracle, [task])
    assert scores.hits.tolist() == greedy
    assert answer_scores(oracle, [task, task], max_bytes=1).hits.tolist() == greedy * 2  # one task per pass
    _, mask = task_bytes(task)
    wrong = sum(pos % 23 == 0 for pos in range(len(mask) - 1) if mask[pos + 1])
    n, lse = int(mask.sum()), math.log(math.e + 255)  # logits: 1 at the predicted byte, 0 elsewhere
    expected = (wrong * lse + (n - wrong) * (lse - 1)) / n
    assert 0 < wrong < n and scores.nats == pytest.approx(expected, rel=1e-5)
    assert score_tasks(oracle, [task]) == {2: sum(greedy) / len(greedy)}
