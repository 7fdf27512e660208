"""Extraction benchmark on the shared corpus: accuracy, recall/precision, reconciliation, timing.

    python benchmarks/bench_extraction.py [--id-limit N] [--receipt-limit N] [--form-limit N]
                                          [--no-passporteye] [--id-variants] [--threads 2]

Prints one table row per category (ours and passporteye side by side on the same ID images),
then the misses. Timings are wall-clock seconds per image / per statement page with
onnxruntime limited to `--threads` cores.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--id-limit", type=int, default=0)
    parser.add_argument("--receipt-limit", type=int, default=0)
    parser.add_argument("--form-limit", type=int, default=0)
    parser.add_argument("--no-passporteye", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--id-variants", action="store_true", help="also run IDs with preprocessing and with tesseract")
    parser.add_argument("--misses", type=int, default=15, help="misses to print per category")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import docteller  # noqa: F401  (offline environment)
    from ingest.extract.evaluate import render, run_all

    reports = run_all(
        args.corpus,
        id_limit=args.id_limit or None,
        receipt_limit=args.receipt_limit or None,
        form_limit=args.form_limit or None,
        passporteye=not args.no_passporteye,
        id_variants=args.id_variants,
    )
    print(render(reports))
    for r in reports:
        if r.notes:
            print(f"\n{r.name} misses ({len(r.notes)}):")
            for note in r.notes[: args.misses]:
                print("  -", note)


if __name__ == "__main__":
    main()
