"""The MONAI model zoo's premerge check of our bundle, on a fresh virtual environment: what a zoo reviewer's CI does.

Steps (each timed; the first failure stops the run with the step's name and the command's last lines):

1. ``export-bundle`` into WORK/zoo (the bundle carries its code: ``weakseg_monai/`` inside the folder) and the
   zoo-style unit test into WORK/zoo/ci/unit_tests/;
2. a fresh venv (no system site packages, no wheel of ours): ``pip install torch==2.13.0`` first (the README's
   rule), then exactly the ``name==version`` lines the zoo's ``ci/get_bundle_requirements.py`` builds from
   ``metadata.json``; ``import weakseg_monai`` must fail there outside the bundle folder;
3. the zoo's minimal ``verify_bundle`` checks (necessary and preferred files, version in the changelog, no file over
   25 MB, no ``large_files.yml`` entry without a reachable-looking URL) and ``verify_metadata`` against the shipped
   schema; MONAI's property checks of ``inference.json`` from inside the folder;
4. each pin (but torch, checked by ``pip index``) resolves for Python 3.10 too: ``pip download --only-binary=:all:
   --python-version 3.10 --no-deps`` (the zoo's runner used 3.10; no 3.10 interpreter is needed);
5. from inside the bundle folder, the model card's "Quick start" code blocks verbatim (install, inference, a short
   training that must update ``models/model.pt``, evaluation);
6. inference, a short training and evaluation from outside the folder with ``--bundle_root``;
7. the zoo-style unit test (train, evaluate, infer through ``ConfigWorkflow``) with the fresh interpreter.

Usage: ``python scripts/zoo_premerge.py [--work DIR] [--keep] [--skip-py310]``. Needs the package index (as the zoo's
CI does) and nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from weakseg_monai.utils.zoo import ZOO_MAX_FILE_BYTES, export_bundle, zoo_requirements  # noqa: E402

TORCH = "torch==2.13.0"
QUICK_START = "## Quick start"


class StepFailed(RuntimeError):
    pass


def sh(cmd: list[str] | str, cwd: Path, env: dict, timeout: int = 900) -> str:
    """Run a command (a list, or a shell line); return its output, raise ``StepFailed`` with its tail on failure."""
    shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
    result = subprocess.run(
        cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StepFailed(f"`{shown}` (in {cwd}) exited {result.returncode}:\n{tail}")
    return output


def fresh_env(venv_dir: Path) -> dict:
    """The environment of a shell in which only the fresh venv is active (no PYTHONPATH, no outer venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def card_blocks(card: Path) -> list[str]:
    """The shell lines of the ``bash`` code blocks in the card's "Quick start" section, in order (comments and
    blank lines dropped, backslash continuations joined)."""
    text = card.read_text()
    start = text.find(QUICK_START)
    if start < 0:
        raise StepFailed(f"{card}: no '{QUICK_START}' section")
    end = text.find("\n## ", start + len(QUICK_START))
    section = text[start : end if end > 0 else len(text)]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    if not lines:
        raise StepFailed(f"{card}: the '{QUICK_START}' section has no bash code block")
    return lines


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def step_export(work: Path) -> Path:
    bundle = export_bundle(work / "zoo")
    assert (work / "zoo" / "ci" / "unit_tests" / f"test_{bundle.name}.py").is_file()
    return bundle


def step_venv(work: Path, bundle: Path) -> tuple[Path, dict]:
    venv_dir = work / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False, clear=True).create(venv_dir)
    env = fresh_env(venv_dir)
    python = str(venv_dir / "bin" / "python")
    sh([python, "-m", "pip", "install", "-q", TORCH], work, env)
    requirements = work / f"requirements_{bundle.name}.txt"
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    requirements.write_text("\n".join(zoo_requirements(metadata)) + "\n")
    sh([python, "-m", "pip", "install", "-q", "-r", str(requirements)], work, env)
    probe = subprocess.run([python, "-c", "import weakseg_monai"], cwd=work, env=env, capture_output=True)
    if probe.returncode == 0:
        raise StepFailed("the fresh venv imports weakseg_monai outside the bundle folder: it is not fresh")
    sh([python, "-c", "import monai, torch, numpy"], work, env)
    return venv_dir, env


VERIFY = """
import json, os, sys
from monai.bundle import ConfigWorkflow
for f in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
    assert os.path.isfile(f), f"necessary or preferred file {f} is missing"
meta = json.load(open("configs/metadata.json"))
assert meta["version"] in meta["changelog"], "version missing from the changelog"
limit = int(sys.argv[1])
big = [os.path.join(r, f) for r, _, fs in os.walk(".") for f in fs if os.path.getsize(os.path.join(r, f)) > limit]
assert not big, f"files over the zoo's 25 MB limit: {big}"
for name in ("large_files.yml", "large_files.yaml", "large_files.json"):
    assert "placeholder" not in (open(name).read().lower() if os.path.exists(name) else ""), f"{name}: a placeholder"
flow = ConfigWorkflow(config_file="configs/inference.json", meta_file="configs/metadata.json",
                      logging_file="configs/logging.conf", workflow_type="inference")
flow.initialize()
missing = flow.check_properties()
assert not missing, f"inference.json misses bundle properties {missing}"
print("verify_bundle (min) and properties: ok")
"""


def step_verify(bundle: Path, env: dict) -> None:
    python = "python"
    sh([python, "-c", VERIFY, str(ZOO_MAX_FILE_BYTES)], bundle, env)
    sh(
        [python, "-m", "monai.bundle", "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath",
         "configs/metadata_schema.json"],
        bundle,
        env,
    )


def step_py310(work: Path, bundle: Path, env: dict) -> None:
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    wheels = work / "py310"
    failed = []
    for pin in zoo_requirements(metadata):
        name, version = pin.split("==")
        if name == "torch":
            listing = subprocess.run(
                ["python", "-m", "pip", "index", "versions", name, "--python-version", "3.10", "--only-binary=:all:"],
                cwd=work, env=env, capture_output=True, text=True,
            )
            if not re.search(rf"\b{re.escape(version)}\b", listing.stdout):
                failed.append(f"{pin}: not listed for Python 3.10")
            continue
        result = subprocess.run(
            ["python", "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.10",
             "--no-deps", "-d", str(wheels), pin],
            cwd=work, env=env, capture_output=True, text=True,
        )
        if result.returncode != 0:
            reason = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
            failed.append(f"{pin}: {reason[-1] if reason else 'pip download failed'}")
    if failed:
        raise StepFailed("pins that do not resolve for Python 3.10:\n  " + "\n  ".join(failed))


def step_card(bundle: Path, env: dict) -> None:
    model = bundle / "models" / "model.pt"
    shipped = md5(model)
    for line in card_blocks(bundle / "docs" / "README.md"):
        print(f"    $ {line}", flush=True)
        sh(line, bundle, env)
    for expected in ("runs/inference/sample_000_instances.nii.gz", "runs/evaluate/metrics.json"):
        if not (bundle / expected).is_file():
            raise StepFailed(f"the card's commands did not write {expected}")
    if md5(model) == shipped:
        raise StepFailed("the card's training did not update models/model.pt")


def step_outside(work: Path, bundle: Path, env: dict) -> None:
    """inference, a short training and evaluation run from outside the folder, the configs named in full."""
    out, configs = work / "outside", bundle / "configs"
    run = ["python", "-m", "monai.bundle", "run"]
    common = ["--bundle_root", str(bundle)]
    sh([*run, "inference", "--config_file", str(configs / "inference.json"), *common, "--output_dir", str(out)],
       work, env)
    if not (out / "sample_000_instances.nii.gz").is_file():
        raise StepFailed(f"inference from outside the folder wrote nothing to {out}")
    data = bundle / "data" / "demo"  # written by the card's Quick start
    models = ["--dataset_dir", str(data), "--ckpt_dir", str(out / "models")]
    sh([*run, "training", "--config_file", str(configs / "train.json"), *common, *models, "--output_dir",
        str(out / "train"), "--iterations", "2", "--val_interval", "2"], work, env)
    both = f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']"
    sh([*run, "evaluating", "--config_file", both, *common, *models, "--output_dir", str(out / "evaluate")], work, env)
    if not (out / "evaluate" / "metrics.json").is_file():
        raise StepFailed("evaluation from outside the folder wrote no metrics.json")


def step_unit_test(work: Path, bundle: Path, env: dict) -> None:
    sh(["python", str(work / "zoo" / "ci" / "unit_tests" / f"test_{bundle.name}.py")], work / "zoo", env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="", help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--skip-py310", action="store_true", help="skip the Python 3.10 resolution of the pins")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="zoo_premerge_"))
    if args.work and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.perf_counter()
    bundle = env = None
    steps = [
        ("export the bundle", lambda: step_export(work)),
        ("fresh venv: torch first, then metadata's requirements", lambda: step_venv(work, bundle)),
        ("zoo verify_bundle (min), verify_metadata, properties", lambda: step_verify(bundle, env)),
        ("pins resolve for Python 3.10", None if args.skip_py310 else lambda: step_py310(work, bundle, env)),
        ("the card's Quick start, verbatim, inside the folder", lambda: step_card(bundle, env)),
        ("inference, training, evaluation from outside with --bundle_root", lambda: step_outside(work, bundle, env)),
        ("the zoo-style unit test", lambda: step_unit_test(work, bundle, env)),
    ]
    try:
        for name, run in steps:
            if run is None:
                print(f"[skip] {name}", flush=True)
                continue
            t0 = time.perf_counter()
            print(f"[....] {name}", flush=True)
            value = run()
            if name.startswith("export"):
                bundle = value
            elif name.startswith("fresh venv"):
                _, env = value
            print(f"[ ok ] {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    except (StepFailed, AssertionError, subprocess.TimeoutExpired) as err:
        print(f"[FAIL] {name}: {err}", flush=True)
        print(f"zoo premerge FAILED after {time.perf_counter() - started:.0f} s (work folder kept: {work})")
        return 1
    print(f"zoo premerge passed in {time.perf_counter() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
