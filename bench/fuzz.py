"""`make bench-fuzz`: hostile and valid requests against a live scoring server of each example
model; the figure is 5xx answers, hangs and crashes, and the target is 0 of each.

    python bench/fuzz.py [--total 100000] [--parallel 2] [--concurrency 2] [--models a,b]
                         [--seed 0] [--workers 2] [--max-request-mb 0.1]

Each example model (example_models.build) gets a real gunicorn scoring server on 127.0.0.1, as
the suite starts them (tests/conftest.py's Server: the project's venv, --workers workers, a body
limit of --max-request-mb). hypothesis draws the requests (tests/scoring/fuzzing.py: the same
generators and rules as the suite's bounded run, tests/scoring/test_fuzz.py): --total in all,
shared equally by the models, --seed fixing what is drawn. --parallel models are fuzzed at once,
each in a process of its own (drawing is CPU-bound: one process draws about 150 requests/s),
which sends over raw sockets from --concurrency threads while it draws the next ones.

A hang is no whole answer within fuzzing.TIMEOUT_S; a crash is no answer at all (refused, closed
or reset before a status line) or a server that no longer answers GET / after its run. The other
rules (a 4xx carries a JSON message, a 200 from a scoring route is JSON, every answer carries the
request ids, a probe's own expectation) are counted too. Exits 1 if any request broke a rule.
"""
import argparse
import collections
import multiprocessing
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.scoring import fuzzing  # noqa: E402

MODELS = "diabetes,heart,iris-tensor,tokens-mask,mixed-params,no-signature"


class Tally:
    """One model's figures, filled by its sender threads; plain data, returned by its process."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.sent = 0
        self.seconds = 0.0
        self.statuses = collections.Counter()
        self.kinds = collections.Counter()
        self.problems = collections.Counter()
        self.examples = collections.defaultdict(list)

    def add(self, probe, answer, problems, tag, keep):
        with self.lock:
            self.sent += 1
            self.statuses[answer.status or answer.error] += 1
            self.kinds[probe.kind] += 1
            for problem in problems:
                name = fuzzing.category(problem)
                self.problems[name] += 1
                if len(self.examples[name]) < keep:
                    self.examples[name].append((tag, problem, probe.summary()))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "lock"}


def start_servers(names, args, work: Path):
    from example_models.build import save_all
    from tests.conftest import Server

    dirs = save_all(str(work / "models"))
    servers = {}
    for name in names:
        folder = work / ("server-" + name)
        folder.mkdir()
        servers[name] = Server(folder, dirs[name], deployment=name, workers=args.workers,
                               max_request_mb=args.max_request_mb)
    for server in servers.values():
        server.wait_ready()
    return dirs, servers


def fuzz_one(job):
    """In a process of its own: draw ``count`` probes for one model and send them."""
    name, port, model_dir, count, args = job
    from mlflow.models import Model

    tally = Tally(name)
    strategy = fuzzing.probes(Model.load(model_dir).signature,
                              int(args.max_request_mb * 1024 * 1024))
    address = ("127.0.0.1", port)
    todo = queue.Queue(maxsize=64)

    def send():
        while True:
            item = todo.get()
            if item is None:
                return
            n, probe = item
            tag = "fuzz-{}-{}".format(name, n)
            answer = fuzzing.exchange(address, probe.request(tag))
            tally.add(probe, answer, fuzzing.judge(probe, answer), tag, args.show)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(args.concurrency)]
    for thread in senders:
        thread.start()
    drawn = [0]

    @seed(args.seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(probe):
        drawn[0] += 1
        todo.put((drawn[0], probe))

    started = time.monotonic()
    stop = threading.Event()

    def progress():
        while not stop.wait(15):
            elapsed = time.monotonic() - started
            print("  {:<13} {:>6} sent in {:>4.0f} s, {:>4.0f}/s   5xx {}  hangs {}  crashes {}  "
                  "other {}".format(name, tally.sent, elapsed, tally.sent / elapsed,
                                    tally.problems["5xx"], tally.problems["hang"],
                                    tally.problems["crash"],
                                    sum(tally.problems[c] for c in fuzzing.VIOLATIONS)),
                  flush=True)

    threading.Thread(target=progress, daemon=True).start()
    draw()
    for _ in senders:
        todo.put(None)
    for thread in senders:
        thread.join()
    stop.set()
    tally.seconds = time.monotonic() - started
    if fuzzing.exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").status != 200:
        tally.problems["crash"] += 1
        tally.examples["crash"].append(("-", "crash: the server no longer answers GET /", ""))
    return tally


def log_of(log: str, tag: str, limit: int = 16):
    """The server log's lines about request ``tag``: its line and the traceback after it."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if tag in line:
            found = [line]
            for after in lines[i + 1:i + limit]:
                if after.startswith(("[", "request ")):
                    break
                found.append(after)
            return found
    return []


def report(tallies, seconds, servers) -> int:
    print("\n| model | sent | 5xx | hangs | crashes | other rules broken | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    total = collections.Counter()
    kinds = collections.Counter()
    for t in tallies:
        other = sum(t.problems[c] for c in fuzzing.VIOLATIONS)
        statuses = ", ".join("{}: {}".format(k, v) for k, v in sorted(
            t.statuses.items(), key=lambda kv: str(kv[0])))
        print("| {} | {} | {} | {} | {} | {} | {} |".format(
            t.name, t.sent, t.problems["5xx"], t.problems["hang"], t.problems["crash"], other,
            statuses))
        total["sent"] += t.sent
        total.update({c: t.problems[c] for c in fuzzing.FAILURES + fuzzing.VIOLATIONS})
        kinds.update(t.kinds)
    print("\nkinds: " + ", ".join("{} {}".format(k, v) for k, v in kinds.most_common()))
    print("\n{} requests in {:.0f} s: {:.0f} requests/s".format(total["sent"], seconds,
                                                                total["sent"] / seconds))
    print("5xx {}, hangs {}, crashes {}; {}".format(
        total["5xx"], total["hang"], total["crash"],
        ", ".join("{} {}".format(c, total[c]) for c in fuzzing.VIOLATIONS)))
    for t in tallies:
        for found in t.examples.values():
            for tag, problem, probe in found:
                print("\n{} {} {}\n  {}".format(t.name, tag, problem, probe))
                for line in log_of(servers[t.name].log(), tag):
                    print("  log: " + line[:300])
    return sum(total[c] for c in fuzzing.FAILURES + fuzzing.VIOLATIONS)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=100000)
    parser.add_argument("--parallel", type=int, default=2, help="models fuzzed at once")
    parser.add_argument("--concurrency", type=int, default=2, help="senders per model")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-request-mb", type=float, default=0.1)
    parser.add_argument("--show", type=int, default=3, help="examples shown per broken rule")
    args = parser.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    per_model = -(-args.total // len(names))  # at least --total in all
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as work:
        dirs, servers = start_servers(names, args, Path(work))
        try:
            print("{} UTC  {} requests per model, {} models ({} at once, {} senders each), "
                  "seed {}, body limit {:g} MB, {} workers per server, {} cores".format(
                      time.strftime("%Y-%m-%d %H:%M", time.gmtime()), per_model, len(names),
                      args.parallel, args.concurrency, args.seed, args.max_request_mb,
                      args.workers, os.cpu_count()), flush=True)
            jobs = [(name, servers[name].port, dirs[name], per_model, args) for name in names]
            started = time.monotonic()
            context = multiprocessing.get_context("fork")
            with context.Pool(args.parallel, maxtasksperchild=1) as pool:
                tallies = pool.map(fuzz_one, jobs, chunksize=1)
            broken = report(tallies, time.monotonic() - started, servers)
        finally:
            for server in servers.values():
                server.stop()
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
