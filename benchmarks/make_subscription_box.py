"""Write the bundled simulated subscription-box charge log (clvbayes/datasets/files/).

    python benchmarks/make_subscription_box.py          # rewrites the bundled file
    python benchmarks/make_subscription_box.py --check  # exit 1 if it would change

The log is :func:`clvbayes.datasets.subscriptions.simulate_subscription_box` with its
defaults (seed 2024): a few thousand subscribers of three plans, 2023-01 .. 2024-12.  The
gzip header carries no time stamp or file name, so the same data give the same bytes.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clvbayes.datasets.subscriptions import _BOX_FILE, simulate_subscription_box  # noqa: E402

TARGET = ROOT / "clvbayes" / "datasets" / "files" / _BOX_FILE


def render() -> bytes:
    log = simulate_subscription_box()
    text = io.StringIO()
    log.to_csv(text, index=False, date_format="%Y-%m-%d", float_format="%.2f", lineterminator="\n")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", filename="", mtime=0, compresslevel=9) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the bundled file")
    args = parser.parse_args(argv)
    data = render()
    if args.check:
        same = TARGET.is_file() and TARGET.read_bytes() == data
        print(f"{TARGET}: {'up to date' if same else 'differs'}")
        return 0 if same else 1
    TARGET.write_bytes(data)
    print(f"wrote {TARGET} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
