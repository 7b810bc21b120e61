"""docs/BENCHMARKS.md holds one section per benchmark script, between markers, so each script
rewrites only its own figures; and what every section says about the machine."""
import pathlib

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
HEAD = "# Benchmarks\n\nEach section is written by the script it names; rerun that script to refresh it.\n"


def write_section(name, text):
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = DOC.read_text() if DOC.exists() else HEAD
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc and end in doc:
        pre, rest = doc.split(begin, 1)
        _, post = rest.split(end, 1)
        doc = pre + block + post
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def cpu_name():
    """The CPU's model name, for the "Machine:" line."""
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"
