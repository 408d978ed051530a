"""Turn calibration files into the built-in cost-model defaults of one device.

``gpuconv calibrate`` writes ``costmodel.json`` (the GPU check copies it to
``costmodel-cupy.json``).  This averages one or more such files' constants for a
device key and rewrites that key's entry of ``DEFAULTS`` in
``gpuconv/_costmodel.py`` (or prints it with ``--print``):

    python benchmarks/defaults_from_calibration.py numpy:cpu run1/costmodel.json run2/costmodel.json
    python benchmarks/defaults_from_calibration.py "cupy:NVIDIA H200" OUT/costmodel-cupy.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpuconv._costmodel import FEATURES  # noqa: E402

SOURCE = ROOT / "gpuconv" / "_costmodel.py"


def averaged(key: str, paths: list[str]) -> dict[str, dict[str, list[float]]]:
    models = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if key not in data.get("models", {}):
            raise SystemExit(f"{path} has no constants for {key!r}; it has "
                             f"{sorted(data.get('models', {}))}")
        models.append(data["models"][key])
    out: dict[str, dict[str, list[float]]] = {}
    for family, methods in FEATURES.items():
        out[family] = {}
        for method, names in methods.items():
            rows = [m[family][method] for m in models]
            if any(len(r) != len(names) for r in rows):
                raise SystemExit(f"{family}.{method}: expected {len(names)} constants")
            out[family][method] = [float(f"{sum(v) / len(v):.3g}") for v in zip(*rows)]
    return out


def entry(key: str, constants: dict[str, dict[str, list[float]]]) -> str:
    lines = [f"    {key!r}: {{".replace("'", '"')]
    for family, methods in FEATURES.items():
        lines.append(f'        "{family}": {{')
        for method in methods:
            values = ", ".join("0" if v == 0 else repr(v) for v in constants[family][method])
            lines.append(f'            "{method}": [{values}],')
        lines.append("        },")
    lines.append("    },")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("key", help='device key, e.g. "numpy:cpu" or "cupy:NVIDIA H200"')
    parser.add_argument("files", nargs="+", help="calibration JSON files to average")
    parser.add_argument("--print", action="store_true", help="print instead of rewriting")
    args = parser.parse_args(argv)
    text = entry(args.key, averaged(args.key, args.files))
    if args.print:
        print(text)
        return 0
    source = SOURCE.read_text()
    start = source.index("DEFAULTS: dict[")
    end = source.index("\n}\n", start)
    body = source[start:end]
    pattern = re.compile(r'\n    "' + re.escape(args.key) + r'": \{\n.*?\n    \},', re.S)
    if pattern.search(body):
        body = pattern.sub(lambda _: "\n" + text, body)
    else:
        body = body + "\n" + text
    SOURCE.write_text(source[:start] + body + source[end:])
    print(f"DEFAULTS[{args.key!r}] in {SOURCE.relative_to(ROOT)} now averages {len(args.files)} "
          "calibration(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
