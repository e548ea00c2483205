"""Reading a Prometheus scrape in tests: every scrape must parse with prometheus_client's own
parser, and a test looks samples up by name and labels."""
from typing import Dict, FrozenSet, Tuple

from prometheus_client.parser import text_string_to_metric_families

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Each sample of the text by (name, labels); a family named twice fails: a scrape has one
    HELP and TYPE per family."""
    samples: Samples = {}
    families = set()
    for family in text_string_to_metric_families(text):
        assert family.name not in families, "family {} appears twice".format(family.name)
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 for one not exposed yet (a counter that never counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)
