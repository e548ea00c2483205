"""`make bench-batch`: a batch job of ours beside what MLflow alone offers and a one-process floor,
on the same model and the same files, in one run.

    python bench/batch.py [--rows 10000000] [--files 100] [--predict-files 3] [--only a,b]
                          [--rounds N]

Data: --rows x 10 float columns (the example diabetes model's columns) in --files CSV files and
the same as Parquet, generated once under $BENCH_DATA (default ~/.cache/mlflow-deploy-bench).

Methods (each a whole command, timed from outside; rows/s counts every input row):
- mlflow-predict-file   `mlflow models predict --env-manager local` once per file, what MLflow
                        offers a user with a folder; run on --predict-files files and extrapolated
                        to all of them (each call pays MLflow's start-up, about 5 s here)
- mlflow-predict-concat the same on all files concatenated into one CSV
- floor                 one Python process: read each file with pyarrow (use_threads=False),
                        pyfunc predict, write the predictions, single-threaded
- ours-1, ours-2        our job, created through the CLI (batch-endpoint, batch-deployment,
                        invoke --wait), in the model's own env, local executor at 1 and 2 workers
- ours-dask-2           the same on a Dask LocalCluster of 2 workers
Everything runs single-threaded per worker (one BLAS/OpenMP thread) so that one worker is one
core: rows per CPU-second is then comparable across methods. Job start-up (endpoint and job
creation to the first finished mini-batch) is reported apart from the steady-state rate.
With --rounds N our jobs run N times, in turn and in the reverse order every other round (the
machine's speed drifts within minutes, and a steady window of 100 Parquet files is 1-3 s long),
and the ratios the targets name (2 workers / 1, local / Dask) are printed per round and as
medians.
CPU is the whole machine's busy time during the run (/proc/stat), so run it on a quiet machine.
Peak memory of one worker above its idle size (model loaded; the kernel's high-water mark, reset
first) is measured on the largest file with a worker started directly, beside that file's size as
a DataFrame: that is the target's figure. A second file's peak above what the first left resident
is printed too: it is small because the allocators keep the first file's memory for reuse, so it
says nothing about the working memory.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow_deploy import processes

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "ARROW_NUM_THREADS": "1"}
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

FLOOR = r"""
import glob, os, sys, time
import pyarrow as pa, pyarrow.csv as pacsv, pyarrow.parquet as pq
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
files = sorted(glob.glob(os.path.join(sys.argv[2], "*")))
start = time.perf_counter()
writer = None
for path in files:
    if path.endswith(".csv"):
        table = pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False))
    else:
        table = pq.read_table(path, use_threads=False)
    rows = pa.table({"file": [os.path.basename(path)] * table.num_rows,
                     "prediction": model.predict(table.to_pandas())})
    writer = writer or pacsv.CSVWriter(sys.argv[3], rows.schema)
    writer.write_table(rows)
writer.close()
print("STEADY %f" % (time.perf_counter() - start))
"""


def cpu_busy_s():
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def make_data(root: Path, rows: int, files: int) -> Path:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = root / f"{rows}x{files}"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "csv").mkdir(parents=True)
    (folder / "parquet").mkdir()
    rng = np.random.default_rng(1)
    per_file = rows // files
    for i in range(files):
        frame = pd.DataFrame(rng.normal(0.0, 0.05, size=(per_file, len(COLUMNS))), columns=COLUMNS)
        frame.to_csv(folder / "csv" / f"part-{i:04d}.csv", index=False, float_format="%.8f")
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                       folder / "parquet" / f"part-{i:04d}.parquet")
    with open(folder / "concat.csv", "wb") as out:
        for i in range(files):
            with open(folder / "csv" / f"part-{i:04d}.csv", "rb") as f:
                if i:
                    f.readline()
                shutil.copyfileobj(f, out)
    (folder / "done").touch()
    return folder


def timed(name, argv, rows, env=None, scale=1.0):
    busy, start = cpu_busy_s(), time.monotonic()
    proc = subprocess.run(argv, env={**os.environ, **SINGLE_THREAD, **(env or {})},
                          capture_output=True, text=True)
    wall, cpu = time.monotonic() - start, cpu_busy_s() - busy
    result = {"method": name, "rows": rows, "wall_s": round(wall * scale, 2),
              "rows_per_s": round(rows / (wall * scale)), "cpu_s": round(cpu * scale, 2),
              "rows_per_cpu_s": round(rows / max(cpu * scale, 1e-9)), "rc": proc.returncode}
    for line in proc.stdout.splitlines():
        if line.startswith("STEADY "):
            steady = float(line.split()[1])
            result["steady_rows_per_s"] = round(rows / steady)
            result["startup_s"] = round(wall - steady, 2)
    if proc.returncode:
        result["error"] = (proc.stderr or proc.stdout)[-800:]
    print(json.dumps(result), flush=True)
    return result


def peak_above_kb(pid, score) -> int:
    """The process's peak resident memory while ``score()`` runs, above its size before: exact,
    from the kernel's high-water mark (VmHWM), reset first (clear_refs 5), not sampled."""
    before = processes.status_field(pid, "VmRSS")
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    score()
    return processes.status_field(pid, "VmHWM") - before


def worker_memory(deployment: dict, largest: Path) -> dict:
    """Peak resident memory of one batch worker above its idle size (model loaded), scoring the
    largest input file, beside that file's in-memory size as a DataFrame; then a second file's
    peak above what the first left resident (memory the allocators kept for reuse)."""
    import pandas as pd

    from mlflow_deploy.batch.worker import BatchWorker, WorkerSpec

    worker = BatchWorker(WorkerSpec(python=deployment["environment"]["python"],
                                    model_dir=deployment["files"]["model_dir"],
                                    environment_variables=SINGLE_THREAD))
    try:
        worker.run([], timeout=600)  # starts it: the model is loaded
        idle = processes.status_field(worker.pid, "VmRSS")
        first = peak_above_kb(worker.pid, lambda: worker.run([str(largest)], 600))
        warm = peak_above_kb(worker.pid, lambda: worker.run([str(largest)], 600))
    finally:
        worker.close()
    reader = pd.read_parquet if largest.suffix == ".parquet" else pd.read_csv
    frame_mb = reader(largest).memory_usage(deep=True).sum() / 2 ** 20
    return {"worker_idle_mb": round(idle / 1024), "largest_file_in_memory_mb": round(frame_mb, 1),
            "peak_above_idle_mb": round(first / 1024, 1),
            "ratio": round(first / 1024 / frame_mb, 2),
            "second_file_above_retained_mb": round(warm / 1024, 1)}


def cli(*args, env):
    return subprocess.run([str(VENV_BIN / "mlflow-deploy"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def ours(name, folder: Path, model: str, rows: int, home: Path, executor: str, workers: int,
         overrides=(), memory=True):
    """A job as a user runs it: endpoint, deployment (YAML), invoke --wait; timed from invoke."""
    env = {**os.environ, "MLFLOW_DEPLOY_HOME": str(home)}
    endpoint = "bench-" + name.replace("_", "-")
    home.mkdir(parents=True, exist_ok=True)
    spec = home / f"{endpoint}.yml"
    spec.write_text(
        f"name: main\nendpoint_name: {endpoint}\nmodel: {model}\n"
        f"settings:\n  mini_batch_size: 1\n  max_concurrency_per_instance: 1\n"
        f"  retry_settings:\n    timeout: 600\n  environment_variables:\n" +
        "".join(f"    {k}: '{v}'\n" for k, v in SINGLE_THREAD.items()))
    cli("batch-endpoint", "create", "--name", endpoint, env=env)
    cli("batch-deployment", "create", "-f", str(spec), "--set-default", env=env)
    out = Path(tempfile.mkdtemp(prefix="bench-batch-out-"))
    invoked = time.time()
    try:
        result = timed(name, [str(VENV_BIN / "mlflow-deploy"), "batch-endpoint", "invoke",
                              "--name", endpoint, "--input", str(folder), "--output-path",
                              str(out), "--instance-count", str(workers), "--wait",
                              "--set", f"executor={executor}",
                              *(arg for item in overrides for arg in ("--set", item))],
                       rows, env={"MLFLOW_DEPLOY_HOME": str(home)})
        jobs = json.loads(cli("batch-endpoint", "list-jobs", "--name", endpoint, env=env))
        if jobs:
            job = jobs[-1]
            result["job"] = {k: job.get(k) for k in ("status", "counts", "duration_s")}
            # steady state from the done records' times: after each worker's first mini-batch
            # (model load and first read) until the last; the files are of equal size
            done = sorted(p.stat().st_mtime for p in
                          (Path(job["log_path"]).parent / "done").glob("*.json"))
            if len(done) > workers:
                steady = done[-1] - done[workers - 1]
                result["steady_rows_per_s"] = round(
                    rows * (len(done) - workers) / len(done) / steady)
                result["startup_s"] = round(done[workers - 1] - invoked, 2)
            print(json.dumps({"method": name, **result}), flush=True)
        if memory and workers == 1 and executor == "local":
            deployment = json.loads(cli("batch-deployment", "show", "--name", "main",
                                        "--endpoint-name", endpoint, env=env))
            largest = max(folder.iterdir(), key=lambda p: p.stat().st_size)
            result["memory"] = worker_memory(deployment, largest)
            print(json.dumps({"method": name, "memory": result["memory"]}), flush=True)
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)
        cli("batch-endpoint", "delete", "--name", endpoint, env=env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--predict-files", type=int, default=3)
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv")
    parser.add_argument("--model", default="models:/diabetes/1")
    parser.add_argument("--only", default="")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each of our jobs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a job setting for our jobs (invoke --set), e.g. output_format=csv")
    parser.add_argument("--data", default=os.environ.get("BENCH_DATA") or str(
        Path.home() / ".cache" / "mlflow-deploy-bench"))
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only  # noqa: E731
    folder = make_data(Path(args.data), args.rows, args.files)
    inputs = folder / args.format
    per_file = args.rows // args.files
    import mlflow.pyfunc
    local_model = mlflow.artifacts.download_artifacts(args.model) if ":" in args.model \
        else args.model
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        if want("mlflow-predict-file"):
            files = sorted(inputs.glob("*.csv"))[: args.predict_files]
            argv = ["bash", "-c", " && ".join(
                f"{VENV_BIN}/mlflow models predict -m {local_model} -i {f} -t csv "
                f"-o {work}/p{i}.json --env-manager local" for i, f in enumerate(files))]
            results.append(timed("mlflow-predict-file", argv, per_file * len(files)))
            results[-1]["note"] = f"measured on {len(files)} files"
        if want("mlflow-predict-concat") and args.format == "csv":
            results.append(timed("mlflow-predict-concat", [
                f"{VENV_BIN}/mlflow", "models", "predict", "-m", local_model, "-i",
                str(folder / "concat.csv"), "-t", "csv", "-o", str(work / "concat.json"),
                "--env-manager", "local"], args.rows))
        if want("floor"):
            results.append(timed("floor", [sys.executable, "-c", FLOOR, local_model, str(inputs),
                                           str(work / "floor.csv")], args.rows))
        home = work / "home"
        jobs = [job for job in (("ours-1", "local", 1), ("ours-2", "local", 2),
                                ("ours-dask-2", "dask", 2)) if want(job[0])]
        for round_ in range(args.rounds):
            for name, executor, workers in jobs if round_ % 2 == 0 else jobs[::-1]:
                results.append(ours(name, inputs, args.model, args.rows, home, executor, workers,
                                    args.set, memory=round_ == 0))
                results[-1]["round"] = round_ + 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rows:,} rows in {args.files} {args.format} files"
          f"{''.join(' --set ' + item for item in args.set)}\n")
    print("| method | rows/s | steady rows/s | start-up s | rows per CPU-s | wall s |")
    print("|---|---|---|---|---|---|")
    for r in results:
        name = r["method"] + (f" #{r['round']}" if args.rounds > 1 and "round" in r else "")
        print(f"| {name} | {r['rows_per_s']:,} | {r.get('steady_rows_per_s', '')} | "
              f"{r.get('startup_s', '')} | {r['rows_per_cpu_s']:,} | {r['wall_s']}"
              f"{' (rc ' + str(r['rc']) + ')' if r['rc'] else ''} |")
    for r in results:
        if "memory" in r:
            print(f"\n{r['method']} worker memory: {json.dumps(r['memory'])}")
    print_ratios(results, args.rounds)


def print_ratios(results, rounds):
    """The targets' ratios of steady rows/s, per round and their median."""
    steady = {(r["method"], r.get("round", 1)): r.get("steady_rows_per_s") for r in results}
    for label, top, bottom in (("2 workers / 1", "ours-2", "ours-1"),
                               ("local / Dask (2 workers)", "ours-2", "ours-dask-2")):
        ratios = [steady[(top, n)] / steady[(bottom, n)] for n in range(1, rounds + 1)
                  if steady.get((top, n)) and steady.get((bottom, n))]
        if ratios:
            print(f"\n{label}: " + ", ".join(f"{x:.2f}x" for x in ratios) +
                  f" (median {statistics.median(ratios):.2f}x)")


if __name__ == "__main__":
    main()
