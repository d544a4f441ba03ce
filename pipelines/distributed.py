"""Data-parallel training of the two-tower model across worker processes on this machine.

``train_distributed`` writes the training pairs to a scratch folder and starts N copies of this module
(``python -m pipelines.distributed WORK``), each with a ``TF_CONFIG`` naming a cluster of N workers on
free loopback ports and its own task index. Every worker builds the two-tower's Keras layers
(``models.two_tower_keras``) inside ``MultiWorkerMirroredStrategy.scope()``, reads only its own shard of the
pairs and trains; each step the replicas' gradients are summed by a gRPC ring all-reduce, so all workers
hold the same weights. The chief (worker 0) exports the embeddings as an ordinary ``TwoTower`` and saves it:
the result loads and recommends through ``models.base`` like a single-process fit, without TensorFlow.

Shards are explicit and of equal size, and batches are full: a worker with one step more than the others
would wait in the all-reduce forever. Each replica's in-batch softmax takes its own ``batch_size`` pairs as
negatives, so the loss is on the scale of a single-process fit with that batch size, and N workers take
1/N of its steps per epoch (with N times the examples per step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import InteractionData
from models.two_tower import TwoTower, item_log_probs
from pipelines.stage import StageResult

# The TwoTower hyper-parameters a worker trains with: saved with the model, so it loads as a TwoTower.
MODEL_PARAMS = ("embedding_dim", "epochs", "batch_size", "learning_rate", "temperature", "seed")


@dataclasses.dataclass
class DistributedConfig:
    """Number of local workers and the TwoTower hyper-parameters (``batch_size`` is per worker)."""

    workers: int = 2
    embedding_dim: int = 64
    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 0.005
    temperature: float = 0.2
    seed: int = 0
    timeout_seconds: float = 900.0  # for the whole job: workers still running then are killed

    def model_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MODEL_PARAMS}


@dataclasses.dataclass
class WorkerReport:
    """What one worker did, written by the worker itself."""

    index: int
    examples: int  # training pairs in its shard
    shard_sha256: str  # of the (user, item) pairs of its shard, in shard order
    steps: int  # optimizer steps, each one an all-reduce with the other workers
    loss: float  # mean training loss over the last epoch (global: the same on every worker)
    train_seconds: float  # from building the strategy to the last step
    seconds: float  # the whole worker, TensorFlow import included
    weights_sha256: str  # of the exported user and item embeddings: equal on all workers when in sync


@dataclasses.dataclass
class DistributedResult(StageResult):
    workers: int
    wall_seconds: float  # first worker started to last worker exited
    final_loss: float  # mean training loss of the last epoch
    pairs_loss: float  # the saved model's in-batch loss over all pairs (see ``in_batch_loss_of``)
    model_path: Path  # the chief's TwoTower, for ``models.base.Recommender.load``
    reports: list[WorkerReport]


def train_distributed(
    data: InteractionData, model_path: Path, config: DistributedConfig | None = None
) -> DistributedResult:
    """Train a TwoTower on ``data`` with ``config.workers`` local processes; the chief saves it at
    ``model_path``. Raises ValueError on a config that cannot run, RuntimeError when a worker fails or the
    job times out (the other workers are killed)."""
    config = config or DistributedConfig()
    with tempfile.TemporaryDirectory(prefix="fusionrec-distributed-") as scratch:
        work = Path(scratch)
        write_job(data, work, model_path, config)
        start = time.perf_counter()
        run_workers(work, config.workers, config.timeout_seconds)
        return read_result(work, time.perf_counter() - start)


def write_job(data: InteractionData, work: Path, model_path: Path, config: DistributedConfig) -> None:
    """Everything a worker reads, in folder ``work``: the pairs, side features and ``job.json``. On a cluster
    ``work`` is a shared volume and each pod runs ``python -m pipelines.distributed WORK`` with its TF_CONFIG."""
    users, items = training_pairs(data)
    check_config(config, len(users))
    clear_model_folder(Path(model_path))
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "pairs.npz", users=users, items=items)
    for name, features in (("user", data.user_features), ("item", data.item_features)):
        if features is not None:
            np.save(work / f"{name}_features.npy", np.asarray(features, dtype=np.float32))
    job = {
        "params": config.model_params(),
        "workers": config.workers,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "model_path": str(Path(model_path).resolve()),
    }
    (work / "job.json").write_text(json.dumps(job))


def clear_model_folder(path: Path) -> None:
    """Remove an earlier saved model at ``path`` (a stale file such as an old item projection would load with
    the new one); refuse a non-empty folder that is not a saved model."""
    if not path.exists():
        return
    if (path / "recommender.json").exists():
        shutil.rmtree(path)
    elif not path.is_dir() or any(path.iterdir()):
        raise ValueError(f"{path} exists and is not a saved model: choose an empty or new folder")


def read_result(work: Path, wall_seconds: float) -> DistributedResult:
    """The workers' reports in ``work`` and the loss of the model the chief saved."""
    job = json.loads((work / "job.json").read_text())
    reports = [
        WorkerReport(**json.loads((work / f"worker-{i}.json").read_text())) for i in range(job["workers"])
    ]
    model_path = Path(job["model_path"])
    pairs = np.load(work / "pairs.npz")
    params = job["params"]
    model = TwoTower.load(model_path)
    assert isinstance(model, TwoTower)
    pairs_loss = in_batch_loss_of(
        model, pairs["users"], pairs["items"], params["batch_size"], params["temperature"]
    )
    return DistributedResult(len(reports), wall_seconds, reports[0].loss, pairs_loss, model_path, reports)


def training_pairs(data: InteractionData) -> tuple[np.ndarray, np.ndarray]:
    """The observed (user, item) index pairs, as ``TwoTower.fit`` trains on them."""
    pairs = data.matrix.tocoo()
    keep = pairs.data > 0
    return pairs.row[keep].astype(np.int32), pairs.col[keep].astype(np.int32)


def check_config(config: DistributedConfig, n_pairs: int) -> None:
    if config.workers < 1:
        raise ValueError(f"workers must be at least 1, got {config.workers}")
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    if n_pairs // config.workers < config.batch_size:
        raise ValueError(
            f"{n_pairs} pairs give each of {config.workers} workers less than one batch of {config.batch_size}"
        )


def shard_indices(n_pairs: int, workers: int, index: int) -> np.ndarray:
    """Pair indices of worker ``index``: every ``workers``-th pair, the same count on every worker (the last
    ``n_pairs % workers`` pairs are left out)."""
    return np.arange(index, (n_pairs // workers) * workers, workers)


def pairs_digest(users: np.ndarray, items: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(users, dtype=np.int32).tobytes())
    digest.update(np.ascontiguousarray(items, dtype=np.int32).tobytes())
    return digest.hexdigest()


def weights_digest(user_embeddings: np.ndarray, item_embeddings: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(user_embeddings, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(item_embeddings, dtype=np.float32).tobytes())
    return digest.hexdigest()


def in_batch_loss_of(
    model: TwoTower, users: np.ndarray, items: np.ndarray, batch_size: int, temperature: float, seed: int = 0
) -> float:
    """The training objective of a fitted TwoTower, in numpy: mean in-batch softmax loss (logQ-corrected,
    repeated items masked) over all pairs in fixed shuffled full batches. Comparable across fits with the
    same pairs, batch size and temperature, whoever trained them."""
    user_vectors, item_vectors = model.user_embeddings_, model.item_embeddings_
    if user_vectors is None or item_vectors is None:
        raise RuntimeError("in_batch_loss_of needs a fitted TwoTower")
    log_q = item_log_probs(items, len(item_vectors))
    order = np.random.default_rng(seed).permutation(len(users))
    losses = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start : start + batch_size]
        batch_users, batch_items = users[batch], items[batch]
        logits = user_vectors[batch_users] @ item_vectors[batch_items].T / temperature
        logits = logits.astype(np.float64) - log_q[batch_items][np.newaxis, :]
        repeated = (batch_items[:, None] == batch_items[None, :]) & ~np.eye(len(batch_items), dtype=bool)
        logits[repeated] = -np.inf
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        losses.append(np.mean(log_norm - np.diag(logits)))
    return float(np.mean(losses))


# --- the parent: start the cluster ----------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """Loopback ports the OS reports free (held open together so they differ, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    """The TF_CONFIG of worker ``index`` in a cluster of workers on these loopback ports."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def run_workers(work: Path, workers: int, timeout_seconds: float) -> None:
    """Start the workers and wait for all of them. When one fails its peers would block in the next
    all-reduce, so the rest are killed and the failed worker's log is raised; likewise on timeout."""
    ports = free_ports(workers)
    threads = max(1, (os.cpu_count() or 1) // workers)  # a share of the cores each, not all of them each
    processes = []
    for index in range(workers):
        env = os.environ | {
            "TF_CONFIG": tf_config(ports, index),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "FUSIONREC_WORKER_THREADS": str(threads),
        }
        with (work / f"worker-{index}.log").open("w") as log:
            command = [sys.executable, "-m", "pipelines.distributed", str(work)]
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [i for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                raise RuntimeError(
                    f"distributed training failed: worker {failed[0]} exited with {codes[failed[0]]}\n"
                    + _log_tail(work, failed[0])
                )
            if all(code == 0 for code in codes):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"distributed training timed out after {timeout_seconds:.0f}s")
            time.sleep(0.1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _log_tail(work: Path, index: int, lines: int = 40) -> str:
    path = work / f"worker-{index}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# --- a worker process -----------------------------------------------------------------------------------


def run_worker(work: Path) -> None:
    """Train this worker's replica (TF_CONFIG in the environment names the cluster and this task) and write
    ``worker-<index>.json``; worker 0, the chief, also saves the model."""
    started = time.perf_counter()
    job = json.loads((work / "job.json").read_text())
    params = job["params"]
    spec = json.loads(os.environ["TF_CONFIG"])
    workers, index = len(spec["cluster"]["worker"]), int(spec["task"]["index"])
    if workers != job["workers"]:
        raise ValueError(f"TF_CONFIG names {workers} workers, the job was written for {job['workers']}")
    pairs = np.load(work / "pairs.npz")
    features = {
        name: np.load(work / f"{name}_features.npy") if (work / f"{name}_features.npy").exists() else None
        for name in ("user", "item")
    }
    shard = shard_indices(len(pairs["users"]), workers, index)
    users, items = pairs["users"][shard], pairs["items"][shard]
    trained = train_replica(
        users,
        items,
        pairs["items"],
        job["n_users"],
        job["n_items"],
        features["user"],
        features["item"],
        threads=int(os.environ.get("FUSIONREC_WORKER_THREADS", "1")),
        **params,
    )
    if index == 0:
        model = TwoTower(**params)
        model.user_embeddings_, model.item_embeddings_ = trained.user_embeddings, trained.item_embeddings
        model.item_projection_ = trained.item_projection
        model.save(Path(job["model_path"]))
    report = WorkerReport(
        index=index,
        examples=len(shard),
        shard_sha256=pairs_digest(users, items),
        steps=trained.steps,
        loss=trained.loss,
        train_seconds=trained.seconds,
        seconds=time.perf_counter() - started,
        weights_sha256=weights_digest(trained.user_embeddings, trained.item_embeddings),
    )
    (work / f"worker-{index}.json").write_text(json.dumps(dataclasses.asdict(report)))


@dataclasses.dataclass
class TrainedReplica:
    user_embeddings: np.ndarray
    item_embeddings: np.ndarray
    item_projection: np.ndarray | None
    steps: int
    loss: float
    seconds: float


def train_replica(
    users: np.ndarray,
    items: np.ndarray,
    all_items: np.ndarray,
    n_users: int,
    n_items: int,
    user_features: np.ndarray | None,
    item_features: np.ndarray | None,
    *,
    threads: int,
    embedding_dim: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    seed: int,
) -> TrainedReplica:
    """This worker's part of synchronous training on its shard ``users``/``items``.

    The model is ``two_tower_keras.train_towers``'s (same layers, loss, seeds, and logQ from ``all_items``,
    the popularity over every shard) built inside the strategy's scope. The loop is written out rather than
    ``model.fit``: Keras 3.15's fit fails on MultiWorkerMirroredStrategy with tuple inputs (its symbolic
    build reduces the first distributed batch as one tensor)."""
    import keras
    import tensorflow as tf

    from models.two_tower_keras import InBatchSoftmax, Tower, in_batch_loss

    started = time.perf_counter()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    communication = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING  # gRPC, the CPU choice
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=communication)
    keras.utils.set_random_seed(seed)  # as train_towers: same initial weights as a single-process fit
    with strategy.scope():
        user_tower = Tower(n_users, embedding_dim, user_features, seed, name="user_tower")
        item_tower = Tower(n_items, embedding_dim, item_features, seed + 1, name="item_tower")
        model = InBatchSoftmax(user_tower, item_tower, item_log_probs(all_items, n_items), temperature)
        model((users[:1], items[:1]))  # creates the mirrored variables
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(model.trainable_variables)

    def shard_batches(context: tf.distribute.InputContext) -> tf.data.Dataset:
        options = tf.data.Options()  # the shard is this worker's already: no auto-sharding on top
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return (
            tf.data.Dataset.from_tensor_slices((users, items))
            .shuffle(len(users), seed=seed + context.input_pipeline_id, reshuffle_each_iteration=True)
            .batch(batch_size, drop_remainder=True)
            .with_options(options)
        )

    def replica_step(batch_users: tf.Tensor, batch_items: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model((batch_users, batch_items), training=True)
            # this replica's share of the global mean; the optimizer all-reduces (sums) the gradients
            loss = tf.nn.compute_average_loss(
                in_batch_loss(None, logits), global_batch_size=batch_size * strategy.num_replicas_in_sync
            )
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator: Any) -> tf.Tensor:
        per_replica = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    batches = strategy.distribute_datasets_from_function(shard_batches)
    steps_per_epoch = len(users) // batch_size
    losses: list[float] = []
    for _epoch in range(epochs):
        iterator = iter(batches)
        losses = [float(train_step(iterator)) for _ in range(steps_per_epoch)]
    return TrainedReplica(
        user_embeddings=user_tower(np.arange(n_users, dtype=np.int32)).numpy(),
        item_embeddings=item_tower(np.arange(n_items, dtype=np.int32)).numpy(),
        item_projection=item_tower.projection_kernel(),
        steps=epochs * steps_per_epoch,
        loss=float(np.mean(losses)),
        seconds=time.perf_counter() - started,
    )


if __name__ == "__main__":
    run_worker(Path(sys.argv[1]))
