"""JUnit XML for payload checks, so a CI job shows each payload file as a test case."""
import xml.etree.ElementTree as ET
from typing import Iterable, Optional


def write_junit(path: str, suite: str, cases: Iterable["CaseLike"]) -> None:
    """``cases`` have ``.name``, ``.ok``, ``.message`` (the server's answer) and ``.seconds``."""
    cases = list(cases)
    failures = sum(not c.ok for c in cases)
    root = ET.Element("testsuites")
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)),
                         failures=str(failures), errors="0", skipped="0",
                         time="{:.3f}".format(sum(c.seconds for c in cases)))
    for case in cases:
        item = ET.SubElement(node, "testcase", classname=suite, name=case.name,
                             time="{:.3f}".format(case.seconds))
        if case.ok:
            ET.SubElement(item, "system-out").text = case.message
        else:
            failure = ET.SubElement(item, "failure", message=case.message,
                                    type=case.kind or "rejected")
            failure.text = case.message
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


class CaseLike:  # pragma: no cover - documentation of the duck type
    name: str
    ok: bool
    message: str
    kind: Optional[str]
    seconds: float
