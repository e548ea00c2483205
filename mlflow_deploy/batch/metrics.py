"""A batch job's progress as Prometheus text: ``metrics.prom`` in the job's folder.

The textfile-collector way (a node exporter's, or any scraper that reads files): the job's own
process has no port to scrape, so it rewrites the file whole each time its counts change, into
a temporary file renamed into place (prometheus_client's ``write_to_textfile``): a reader never
sees half of it. ``job show`` gives its path; the counts themselves it takes from the job's
record, which they are written from.
"""
from pathlib import Path
from typing import Iterator, Mapping

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["FILE", "write"]

FILE = "metrics.prom"
# counters: (metric name without _total, help, the job's count it is)
_COUNTERS = (
    ("mlflow_deploy_job_rows", "Rows scored.", "rows"),
    ("mlflow_deploy_job_files_done", "Input files scored.", "files_done"),
    ("mlflow_deploy_job_files_failed", "Input files that failed after their retries.",
     "files_failed"),
    ("mlflow_deploy_job_retries", "Mini-batch tries after a first one failed or timed out.",
     "retries"),
)
_FILES = "mlflow_deploy_job_files"
_RATE = "mlflow_deploy_job_rows_per_second"


class _Progress:
    """The job's counts as metric families, for one write."""

    def __init__(self, job: str, counts: Mapping[str, int], rate: float):
        self.job, self.counts, self.rate = job, counts, rate

    def collect(self) -> Iterator[Metric]:
        for name, documentation, key in _COUNTERS:
            counter = CounterMetricFamily(name, documentation, labels=("job",))
            counter.add_metric((self.job,), self.counts.get(key, 0))
            yield counter
        files = GaugeMetricFamily(_FILES, "Input files of the job.", labels=("job",))
        files.add_metric((self.job,), self.counts.get("files", 0))
        yield files
        rate = GaugeMetricFamily(_RATE, "Rows scored per second since the job started.",
                                 labels=("job",))
        rate.add_metric((self.job,), self.rate)
        yield rate


def write(folder: Path, job: str, counts: Mapping[str, int], rate: float) -> None:
    """Replace the job's metrics file with these counts and rate (rows per second)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Progress(job, counts, rate))
    write_to_textfile(str(folder / FILE), registry)
