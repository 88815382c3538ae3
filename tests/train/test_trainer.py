"""The generic Trainer on a toy regression task: learning, stages, resume, early stopping, logs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from train_toy_task import FAST, ToyTask

from karma.errors import ConfigError, KarmaError
from karma.train.checkpoint import latest_checkpoint, list_checkpoints, load_model_weights
from karma.train.config import TrainConfig
from karma.train.schedule import warmup_cosine_factor
from karma.train.trainer import Trainer


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def params(task: ToyTask) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in task.model.state_dict().items()}


def test_loss_falls(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=60, eval_every=0, checkpoint_every=0, lr_warmup_steps=5)
    Trainer(config, ToyTask(dropout=0.0), tmp_path).fit()
    losses = [r["mse"] for r in read_log(tmp_path) if r["kind"] == "train"]
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5


def test_every_trainable_parameter_changes_and_frozen_ones_do_not(tmp_path: Path) -> None:
    task = ToyTask()
    task.model[0].bias.requires_grad_(False)
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    Trainer(replace(FAST, max_steps=3), task, tmp_path).fit()
    for name, param in task.model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == param.requires_grad, name


@pytest.mark.parametrize(
    ("grad_accum", "semantic_warmup_steps", "crash_step"),
    [(1, 0, 4), (2, 0, 4), (2, 3, 2), (2, 3, 6)],
)
def test_resume_equals_uninterrupted_run(
    tmp_path: Path, grad_accum: int, semantic_warmup_steps: int, crash_step: int
) -> None:
    # 5 batches an epoch with grad_accum 2 -> steps of 2, 2 and 1 batches; a crash at step 4 is
    # mid-epoch, so resuming must skip the consumed batches of that epoch.
    config = replace(
        FAST,
        grad_accum=grad_accum,
        semantic_warmup_steps=semantic_warmup_steps,
        checkpoint_every=2,
        eval_every=3,
    )
    whole = ToyTask(dropout=0.3)
    whole_result = Trainer(config, whole, tmp_path / "whole").fit()

    batches_before_crash = len(whole.stages[: _batches_for_steps(config, crash_step)])
    crashing = ToyTask(dropout=0.3, crash_after_calls=batches_before_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(config, crashing, tmp_path / "split").fit()
    assert latest_checkpoint(tmp_path / "split").name == f"step_{crash_step:07d}"

    resumed = ToyTask(dropout=0.3, init_seed=1)  # other initial weights: the checkpoint must win
    result = Trainer(config, resumed, tmp_path / "split", resume=True).fit()

    assert result["steps"] == whole_result["steps"] == semantic_warmup_steps + 8
    # steps per stage survive the crash: the resumed run counts the warm-up it did before it
    warmup = {"warmup": semantic_warmup_steps} if semantic_warmup_steps else {}
    assert result["stage_steps"] == whole_result["stage_steps"] == warmup | {"joint": 8}
    assert crashing.stages + resumed.stages == whole.stages
    assert crashing.epochs + resumed.epochs == whole.epochs
    for name, value in params(whole).items():
        torch.testing.assert_close(params(resumed)[name], value, rtol=1e-6, atol=1e-7)
    assert result["best_step"] == whole_result["best_step"]
    assert result["final_metrics"] == pytest.approx(whole_result["final_metrics"])


@pytest.mark.parametrize("checkpoint_every", [4, 0])
def test_a_resumed_log_reads_as_one_run(tmp_path: Path, checkpoint_every: int) -> None:
    # A crash in step 7: steps 5 and 6 (and the step-6 validation) were logged after the last
    # checkpoint (step 4), or, with no checkpoint at all, steps 1-6 before a fresh start. The
    # restarted run trains them again; log.jsonl must hold each step once, as the whole run's.
    config = replace(FAST, eval_every=3, checkpoint_every=checkpoint_every)
    Trainer(config, ToyTask(dropout=0.3), tmp_path / "whole").fit()
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(config, ToyTask(dropout=0.3, crash_after_calls=6), tmp_path / "split").fit()
    before = [(r["kind"], r["step"]) for r in read_log(tmp_path / "split")]
    assert before[-2:] == [("train", 6), ("eval", 6)]
    Trainer(config, ToyTask(dropout=0.3), tmp_path / "split", resume=True).fit()
    whole, split = read_log(tmp_path / "whole"), read_log(tmp_path / "split")
    assert [(r["kind"], r["step"]) for r in split] == [(r["kind"], r["step"]) for r in whole]
    evals = [r["ndcg@10"] for r in split if r["kind"] == "eval"]
    assert evals == pytest.approx([r["ndcg@10"] for r in whole if r["kind"] == "eval"])


def _batches_for_steps(config: TrainConfig, steps: int, num_batches: int = 5) -> int:
    """Batches consumed by `steps` optimizer steps (each stage starts a fresh epoch)."""
    batches = 0
    for stage_steps in (
        min(steps, config.semantic_warmup_steps),
        steps - config.semantic_warmup_steps,
    ):
        in_epoch = 0
        for _ in range(max(stage_steps, 0)):
            size = min(config.grad_accum, num_batches - in_epoch)
            batches += size
            in_epoch = (in_epoch + size) % num_batches
    return batches


def test_warmup_stage_runs_its_steps_then_joint(tmp_path: Path) -> None:
    config = replace(FAST, semantic_warmup_steps=3, max_steps=4, eval_every=0, checkpoint_every=0)
    task = ToyTask()
    result = Trainer(config, task, tmp_path).fit()
    assert task.stages == ["warmup"] * 3 + ["joint"] * 4
    assert task.epochs == [0, 0, 0, 1, 1, 1, 1]  # joint starts a fresh epoch
    train = [r for r in read_log(tmp_path) if r["kind"] == "train"]
    assert [(r["stage"], r["stage_step"], r["step"]) for r in train] == [
        ("warmup", 1, 1), ("warmup", 2, 2), ("warmup", 3, 3),
        ("joint", 1, 4), ("joint", 2, 5), ("joint", 3, 6), ("joint", 4, 7),
    ]  # fmt: skip
    # each stage has its own schedule: both start at lr * (0 + 1) / lr_warmup_steps
    assert train[0]["lr"] == pytest.approx(0.02 * 1 / 2)
    assert train[3]["lr"] == pytest.approx(0.02 * 1 / 2)
    assert train[6]["lr"] == pytest.approx(0.02 * warmup_cosine_factor(3, 2, 4))
    assert result["steps"] == 7
    assert result["stage_steps"] == {"warmup": 3, "joint": 4}
    assert [r["step"] for r in read_log(tmp_path) if r["kind"] == "eval"] == [7]


def test_max_epochs_ends_training_before_max_steps(tmp_path: Path) -> None:
    config = replace(FAST, max_epochs=1, grad_accum=2, max_steps=100)
    task = ToyTask()
    result = Trainer(config, task, tmp_path).fit()
    assert result["steps"] == 3  # 5 batches in steps of 2, 2, 1
    assert len(task.stages) == 5


def test_early_stopping_after_patience(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=20, eval_every=1, early_stopping_patience=2)
    task = ToyTask(scripted_metrics=[0.5, 0.6, 0.55, 0.58, 0.9, 0.9])
    result = Trainer(config, task, tmp_path).fit()
    assert result["stopped_early"] is True
    assert result["steps"] == 4
    assert (result["best_metric"], result["best_step"]) == (0.6, 2)
    best = json.loads((tmp_path / "best" / "metrics.json").read_text())
    assert best == {"step": 2, "metrics": {"ndcg@10": 0.6}}
    reloaded = ToyTask(init_seed=5)
    load_model_weights(reloaded.model, Path(result["best_model_dir"]))
    for name, value in task.validated_states[1].items():
        torch.testing.assert_close(reloaded.model.state_dict()[name], value)


def test_time_budget_stops_the_joint_stage_then_validates(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=50, eval_every=0, time_budget_minutes=1e-9)
    result = Trainer(config, ToyTask(), tmp_path).fit()
    assert result["steps"] == 1  # the first step already crosses a ~0 budget
    assert result["final_metrics"]  # the end-of-training validation still ran
    assert (tmp_path / "best" / "model.safetensors").is_file()


def test_min_mode_prefers_lower_metric(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=3, eval_every=1, early_stopping_mode="min")
    task = ToyTask(scripted_metrics=[0.5, 0.3, 0.4])
    result = Trainer(config, task, tmp_path).fit()
    assert (result["best_metric"], result["best_step"]) == (0.3, 2)


def test_log_has_lr_throughput_and_eval_lines(tmp_path: Path) -> None:
    Trainer(replace(FAST, max_steps=4, log_every=2), ToyTask(), tmp_path).fit()
    records = read_log(tmp_path)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    for record in train:
        assert {"loss", "mse", "lr", "grad_norm", "steps_per_s", "sequences_per_s"} <= set(record)
        assert record["sequences_per_s"] > 0 and record["steps_per_s"] > 0
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [4] and "mse" in evals[0]


def test_checkpoints_keep_the_last_k(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=8, checkpoint_every=2, keep_checkpoints=2)
    result = Trainer(config, ToyTask(), tmp_path).fit()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000006", "step_0000008"]
    assert result["last_checkpoint"] == str(tmp_path / "checkpoints" / "step_0000008")


def test_optimizer_groups_set_per_group_learning_rates(tmp_path: Path) -> None:
    task = ToyTask()

    def optimizer_groups(base_lr: float) -> list[dict]:
        return [
            {"params": list(task.model[0].parameters()), "lr": base_lr * 10},
            {"params": list(task.model[3].parameters()), "lr": base_lr, "weight_decay": 0.0},
        ]

    task.optimizer_groups = optimizer_groups  # type: ignore[attr-defined]
    config = replace(FAST, max_steps=8, lr_warmup_steps=4, checkpoint_every=2, keep_checkpoints=4)
    Trainer(config, task, tmp_path).fit()
    state = torch.load(
        tmp_path / "checkpoints" / "step_0000002" / "training_state.pt", weights_only=True
    )
    groups = state["optimizer"]["param_groups"]
    # after 2 of 4 warm-up steps the next lr factor is 3/4
    assert [g["lr"] for g in groups] == pytest.approx([0.2 * 3 / 4, 0.02 * 3 / 4])
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]


def test_bf16_autocast_on_cpu_trains(tmp_path: Path) -> None:
    task = ToyTask()
    result = Trainer(replace(FAST, precision="bf16", max_steps=3), task, tmp_path).fit()
    assert result["steps"] == 3
    assert all(p.dtype == torch.float32 for p in task.model.parameters())  # master weights fp32


def test_refuses_a_run_dir_with_checkpoints_unless_resuming(tmp_path: Path) -> None:
    Trainer(replace(FAST, max_steps=2), ToyTask(), tmp_path).fit()
    with pytest.raises(KarmaError, match="already holds checkpoints"):
        Trainer(replace(FAST, max_steps=2), ToyTask(), tmp_path).fit()


def test_unknown_early_stopping_metric_names_the_field(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=2, early_stopping_metric="recall@5")
    with pytest.raises(ConfigError, match=r"train.early_stopping_metric: 'recall@5'"):
        Trainer(config, ToyTask(), tmp_path).fit()


def test_crash_mid_checkpoint_keeps_previous_one_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import karma.train.checkpoint as checkpoint_module

    config = replace(FAST, checkpoint_every=2, eval_every=0)
    whole = ToyTask()
    Trainer(config, whole, tmp_path / "whole").fit()

    real_save = checkpoint_module.torch.save
    calls = {"n": 0}

    def crash_on_second_save(obj: object, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"half a file")
            raise OSError("disk gone")
        real_save(obj, path)

    monkeypatch.setattr(checkpoint_module.torch, "save", crash_on_second_save)
    with pytest.raises(OSError, match="disk gone"):
        Trainer(config, ToyTask(), tmp_path / "split").fit()
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["step_0000002"]

    resumed = ToyTask()
    Trainer(config, resumed, tmp_path / "split", resume=True).fit()
    for name, value in params(whole).items():
        torch.testing.assert_close(params(resumed)[name], value, rtol=1e-6, atol=1e-7)
    assert not any(
        p.name.startswith(".tmp") for p in (tmp_path / "split" / "checkpoints").iterdir()
    )


def test_tensorboard_scalars_written(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    Trainer(replace(FAST, max_steps=2, tensorboard=True), ToyTask(), tmp_path).fit()
    assert any((tmp_path / "tb").iterdir())


DDP_SCRIPT = """
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, {tests!r})
from test_trainer import FAST
from train_toy_task import FAST, ToyTask

from karma.train.trainer import Trainer

distributed, grad_accum, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
config = replace(FAST, distributed=distributed, device="cpu", grad_accum=grad_accum, max_steps=6)
task = ToyTask(num_batches=4, dropout=0.0)
Trainer(config, task, out).fit()
torch.save(task.model.state_dict(), out / f"final_{{torch.distributed.get_rank() if distributed != 'none' else 0}}.pt")
"""


@pytest.mark.slow
def test_two_process_ddp_equals_one_process_with_grad_accum(tmp_path: Path) -> None:
    """2 CPU processes (gloo), 1 batch each per step == 1 process summing 2 batches per step."""
    import subprocess
    import sys

    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    subprocess.run([*torchrun, str(script), "ddp", "1", str(tmp_path / "ddp")], check=True)
    subprocess.run([sys.executable, str(script), "none", "2", str(tmp_path / "one")], check=True)
    one = torch.load(tmp_path / "one" / "final_0.pt")
    for rank in (0, 1):  # every process ends with the same weights
        ddp = torch.load(tmp_path / "ddp" / f"final_{rank}.pt")
        for name, value in one.items():
            torch.testing.assert_close(ddp[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_auto_precision_trains_and_resumes(tmp_path: Path) -> None:
    config = replace(FAST, device="cuda", checkpoint_every=2, eval_every=0)
    whole = ToyTask(dropout=0.3)
    trainer = Trainer(config, whole, tmp_path / "whole")
    trainer.fit()
    assert trainer.device.type == "cuda"
    if torch.cuda.is_bf16_supported():
        assert trainer.amp_dtype == torch.bfloat16
    crashing = ToyTask(dropout=0.3, crash_after_calls=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(config, crashing, tmp_path / "split").fit()
    resumed = ToyTask(dropout=0.3, init_seed=1)
    Trainer(config, resumed, tmp_path / "split", resume=True).fit()
    for name, value in params(whole).items():
        torch.testing.assert_close(params(resumed)[name], value)


class HookedToyTask(ToyTask):
    """ToyTask with the optional hooks: records every StepInfo and backward call."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.infos: list[tuple[str, int, int, bool]] = []
        self.scales: list[float] = []

    def start_step(self, info: object) -> None:
        self.infos.append((info.stage, info.stage_step, info.stage_steps, info.log))  # type: ignore[attr-defined]

    def backward(self, output: object, scale: float) -> dict[str, float]:
        self.scales.append(scale)
        (output.loss * scale).backward()  # type: ignore[attr-defined]
        return {"extra_part": 7.0}


def test_trainer_calls_the_optional_task_hooks(tmp_path: Path) -> None:
    task = HookedToyTask(num_batches=4)
    config = replace(FAST, max_steps=3, grad_accum=2, log_every=2, eval_every=0)
    Trainer(config, task, tmp_path).fit()
    # One start_step per optimizer step (not per micro-batch); step 1 is the logged one.
    assert task.infos == [("joint", 0, 3, False), ("joint", 1, 3, True), ("joint", 2, 3, False)]
    assert task.scales == [0.5] * 6
    logged = [r for r in read_log(tmp_path) if r["kind"] == "train"]
    assert logged[0]["extra_part"] == 7.0


@pytest.mark.parametrize(
    ("grad_accum", "semantic_warmup_steps", "pause_after"),
    [(1, 0, 3), (2, 0, 4), (2, 3, 3), (2, 3, 5)],
)
def test_pause_then_resume_equals_uninterrupted_run(
    tmp_path: Path, grad_accum: int, semantic_warmup_steps: int, pause_after: int
) -> None:
    # checkpoint_every=4 never falls on the pause step 3 or 5: the pause writes its own checkpoint.
    config = replace(
        FAST, grad_accum=grad_accum, semantic_warmup_steps=semantic_warmup_steps, eval_every=3
    )
    whole = ToyTask(dropout=0.3)
    whole_result = Trainer(config, whole, tmp_path / "whole").fit()
    whole_losses = [r["mse"] for r in read_log(tmp_path / "whole") if r["kind"] == "train"]

    first = ToyTask(dropout=0.3)
    paused = Trainer(config, first, tmp_path / "split", pause_after_steps=pause_after).fit()
    assert paused["paused"] is True and paused["stopped_early"] is False
    assert paused["steps"] == pause_after
    assert latest_checkpoint(tmp_path / "split").name == f"step_{pause_after:07d}"
    assert paused["last_checkpoint"] == str(latest_checkpoint(tmp_path / "split"))

    resumed = ToyTask(dropout=0.3, init_seed=1)  # other initial weights: the checkpoint must win
    result = Trainer(config, resumed, tmp_path / "split", resume=True).fit()
    assert result["paused"] is False
    assert result["steps"] == whole_result["steps"] == semantic_warmup_steps + 8
    # steps per stage survive the pause: the resumed run counts the warm-up it did before it
    warmup = {"warmup": semantic_warmup_steps} if semantic_warmup_steps else {}
    assert result["stage_steps"] == whole_result["stage_steps"] == warmup | {"joint": 8}
    assert first.stages + resumed.stages == whole.stages
    for name, value in params(whole).items():
        assert torch.equal(params(resumed)[name], value), name
    split_losses = [r["mse"] for r in read_log(tmp_path / "split") if r["kind"] == "train"]
    assert split_losses == whole_losses  # bit-identical, step by step
    assert result["best_step"] == whole_result["best_step"]


def test_pause_counts_the_steps_of_this_call_and_can_pause_again(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=8, checkpoint_every=0, eval_every=0)
    assert Trainer(config, ToyTask(), tmp_path, pause_after_steps=3).fit()["steps"] == 3
    again = Trainer(config, ToyTask(), tmp_path, resume=True, pause_after_steps=3).fit()
    assert (again["paused"], again["steps"]) == (True, 6)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000003", "step_0000006"]


def test_pause_never_triggers_at_the_last_step(tmp_path: Path) -> None:
    # a deadline already passed: every step is due, yet the run's last step ends it normally
    config = replace(FAST, max_steps=1, eval_every=0, checkpoint_every=0)
    result = Trainer(config, ToyTask(), tmp_path, pause_at=0.0).fit()
    assert (result["paused"], result["steps"]) == (False, 1)
    assert result["final_metrics"]  # the end-of-run validation ran
    result = Trainer(
        replace(config, max_steps=4), ToyTask(), tmp_path / "b", pause_after_steps=4
    ).fit()
    assert (result["paused"], result["steps"]) == (False, 4)


def test_passed_deadline_pauses_after_the_first_step(tmp_path: Path) -> None:
    config = replace(FAST, max_steps=8, eval_every=0)
    result = Trainer(config, ToyTask(), tmp_path, pause_at=0.0).fit()
    assert (result["paused"], result["stopped_early"], result["steps"]) == (True, False, 1)
    assert result["final_metrics"] == {}  # no end-of-run validation: the run is not over
    assert not (tmp_path / "best").exists()


def test_pause_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pause_after_steps"):
        Trainer(FAST, ToyTask(), tmp_path, pause_after_steps=0)
    with pytest.raises(ConfigError, match="fsdp run cannot pause"):
        Trainer(replace(FAST, distributed="fsdp"), ToyTask(), tmp_path, pause_at=0.0)


def test_training_time_adds_up_over_a_pause_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import karma.train.trainer as trainer_module

    now = [100.0]  # a clock that moves 1 s per loss step and nowhere else
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: now[0])

    def timed(task: ToyTask) -> ToyTask:
        original = task.loss_step

        def step(batch: dict, stage: str):
            now[0] += 1.0
            return original(batch, stage)

        task.loss_step = step  # type: ignore[method-assign]
        return task

    first = Trainer(FAST, timed(ToyTask()), tmp_path, pause_after_steps=3).fit()
    assert first["paused"] and first["train_seconds"] == 3.0
    now[0] += 1000.0  # time between the sessions does not count
    second = Trainer(FAST, timed(ToyTask()), tmp_path, resume=True).fit()
    assert second["steps"] == 8 and second["train_seconds"] == 8.0


def test_training_time_is_unknown_when_resuming_a_checkpoint_that_did_not_count_it(
    tmp_path: Path,
) -> None:
    Trainer(FAST, ToyTask(), tmp_path, pause_after_steps=3).fit()
    state_file = latest_checkpoint(tmp_path) / "trainer_state.json"
    fields = json.loads(state_file.read_text())
    del fields["train_seconds"]  # as an older karma wrote it
    state_file.write_text(json.dumps(fields))
    assert Trainer(FAST, ToyTask(), tmp_path, resume=True).fit()["train_seconds"] is None
