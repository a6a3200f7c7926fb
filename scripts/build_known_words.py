"""Build mappings/known_words.json: the medical words the note reader must never "correct".

The note reader reads a misspelled word as the lexicon word one edit away ("stiffnes" is
"stiffness"), but only when the word is no word itself.  The English dictionary it uses
(pyspellchecker's) lacks much of medicine: "peroneal" is not in it, and is one letter from
"perineal" (saddle anaesthesia).  So every word of five letters or more in the ICD-10-CM
tabular list (titles, inclusion terms and notes; a US government work in the public domain),
as packaged by ``simple-icd-10-cm`` (a test dependency), is listed as known.

    python scripts/build_known_words.py           # write the file
    python scripts/build_known_words.py --check   # exit 1 if the file differs
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import resources
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "mappings" / "known_words.json"
TABULAR = re.compile(r"icd10c?m?-tabular.*\.xml$", re.IGNORECASE)
MIN_LENGTH = 5


def build() -> dict:
    data = resources.files("simple_icd_10_cm") / "data"
    tabular = next((entry for entry in data.iterdir() if TABULAR.search(entry.name)), None)
    if tabular is None:
        sys.exit(f"no ICD-10-CM tabular XML in {data}; reinstall the test extras: pip install -e '.[test]'")
    text = re.sub(r"<[^>]+>", " ", tabular.read_text(encoding="utf-8")).lower()
    words = sorted(set(re.findall(rf"[a-z]{{{MIN_LENGTH},}}", text)))
    return {
        "about": "Words the note reader must never correct as misspellings (cds_service/engine/narrative/spelling.py): "
                 f"every word of {MIN_LENGTH} letters or more in the ICD-10-CM tabular list. Built by "
                 "scripts/build_known_words.py; do not edit by hand.",
        "source": f"{tabular.name} from simple-icd-10-cm {version('simple-icd-10-cm')} (ICD-10-CM: CDC/NCHS, public domain)",
        "words": words,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if mappings/known_words.json is not what the build gives")
    args = parser.parse_args(argv)
    built = json.dumps(build(), indent=0) + "\n"
    if args.check:
        same = TARGET.exists() and TARGET.read_text(encoding="utf-8") == built
        print("known_words.json is up to date" if same else "known_words.json differs: run scripts/build_known_words.py")
        return 0 if same else 1
    TARGET.write_text(built, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}: {len(json.loads(built)['words'])} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
